//! Idempotency keys (CONTRACT §3): the first response to a POST, kept per caller
//! and key so a retry gets the same answer instead of a second effect.
//!
//! The row is claimed *before* the request runs (`in_flight`, with a lock that
//! expires if the process dies) and completed with the response afterwards. The
//! database holds the keys, so any number of API processes share them.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use releasedesk_domain::time::now;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, OnConflict},
};

use crate::{Store, StoreError, entity::idempotency_key};

const IN_FLIGHT: &str = "in_flight";
const DONE: &str = "done";

/// Whose key it is; keys of different callers never meet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope(String);

impl KeyScope {
    pub fn account(id: uuid::Uuid) -> Self {
        Self(format!("account:{id}"))
    }

    pub fn staff(id: uuid::Uuid) -> Self {
        Self(format!("staff:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How long keys live and how long a claim holds before it counts as abandoned.
#[derive(Debug, Clone, Copy)]
pub struct KeyTimes {
    /// Replays are served this long after the first request (24 h).
    pub retention: Duration,
    /// An `in_flight` claim older than this belongs to a process that died; a
    /// retry with the same request may take it over. Longer than any request.
    pub lock: Duration,
}

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    pub body: String,
}

/// What the caller may do with its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyClaim {
    /// The key is ours: run the request, then complete or release the key.
    Proceed,
    /// The same request already ran: answer with its response.
    Replay(StoredResponse),
    /// The key was used for a different request.
    Reused,
    /// The same request is running right now elsewhere.
    InFlight,
}

fn after(at: DateTime<Utc>, span: Duration) -> DateTime<Utc> {
    at + TimeDelta::from_std(span).unwrap_or(TimeDelta::MAX)
}

impl Store {
    /// Claims `key` for a request hashing to `request_hash`, or says why not.
    pub async fn claim_idempotency_key(
        &self,
        scope: &KeyScope,
        key: &str,
        request_hash: &str,
        times: KeyTimes,
    ) -> Result<KeyClaim, StoreError> {
        // A row can vanish between our insert and our read (released after a
        // failure, or purged); a couple of rounds settle it.
        for _ in 0..3 {
            let at = now();
            let claim = idempotency_key::ActiveModel {
                scope: Set(scope.as_str().to_owned()),
                key: Set(key.to_owned()),
                request_hash: Set(request_hash.to_owned()),
                state: Set(IN_FLIGHT.to_owned()),
                response_status: Set(None),
                response_body: Set(None),
                locked_until: Set(after(at, times.lock)),
                created_at: Set(at),
                expires_at: Set(after(at, times.retention)),
            };
            let turn = self.shared.write_gate.turn().await;
            let inserted = idempotency_key::Entity::insert(claim)
                .on_conflict(
                    OnConflict::columns([
                        idempotency_key::Column::Scope,
                        idempotency_key::Column::Key,
                    ])
                    .do_nothing()
                    .to_owned(),
                )
                .exec_without_returning(turn.db())
                .await?;
            drop(turn);
            if inserted == 1 {
                return Ok(KeyClaim::Proceed);
            }

            // Take over an expired key, or an abandoned claim of this same request.
            let turn = self.shared.write_gate.turn().await;
            let taken = idempotency_key::Entity::update_many()
                .col_expr(
                    idempotency_key::Column::RequestHash,
                    Expr::value(request_hash),
                )
                .col_expr(idempotency_key::Column::State, Expr::value(IN_FLIGHT))
                .col_expr(
                    idempotency_key::Column::ResponseStatus,
                    Expr::value(Option::<i32>::None),
                )
                .col_expr(
                    idempotency_key::Column::ResponseBody,
                    Expr::value(Option::<String>::None),
                )
                .col_expr(
                    idempotency_key::Column::LockedUntil,
                    Expr::value(after(at, times.lock)),
                )
                .col_expr(idempotency_key::Column::CreatedAt, Expr::value(at))
                .col_expr(
                    idempotency_key::Column::ExpiresAt,
                    Expr::value(after(at, times.retention)),
                )
                .filter(idempotency_key::Column::Scope.eq(scope.as_str()))
                .filter(idempotency_key::Column::Key.eq(key))
                .filter(
                    Condition::any()
                        .add(idempotency_key::Column::ExpiresAt.lte(at))
                        .add(
                            Condition::all()
                                .add(idempotency_key::Column::State.eq(IN_FLIGHT))
                                .add(idempotency_key::Column::LockedUntil.lte(at))
                                .add(idempotency_key::Column::RequestHash.eq(request_hash)),
                        ),
                )
                .exec(turn.db())
                .await?;
            drop(turn);
            if taken.rows_affected == 1 {
                return Ok(KeyClaim::Proceed);
            }

            let existing: Option<(String, String, Option<i32>, Option<String>)> =
                idempotency_key::Entity::find_by_id((scope.as_str().to_owned(), key.to_owned()))
                    .select_only()
                    .column(idempotency_key::Column::RequestHash)
                    .column(idempotency_key::Column::State)
                    .column(idempotency_key::Column::ResponseStatus)
                    .column(idempotency_key::Column::ResponseBody)
                    .into_tuple()
                    .one(&self.shared.db)
                    .await?;
            let Some((hash, state, status, body)) = existing else {
                continue;
            };
            if hash != request_hash {
                return Ok(KeyClaim::Reused);
            }
            return Ok(match (state.as_str(), status, body) {
                (DONE, Some(status), Some(body)) => KeyClaim::Replay(StoredResponse {
                    status: u16::try_from(status)
                        .map_err(|_| StoreError::Corrupt(format!("response status {status}")))?,
                    body,
                }),
                _ => KeyClaim::InFlight,
            });
        }
        // Three rounds of the row vanishing under us: someone else is busy with it.
        Ok(KeyClaim::InFlight)
    }

    /// Records the response to a claimed key for replay.
    pub async fn complete_idempotency_key(
        &self,
        scope: &KeyScope,
        key: &str,
        response: &StoredResponse,
    ) -> Result<(), StoreError> {
        let turn = self.shared.write_gate.turn().await;
        idempotency_key::Entity::update_many()
            .col_expr(idempotency_key::Column::State, Expr::value(DONE))
            .col_expr(
                idempotency_key::Column::ResponseStatus,
                Expr::value(i32::from(response.status)),
            )
            .col_expr(
                idempotency_key::Column::ResponseBody,
                Expr::value(response.body.as_str()),
            )
            .filter(idempotency_key::Column::Scope.eq(scope.as_str()))
            .filter(idempotency_key::Column::Key.eq(key))
            .filter(idempotency_key::Column::State.eq(IN_FLIGHT))
            .exec(turn.db())
            .await?;
        Ok(())
    }

    /// Gives a claimed key back without a response (the request failed in a way
    /// worth retrying: the database was down, the caller was rate limited).
    pub async fn release_idempotency_key(
        &self,
        scope: &KeyScope,
        key: &str,
    ) -> Result<(), StoreError> {
        let turn = self.shared.write_gate.turn().await;
        idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::Scope.eq(scope.as_str()))
            .filter(idempotency_key::Column::Key.eq(key))
            .filter(idempotency_key::Column::State.eq(IN_FLIGHT))
            .exec(turn.db())
            .await?;
        Ok(())
    }

    /// Deletes keys whose retention has passed; returns how many went.
    pub async fn purge_expired_idempotency_keys(&self) -> Result<u64, StoreError> {
        let turn = self.shared.write_gate.turn().await;
        let result = idempotency_key::Entity::delete_many()
            .filter(idempotency_key::Column::ExpiresAt.lte(now()))
            .exec(turn.db())
            .await?;
        Ok(result.rows_affected)
    }
}

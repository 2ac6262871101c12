//! Carrying out approved releases, exactly once (DESIGN invariant 4).
//!
//! A worker takes a lease on the request (`approved -> releasing`, or an expired
//! lease on `releasing`) in one guarded UPDATE: of any number of workers, one wins.
//! It then tells the carrier (idempotent by request id) and records the carrier's
//! confirmation in its own commit, so a re-run after a crash skips the carrier and
//! only finishes the bookkeeping. The final transaction moves the number out of the
//! account, wipes its history and configuration, and queues the email.

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, TimeDelta, Utc};
use releasedesk_domain::{DomainError, NumberStatus, RequestStatus, time::now};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, UpdateMany,
    sea_query::{CaseStatement, Expr, ExprTrait},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    Actor, NumberView, Store, StoreError,
    db::{begin_write, unindexed},
    entity::{account, agent_number, phone_number, release_event, release_request, sms_message},
    events,
    group::Group,
    outbox::{self, Email, OutboxItem},
    requests::parse_request_status,
};

/// What a worker needs to carry out one release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseWork {
    pub request_id: Uuid,
    pub phone_number_id: Uuid,
    pub phone_number: String,
    pub account_id: Uuid,
    /// The carrier already confirmed this release: do not call it again.
    pub carrier_done: bool,
    pub attempt: i32,
}

/// The answer to "may I carry out this request now?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// You hold the lease until it expires; carry it out.
    Execute(ReleaseWork),
    /// Another worker holds a live lease.
    Busy,
    /// Released, failed or cancelled: nothing to do.
    Finished,
}

fn lease_delta(lease: Duration) -> TimeDelta {
    TimeDelta::from_std(lease).unwrap_or(TimeDelta::MAX)
}

async fn request(
    db: &impl ConnectionTrait,
    request_id: Uuid,
) -> Result<release_request::Model, StoreError> {
    release_request::Entity::find_by_id(request_id)
        .one(db)
        .await?
        .ok_or(DomainError::NotFound.into())
}

impl Store {
    /// Takes the execution lease on an approved request (or on one whose previous
    /// worker's lease ran out).
    pub async fn begin_release(
        &self,
        request_id: Uuid,
        lease: Duration,
    ) -> Result<Begin, StoreError> {
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let begin = take_lease(&txn, request_id, lease, now()).await?;
        txn.commit().await?;
        Ok(begin)
    }

    /// Carries out a release whose carrier has no one upstream to tell (the
    /// `local` carrier) in one transaction: `approved` (or `releasing` with a
    /// lapsed lease) straight to `released`, with the carrier's confirmation, in
    /// one guarded UPDATE, so there is no moment in between to recover from. The
    /// timeline still shows the attempt. A request someone else is releasing or
    /// has finished is left alone, as [`Store::begin_release`] would.
    ///
    /// It commits together with the other releases waiting at that moment (a
    /// worker runs a whole fetched batch of jobs at once; see `group`).
    pub async fn release_at_once(&self, request_id: Uuid) -> Result<Begin, StoreError> {
        self.shared
            .groups
            .releases
            .submit(request_id, || Releases(self.detached()))
            .await
    }

    /// Releases `request_ids` in one transaction: one guarded UPDATE for the
    /// requests, then [`wrap_up`] for all that it took. Each id's answer is the
    /// one it would have had alone, in order (an id given twice is released
    /// once, then `Finished`).
    async fn release_together(
        &self,
        request_ids: &[Uuid],
    ) -> Result<Vec<Result<Begin, StoreError>>, StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let mut released: HashMap<Uuid, release_request::Model> =
            released_together(request_ids, at)
                .exec_with_returning(&txn)
                .await?
                .into_iter()
                .map(|row| (row.id, row))
                .collect();
        let untaken: HashMap<Uuid, release_request::Model> = if released.len() < request_ids.len() {
            release_request::Entity::find()
                .filter(
                    Column::Id.is_in(
                        request_ids
                            .iter()
                            .filter(|id| !released.contains_key(id))
                            .copied(),
                    ),
                )
                .all(&txn)
                .await?
                .into_iter()
                .map(|row| (row.id, row))
                .collect()
        } else {
            HashMap::new()
        };

        // In the callers' order, so the timeline and the answers follow it.
        let mut outcomes = Vec::with_capacity(request_ids.len());
        let mut timeline = Vec::with_capacity(2 * released.len());
        let mut works = Vec::with_capacity(released.len());
        for id in request_ids {
            let outcome = match (released.remove(id), untaken.get(id)) {
                (Some(row), _) => {
                    let work = ReleaseWork::from(&row);
                    let note = format!("attempt {}", row.execution_attempts);
                    let released_event = releasedesk_domain::new_id();
                    timeline.push(events::row(
                        releasedesk_domain::new_id(),
                        row.id,
                        "execution_started",
                        Actor::System,
                        Some(&note),
                        at,
                    ));
                    timeline.push(events::row(
                        released_event,
                        row.id,
                        "released",
                        Actor::System,
                        None,
                        at,
                    ));
                    works.push((work.clone(), released_event));
                    Ok(Begin::Execute(work))
                }
                (None, Some(row)) => not_taken(row),
                // Released a moment ago, by an earlier mention in this group.
                (None, None) if works.iter().any(|(work, _)| work.request_id == *id) => {
                    Ok(Begin::Finished)
                }
                (None, None) => Err(DomainError::NotFound.into()),
            };
            outcomes.push(outcome);
        }
        let mut claimed = Vec::new();
        if !works.is_empty() {
            release_event::Entity::insert_many(timeline)
                .exec_without_returning(&txn)
                .await?;
            claimed = wrap_up(self, &txn, &works, at).await?;
        }
        txn.commit().await?;
        if !works.is_empty() {
            self.emails_committed(claimed);
        }
        Ok(outcomes)
    }
}

/// The metric with the number of releases per write transaction.
pub const RELEASE_BATCH_METRIC: &str = "releasedesk_release_batch_size";

/// This process's writer of releases carried out at once.
pub(crate) struct Releases(pub(crate) Store);

impl Group for Releases {
    type Request = Uuid;
    type Answer = Begin;
    const NAME: &'static str = "release";
    /// A worker's default fetch (100 jobs) in one transaction.
    const MAX: usize = 128;
    const METRIC: &'static str = RELEASE_BATCH_METRIC;

    async fn perform(
        &self,
        request_ids: &[Uuid],
    ) -> Result<Vec<Result<Begin, StoreError>>, StoreError> {
        self.0.release_together(request_ids).await
    }
}

impl From<&release_request::Model> for ReleaseWork {
    fn from(row: &release_request::Model) -> Self {
        ReleaseWork {
            request_id: row.id,
            phone_number_id: row.phone_number_id,
            phone_number: row.phone_number.clone(),
            account_id: row.account_id,
            carrier_done: row.carrier_released_at.is_some(),
            attempt: row.execution_attempts,
        }
    }
}

/// Requests a worker may take: `approved`, or `releasing` whose lease lapsed
/// (its worker died).
/// The guarded UPDATE that takes `request_ids` for release at once; the guard
/// is [`unindexed`], so the ids are looked up, never every approved request.
pub(crate) fn released_together(
    request_ids: &[Uuid],
    at: DateTime<Utc>,
) -> UpdateMany<release_request::Entity> {
    use release_request::Column;
    release_request::Entity::update_many()
        .col_expr(
            Column::Status,
            Expr::value(RequestStatus::Released.as_str()),
        )
        .col_expr(Column::ReleasedAt, Expr::value(at))
        .col_expr(Column::CarrierReleasedAt, Expr::value(at))
        .col_expr(
            Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(
            Column::ExecutionAttempts,
            Expr::col(Column::ExecutionAttempts).add(1),
        )
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .filter(Column::Id.is_in(request_ids.iter().copied()))
        .filter(unindexed(claimable(at)))
}

fn claimable(at: DateTime<Utc>) -> Condition {
    use release_request::Column;
    Condition::any()
        .add(Column::Status.eq(RequestStatus::Approved.as_str()))
        .add(
            Condition::all()
                .add(Column::Status.eq(RequestStatus::Releasing.as_str()))
                .add(
                    Condition::any()
                        .add(Column::LeaseUntil.is_null())
                        .add(Column::LeaseUntil.lt(at)),
                ),
        )
}

/// Why a request could not be taken: someone holds it, or it is over.
fn not_taken(row: &release_request::Model) -> Result<Begin, StoreError> {
    Ok(match parse_request_status(&row.status)? {
        RequestStatus::Releasing => Begin::Busy,
        RequestStatus::Released | RequestStatus::Failed | RequestStatus::Cancelled => {
            Begin::Finished
        }
        RequestStatus::Pending | RequestStatus::Approved => {
            return Err(StoreError::Corrupt(format!(
                "request {} is not approved",
                row.id
            )));
        }
    })
}

/// `approved` (or `releasing` with a lapsed lease) -> `releasing`, leased to the
/// caller until `at + lease`; one of any number of concurrent callers wins.
async fn take_lease(
    txn: &DatabaseTransaction,
    request_id: Uuid,
    lease: Duration,
    at: DateTime<Utc>,
) -> Result<Begin, StoreError> {
    use release_request::Column;
    let leased = release_request::Entity::update_many()
        .col_expr(
            Column::Status,
            Expr::value(RequestStatus::Releasing.as_str()),
        )
        .col_expr(Column::LeaseUntil, Expr::value(at + lease_delta(lease)))
        .col_expr(
            Column::ExecutionAttempts,
            Expr::col(Column::ExecutionAttempts).add(1),
        )
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .filter(Column::Id.eq(request_id))
        .filter(claimable(at))
        .exec_with_returning(txn)
        .await?;
    let Some(row) = leased.into_iter().next() else {
        return not_taken(&request(txn, request_id).await?);
    };
    let note = format!("attempt {}", row.execution_attempts);
    events::record(
        txn,
        request_id,
        "execution_started",
        Actor::System,
        Some(&note),
        at,
    )
    .await?;
    Ok(Begin::Execute(ReleaseWork::from(&row)))
}

/// `releasing` -> `released`, then [`wrap_up`] (its emails written claimed are
/// returned). Returns `None` (and does nothing) when the request is no longer
/// `releasing`.
async fn finish(
    store: &Store,
    txn: &DatabaseTransaction,
    request_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<Vec<OutboxItem>>, StoreError> {
    use release_request::Column;
    let released = release_request::Entity::update_many()
        .col_expr(
            Column::Status,
            Expr::value(RequestStatus::Released.as_str()),
        )
        .col_expr(Column::ReleasedAt, Expr::value(at))
        .col_expr(
            Column::LeaseUntil,
            Expr::value(Option::<DateTime<Utc>>::None),
        )
        .col_expr(Column::UpdatedAt, Expr::value(at))
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .filter(Column::Id.eq(request_id))
        .filter(Column::Status.eq(RequestStatus::Releasing.as_str()))
        .exec_with_returning(txn)
        .await?;
    let Some(row) = released.into_iter().next() else {
        return Ok(None);
    };
    let event = events::record(txn, request_id, "released", Actor::System, None, at).await?;
    let claimed = wrap_up(store, txn, &[(ReleaseWork::from(&row), event)], at).await?;
    Ok(Some(claimed))
}

/// What follows releases in their transaction, whatever their number, in a
/// fixed number of statements: the numbers leave their accounts with their
/// history and configuration, and each customer's email is queued (caused by
/// the release's `released` event, paired with its work). Returns the emails
/// written claimed for this process's dispatcher.
async fn wrap_up(
    store: &Store,
    txn: &DatabaseTransaction,
    released: &[(ReleaseWork, Uuid)],
    at: DateTime<Utc>,
) -> Result<Vec<OutboxItem>, StoreError> {
    if released.is_empty() {
        return Ok(Vec::new());
    }
    let windows = store.policy().windows(at);
    let number_ids = || released.iter().map(|(work, _)| work.phone_number_id);
    // Each number remembers the account of its own request.
    let from_account = released
        .iter()
        .fold(CaseStatement::new(), |case, (work, _)| {
            case.case(
                phone_number::Column::Id.eq(work.phone_number_id),
                Expr::value(work.account_id),
            )
        })
        .finally(Expr::value(Option::<Uuid>::None));
    phone_number::Entity::update_many()
        .col_expr(
            phone_number::Column::Status,
            Expr::value(NumberStatus::Released.as_str()),
        )
        .col_expr(
            phone_number::Column::AccountId,
            Expr::value(Option::<Uuid>::None),
        )
        .col_expr(
            phone_number::Column::ReleasedFromAccount,
            from_account.into(),
        )
        .col_expr(
            phone_number::Column::FriendlyName,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            phone_number::Column::EmailToSms,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            phone_number::Column::SmsWebhookUrl,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            phone_number::Column::VoiceWebhookUrl,
            Expr::value(Option::<String>::None),
        )
        .col_expr(
            phone_number::Column::ReleasedAt,
            Expr::value(windows.released_at),
        )
        .col_expr(
            phone_number::Column::ReclaimableUntil,
            Expr::value(windows.reclaimable_until),
        )
        .col_expr(
            phone_number::Column::AvailableAfter,
            Expr::value(windows.available_after),
        )
        .col_expr(phone_number::Column::UpdatedAt, Expr::value(at))
        .filter(phone_number::Column::Id.is_in(number_ids()))
        .exec(txn)
        .await?;
    agent_number::Entity::delete_many()
        .filter(agent_number::Column::PhoneNumberId.is_in(number_ids()))
        .exec(txn)
        .await?;
    sms_message::Entity::delete_many()
        .filter(sms_message::Column::PhoneNumberId.is_in(number_ids()))
        .exec(txn)
        .await?;
    let accounts =
        crate::accounts::referenced_accounts(txn, released.iter().map(|(work, _)| work.account_id))
            .await?;
    let mut emails = Vec::with_capacity(released.len());
    for (work, event_id) in released {
        let account = accounts.get(&work.account_id).ok_or_else(|| {
            StoreError::Corrupt(format!("account {} is missing", work.account_id))
        })?;
        let payload = json!({
            "request_id": work.request_id,
            "phone_number": work.phone_number,
            "phone_number_id": work.phone_number_id,
            "account_name": account.name,
            "released_at": windows.released_at,
            "reclaimable_until": windows.reclaimable_until,
            "available_after": windows.available_after,
        });
        emails.push(Email {
            template: "request_released",
            to: &account.email,
            event_id: *event_id,
            payload,
        });
    }
    outbox::queue_emails(txn, emails, at, store.email_claim()).await
}

impl Store {
    /// Records that the carrier confirmed the release (its own commit, before the
    /// bookkeeping, so a re-run never calls the carrier twice).
    pub async fn record_carrier_release(&self, request_id: Uuid) -> Result<(), StoreError> {
        use release_request::Column;
        let turn = self.shared.write_gate.turn().await;
        release_request::Entity::update_many()
            .col_expr(Column::CarrierReleasedAt, Expr::value(now()))
            .filter(Column::Id.eq(request_id))
            .filter(Column::CarrierReleasedAt.is_null())
            .exec(turn.db())
            .await?;
        Ok(())
    }

    /// Finishes a release in one transaction. Safe to run twice: a request that is
    /// no longer `releasing` is left alone.
    pub async fn finish_release(&self, request_id: Uuid) -> Result<(), StoreError> {
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let finished = finish(self, &txn, request_id, now()).await?;
        txn.commit().await?;
        if let Some(claimed) = finished {
            self.emails_committed(claimed);
        }
        Ok(())
    }

    /// The carrier refused for good: the request `failed`, the number back to
    /// `active` in its account (nothing was released), staff emailed.
    pub async fn fail_release(&self, request_id: Uuid, reason: &str) -> Result<(), StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let updated = release_request::Entity::update_many()
            .col_expr(Column::Status, Expr::value(RequestStatus::Failed.as_str()))
            .col_expr(Column::FailureReason, Expr::value(reason))
            .col_expr(
                Column::LeaseUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(request_id))
            .filter(Column::Status.is_in([
                RequestStatus::Approved.as_str(),
                RequestStatus::Releasing.as_str(),
            ]))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Ok(());
        }
        let row = request(&txn, request_id).await?;
        phone_number::Entity::update_many()
            .col_expr(
                phone_number::Column::Status,
                Expr::value(NumberStatus::Active.as_str()),
            )
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(at))
            .filter(phone_number::Column::Id.eq(row.phone_number_id))
            .filter(phone_number::Column::Status.eq(NumberStatus::Releasing.as_str()))
            .exec(&txn)
            .await?;
        let event_id =
            events::record(&txn, request_id, "failed", Actor::System, Some(reason), at).await?;
        let account_name: Option<String> = account::Entity::find_by_id(row.account_id)
            .select_only()
            .column(account::Column::Name)
            .into_tuple()
            .one(&txn)
            .await?;
        let payload = json!({
            "request_id": row.id,
            "phone_number": row.phone_number,
            "account_name": account_name.unwrap_or_default(),
            "failure_reason": reason,
        });
        let to = self.shared.settings.staff_email.clone();
        let email = Email {
            template: "staff_release_failed",
            to: &to,
            event_id,
            payload,
        };
        outbox::queue_email(&txn, email, at).await?;
        txn.commit().await?;
        self.wake_mailer();
        Ok(())
    }

    /// Requests that need a (new) execution: approved ones not touched for
    /// `stale`, and releasing ones whose lease ran out (their worker died).
    pub async fn stuck_releases(
        &self,
        stale: Duration,
        limit: u64,
    ) -> Result<Vec<Uuid>, StoreError> {
        use release_request::Column;
        let at = now();
        let approved_before = at - lease_delta(stale);
        let ids = release_request::Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(
                Condition::any()
                    .add(
                        Condition::all()
                            .add(Column::Status.eq(RequestStatus::Approved.as_str()))
                            .add(Column::UpdatedAt.lt(approved_before)),
                    )
                    .add(
                        Condition::all()
                            .add(Column::Status.eq(RequestStatus::Releasing.as_str()))
                            .add(Column::LeaseUntil.lt(at)),
                    ),
            )
            .order_by_asc(Column::UpdatedAt)
            .limit(limit)
            .into_tuple()
            .all(&self.shared.db)
            .await?;
        Ok(ids)
    }

    /// Moves released numbers whose cooling-off ended back to the inventory; the
    /// former owner no longer sees them. Returns how many moved.
    pub async fn finalize_cooling_off(&self, limit: u64) -> Result<u64, StoreError> {
        let at = now();
        let due: Vec<Uuid> = phone_number::Entity::find()
            .select_only()
            .column(phone_number::Column::Id)
            .filter(phone_number::Column::Status.eq(NumberStatus::Released.as_str()))
            .filter(phone_number::Column::AvailableAfter.lte(at))
            .limit(limit)
            .into_tuple()
            .all(&self.shared.db)
            .await?;
        let mut moved = 0;
        for number_id in due {
            let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
            let updated = phone_number::Entity::update_many()
                .col_expr(
                    phone_number::Column::Status,
                    Expr::value(NumberStatus::Available.as_str()),
                )
                .col_expr(
                    phone_number::Column::ReleasedFromAccount,
                    Expr::value(Option::<Uuid>::None),
                )
                .col_expr(
                    phone_number::Column::ReclaimableUntil,
                    Expr::value(Option::<DateTime<Utc>>::None),
                )
                .col_expr(phone_number::Column::UpdatedAt, Expr::value(at))
                .filter(phone_number::Column::Id.eq(number_id))
                .filter(phone_number::Column::Status.eq(NumberStatus::Released.as_str()))
                .exec(&txn)
                .await?;
            if updated.rows_affected == 1 {
                if let Some(request_id) = last_released_request(&txn, number_id).await? {
                    events::record(&txn, request_id, "available", Actor::System, None, at).await?;
                }
                moved += 1;
            }
            txn.commit().await?;
        }
        Ok(moved)
    }

    /// Takes a released number back into the account that released it, within
    /// the reclaim window: `active` again with a new billing cycle; history and
    /// configuration stay wiped. The carrier is told through the outbox.
    pub async fn reclaim(
        &self,
        account_id: Uuid,
        number_id: Uuid,
    ) -> Result<NumberView, StoreError> {
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let updated = phone_number::Entity::update_many()
            .col_expr(
                phone_number::Column::Status,
                Expr::value(NumberStatus::Active.as_str()),
            )
            .col_expr(phone_number::Column::AccountId, Expr::value(account_id))
            .col_expr(
                phone_number::Column::ReleasedFromAccount,
                Expr::value(Option::<Uuid>::None),
            )
            .col_expr(phone_number::Column::BillingCycleStartedAt, Expr::value(at))
            .col_expr(
                phone_number::Column::ReleasedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                phone_number::Column::ReclaimableUntil,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(
                phone_number::Column::AvailableAfter,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(at))
            .filter(phone_number::Column::Id.eq(number_id))
            .filter(phone_number::Column::Status.eq(NumberStatus::Released.as_str()))
            .filter(phone_number::Column::ReleasedFromAccount.eq(account_id))
            .filter(phone_number::Column::ReclaimableUntil.gte(at))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            let number = phone_number::Entity::find_by_id(number_id)
                .one(&txn)
                .await?;
            return Err(match number {
                Some(n)
                    if n.released_from_account == Some(account_id)
                        && n.status == NumberStatus::Released.as_str() =>
                {
                    DomainError::ReclaimWindowExpired
                }
                Some(n) if n.account_id == Some(account_id) => DomainError::NumberNotReleased,
                _ => DomainError::NotFound,
            }
            .into());
        }
        let number = phone_number::Entity::find_by_id(number_id)
            .one(&txn)
            .await?
            .ok_or_else(|| StoreError::Corrupt("reclaimed number vanished".into()))?;
        if let Some(request_id) = last_released_request(&txn, number_id).await? {
            let event_id = events::record(
                &txn,
                request_id,
                "reclaimed",
                Actor::Customer(account_id),
                None,
                at,
            )
            .await?;
            let account = crate::accounts::referenced_account(&txn, account_id).await?;
            let payload = json!({
                "phone_number": number.e164,
                "phone_number_id": number_id,
                "account_name": account.name,
                "reclaimed_at": at,
            });
            let email = Email {
                template: "request_reclaimed",
                to: &account.email,
                event_id,
                payload,
            };
            outbox::queue_email(&txn, email, at).await?;
            let job = json!({ "phone_number_id": number_id, "phone_number": number.e164, "account_id": account_id });
            outbox::queue_job(&txn, "carrier_reclaim", event_id, job, at).await?;
        }
        let view = crate::numbers::view(&txn, number).await?;
        txn.commit().await?;
        self.wake_workers();
        Ok(view)
    }
}

async fn last_released_request(
    db: &impl ConnectionTrait,
    number_id: Uuid,
) -> Result<Option<Uuid>, StoreError> {
    use release_request::Column;
    Ok(release_request::Entity::find()
        .select_only()
        .column(Column::Id)
        .filter(Column::PhoneNumberId.eq(number_id))
        .filter(Column::Status.eq(RequestStatus::Released.as_str()))
        .order_by_desc(Column::ReleasedAt)
        .into_tuple()
        .one(db)
        .await?)
}

impl Store {
    /// The carrier was unreachable: give the lease up until `delay` from now, so
    /// the next attempt (a retry or the sweep) starts then and not before.
    pub async fn postpone_release(
        &self,
        request_id: Uuid,
        delay: Duration,
    ) -> Result<(), StoreError> {
        use release_request::Column;
        let turn = self.shared.write_gate.turn().await;
        release_request::Entity::update_many()
            .col_expr(Column::LeaseUntil, Expr::value(now() + lease_delta(delay)))
            .filter(Column::Id.eq(request_id))
            .filter(Column::Status.eq(RequestStatus::Releasing.as_str()))
            .exec(turn.db())
            .await?;
        Ok(())
    }
}

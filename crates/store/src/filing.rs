//! Filing release requests, with group commit (see `group`).
//!
//! A filing is a write transaction of several statements (the number, its
//! agents, the request, its timeline event, two emails). The filing writer
//! writes every filing waiting with one read (a second only when a number is
//! in use) and three multi-row INSERTs in one transaction, however many it
//! holds. Each filing gets the answer it would have got alone, in queue order:
//! a number filed twice in one group is filed once, the second gets
//! `RELEASE_ALREADY_PENDING`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use releasedesk_domain::{DomainError, NumberStatus, Reason, RequestStatus, time::now};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, EntityTrait, FromQueryResult, JoinType, QueryFilter, QuerySelect, Select,
    sea_query::{Expr, ExprTrait, Query},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    Actor, FiledRequest, Store, StoreError,
    db::{begin_write, unindexed},
    entity::{account, agent, agent_number, phone_number, release_event, release_request},
    error::is_unique_violation,
    events,
    group::Group,
    numbers::{agents_using, parse_status},
    outbox::{self, Email},
};

/// The metric with the number of filings per write transaction.
pub const FILING_BATCH_METRIC: &str = "releasedesk_filing_batch_size";

/// Open requests, as the unique partial index
/// `release_requests_one_open_per_number` has them (qualified: the statement
/// reads numbers, which have a status too).
const OPEN: &str = "release_requests.status IN ('pending', 'approved', 'releasing')";

/// One filing, as the caller asked for it.
pub(crate) struct Filing {
    account_id: Uuid,
    number_id: Uuid,
    reason: Reason,
    actor: Actor,
}

type Outcome = Result<FiledRequest, StoreError>;

/// This process's filing writer.
pub(crate) struct Filings(pub(crate) Store);

impl Group for Filings {
    type Request = Filing;
    type Answer = FiledRequest;
    const NAME: &'static str = "filing";
    /// 64 requests of 25 columns stay far below either database's limit on
    /// bound parameters.
    const MAX: usize = 64;
    const METRIC: &'static str = FILING_BATCH_METRIC;

    async fn perform(&self, filings: &[Filing]) -> Result<Vec<Outcome>, StoreError> {
        self.0.file_together(filings).await
    }
}

impl Store {
    /// Files a release request for an active number of the account.
    ///
    /// The unique partial index on open requests decides races: of any number of
    /// concurrent filings for one number exactly one commits, the others get
    /// `RELEASE_ALREADY_PENDING`. The timeline event and the "filed" emails (to the
    /// account and to staff) commit with the request. It commits together with
    /// the other filings waiting at that moment (see the module's comment); the
    /// answer comes after the commit.
    pub async fn file_request(
        &self,
        account_id: Uuid,
        number_id: Uuid,
        reason: Reason,
        actor: Actor,
    ) -> Result<FiledRequest, StoreError> {
        let filing = Filing {
            account_id,
            number_id,
            reason,
            actor,
        };
        self.groups
            .filings
            .submit(filing, || Filings(self.detached()))
            .await
    }

    /// Writes `filings` in one transaction. `Ok` holds each filing's own answer
    /// (refusals included, in order); `Err` means nothing was written.
    async fn file_together(&self, filings: &[Filing]) -> Result<Vec<Outcome>, StoreError> {
        let (txn, _turn) = begin_write(&self.write_gate).await?;
        let number_ids: Vec<Uuid> = filings.iter().map(|f| f.number_id).collect();
        let numbers: HashMap<Uuid, Candidate> = candidates_select(&number_ids)
            .into_model::<Candidate>()
            .all(&txn)
            .await?
            .into_iter()
            .map(|number| (number.id, number))
            .collect();
        // Who uses a number matters only for the refusal's details: rare.
        let used: Vec<Uuid> = numbers
            .values()
            .filter(|n| n.in_use)
            .map(|n| n.id)
            .collect();
        let in_use = if used.is_empty() {
            HashMap::new()
        } else {
            agents_using(&txn, &used).await?
        };
        let mut open: HashSet<Uuid> = numbers.values().filter(|n| n.open).map(|n| n.id).collect();

        let staff_email = self.settings.staff_email.as_str();
        let mut outcomes = Vec::with_capacity(filings.len());
        let (mut requests, mut timeline, mut emails) = (Vec::new(), Vec::new(), Vec::new());
        for filing in filings {
            let number = match numbers.get(&filing.number_id) {
                Some(number) if number.account_id == Some(filing.account_id) => number,
                _ => {
                    outcomes.push(Err(DomainError::NotFound.into()));
                    continue;
                }
            };
            let refusal = match parse_status(&number.status) {
                Err(corrupt) => Some(corrupt),
                Ok(status) if status != NumberStatus::Active => {
                    Some(DomainError::NumberNotActive.into())
                }
                Ok(_) => match in_use.get(&number.id) {
                    Some(agents) => Some(DomainError::PhoneNumberInUse(agents.clone()).into()),
                    // Open already, or filed earlier in this batch.
                    None if !open.insert(number.id) => {
                        Some(DomainError::ReleaseAlreadyPending.into())
                    }
                    None => None,
                },
            };
            if let Some(refusal) = refusal {
                outcomes.push(Err(refusal));
                continue;
            }
            let (Some(account_name), Some(account_email)) =
                (&number.account_name, &number.account_email)
            else {
                let missing = format!("account {} is missing", filing.account_id);
                outcomes.push(Err(StoreError::Corrupt(missing)));
                continue;
            };

            let at = now();
            let fee = self.policy().early_termination_fee(number.purchased_at, at);
            let filed = FiledRequest {
                id: releasedesk_domain::new_id(),
                phone_number_id: number.id,
                phone_number: number.e164.clone(),
                reason: filing.reason.as_str().to_owned(),
                status: RequestStatus::Pending,
                requested_at: at,
                early_termination_fee: fee,
                currency: self.policy().currency.clone(),
            };
            requests.push(request_row(&filed, filing.account_id, filing.actor));
            let event_id = releasedesk_domain::new_id();
            timeline.push(events::row(
                event_id,
                filed.id,
                "requested",
                filing.actor,
                None,
                at,
            ));
            let payload = json!({
                "request_id": filed.id,
                "phone_number": filed.phone_number,
                "account_name": account_name,
                "reason": filed.reason,
                "early_termination_fee": fee,
                "currency": filed.currency,
                "requested_at": at,
            });
            for (template, to) in [
                ("request_filed", account_email.as_str()),
                ("staff_new_request", staff_email),
            ] {
                emails.push(Email {
                    template,
                    to,
                    event_id,
                    payload: payload.clone(),
                });
            }
            outcomes.push(Ok(filed));
        }

        let mut claimed = Vec::new();
        if !requests.is_empty() {
            match release_request::Entity::insert_many(requests)
                .exec_without_returning(&txn)
                .await
            {
                Ok(_) => {}
                Err(e) if is_unique_violation(&e) => {
                    return Err(DomainError::ReleaseAlreadyPending.into());
                }
                Err(e) => return Err(e.into()),
            }
            release_event::Entity::insert_many(timeline)
                .exec_without_returning(&txn)
                .await?;
            // Both emails of every filing, at the moment of the last one.
            claimed = outbox::queue_emails(&txn, emails, now(), self.email_claim()).await?;
        }
        txn.commit().await?;
        if outcomes.iter().any(Result::is_ok) {
            self.emails_committed(claimed);
        }
        Ok(outcomes)
    }
}

/// The new row for a filed request.
fn request_row(
    filed: &FiledRequest,
    account_id: Uuid,
    actor: Actor,
) -> release_request::ActiveModel {
    release_request::ActiveModel {
        id: Set(filed.id),
        account_id: Set(account_id),
        phone_number_id: Set(filed.phone_number_id),
        phone_number: Set(filed.phone_number.clone()),
        reason: Set(filed.reason.clone()),
        status: Set(RequestStatus::Pending.as_str().into()),
        requested_at: Set(filed.requested_at),
        requested_by: Set(actor.label()),
        filed_by_staff_id: Set(match actor {
            Actor::Staff(id) => Some(id),
            _ => None,
        }),
        early_termination_fee_minor: Set(filed.early_termination_fee.minor()),
        currency: Set(filed.currency.clone()),
        claimed_by: Set(None),
        claimed_at: Set(None),
        decided_at: Set(None),
        decided_by: Set(None),
        decision_note: Set(None),
        cancelled_by: Set(None),
        released_at: Set(None),
        failure_reason: Set(None),
        version: Set(1),
        updated_at: Set(filed.requested_at),
        lease_until: Set(None),
        execution_attempts: Set(0),
        carrier_released_at: Set(None),
    }
}

/// What a group of filings needs to know of one of its numbers.
#[derive(Debug, FromQueryResult)]
struct Candidate {
    id: Uuid,
    e164: String,
    account_id: Option<Uuid>,
    status: String,
    purchased_at: DateTime<Utc>,
    /// The owner's, if it has one.
    account_name: Option<String>,
    account_email: Option<String>,
    /// An active agent uses it.
    in_use: bool,
    /// It has an open request.
    open: bool,
}

/// The group's numbers with their owner and whether each is in use or has an
/// open request, in one statement. Both tests are `EXISTS` on the number's own
/// rows: the open requests through `idx_release_requests_number` (a number has
/// few requests, open or not), the status test [`unindexed`] so no planner walks
/// every open request instead.
pub(crate) fn candidates_select(numbers: &[Uuid]) -> Select<phone_number::Entity> {
    let in_use = Query::select()
        .expr(Expr::val(1))
        .from(agent_number::Entity)
        .inner_join(
            agent::Entity,
            Expr::col((agent::Entity, agent::Column::Id))
                .equals((agent_number::Entity, agent_number::Column::AgentId)),
        )
        .and_where(
            Expr::col((agent_number::Entity, agent_number::Column::PhoneNumberId))
                .equals((phone_number::Entity, phone_number::Column::Id)),
        )
        .and_where(Expr::col((agent::Entity, agent::Column::Active)).eq(true))
        .to_owned();
    let open = Query::select()
        .expr(Expr::val(1))
        .from(release_request::Entity)
        .and_where(
            Expr::col((
                release_request::Entity,
                release_request::Column::PhoneNumberId,
            ))
            .equals((phone_number::Entity, phone_number::Column::Id)),
        )
        .and_where(unindexed(Expr::cust(OPEN)))
        .to_owned();
    phone_number::Entity::find()
        .select_only()
        .columns([
            phone_number::Column::Id,
            phone_number::Column::E164,
            phone_number::Column::AccountId,
            phone_number::Column::Status,
            phone_number::Column::PurchasedAt,
        ])
        .column_as(account::Column::Name, "account_name")
        .column_as(account::Column::Email, "account_email")
        .expr_as(Expr::exists(in_use), "in_use")
        .expr_as(Expr::exists(open), "open")
        .join(
            JoinType::LeftJoin,
            phone_number::Entity::belongs_to(account::Entity)
                .from(phone_number::Column::AccountId)
                .to(account::Column::Id)
                .into(),
        )
        .filter(phone_number::Column::Id.is_in(numbers.iter().copied()))
}

#[cfg(test)]
mod tests {
    use releasedesk_domain::RequestStatus;

    use super::OPEN;

    /// The literal statuses are the open ones (the partial index's predicate).
    #[test]
    fn open_names_every_open_status() {
        let named = RequestStatus::OPEN
            .iter()
            .map(|status| format!("'{}'", status.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        assert_eq!(OPEN, format!("release_requests.status IN ({named})"));
    }
}

//! Filing release requests, with group commit (see `group`).
//!
//! A filing is a write transaction of several statements (the number, its
//! agents, the request, its timeline event, two emails). The filing writer
//! writes every filing waiting with one read (a second only when a number is
//! in use) and three multi-row INSERTs in one transaction, however many it
//! holds. Each filing gets the answer it would have got alone, in queue order:
//! a number filed twice in one group is filed once, the second gets
//! `RELEASE_ALREADY_PENDING`. On PostgreSQL a second group is written beside
//! the first once a full one waits (see [`Filings::in_flight`]).
//!
//! A customer's filing over the API brings its bearer token unchecked, and the
//! group's read checks it along with the numbers
//! ([`Store::file_request_with_token`]): the request then costs no look-up of
//! its own before it joins a group.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use releasedesk_domain::{DomainError, InUseAgent, NumberStatus, Reason, RequestStatus, time::now};
use sea_orm::{
    ActiveValue::Set,
    Condition, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, JoinType, QueryFilter,
    QuerySelect, QueryTrait, Select,
    sea_query::{Expr, ExprTrait, Query},
};
use serde_json::json;
use uuid::Uuid;

use crate::{
    Actor, Backend, FiledRequest, Store, StoreError,
    accounts::{customer_token_hash, valid_customer_tokens},
    db::{KeyedSessions, PgQuery, begin_write, one_of, unindexed},
    entity::{
        account, agent, agent_number, api_token, phone_number, release_event, release_request,
    },
    error::{is_sqlx_unique_violation_of, is_unique_violation},
    events,
    group::Group,
    numbers::{agents_using, parse_status},
    outbox::{self, Email},
};

/// PostgreSQL: the filing writer's own sessions, one per group in flight
/// (see [`Filings::in_flight`] and `db::KeyedSessions`).
pub(crate) const SESSIONS: u32 = 2;

/// The metric with the number of filings per write transaction.
pub const FILING_BATCH_METRIC: &str = "releasedesk_filing_batch_size";

/// The unique partial index of open requests: a filing that meets it lost a
/// race for its number.
const OPEN_PER_NUMBER: &str = "release_requests_one_open_per_number";

/// Open requests, as the unique partial index
/// `release_requests_one_open_per_number` has them (qualified: the statement
/// reads numbers, which have a status too).
const OPEN: &str = "release_requests.status IN ('pending', 'approved', 'releasing')";

/// One filing, as the caller asked for it.
pub(crate) struct Filing {
    filer: Filer,
    number_id: Uuid,
    reason: Reason,
}

/// Who files.
enum Filer {
    /// Already known: the account the request is for, and who acts for it.
    Known { account_id: Uuid, actor: Actor },
    /// The hash of a customer token, checked by the group's read: its account
    /// files, as the customer.
    Token(String),
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
    /// A group of 16 costs PostgreSQL about as much per filing as any larger
    /// one; below that the statement's own cost shows (docs/BENCHMARKS.md).
    const FULL: usize = 16;

    /// PostgreSQL writes two groups side by side, each in its own backend; the
    /// unique index on open requests decides a number filed in both (the
    /// losing group is retried one filing at a time; each group inserts its
    /// numbers in the same order, so two never deadlock). SQLite has one
    /// writer.
    fn in_flight(&self) -> usize {
        match self.0.backend() {
            Backend::Postgres => SESSIONS as usize,
            Backend::Sqlite => 1,
        }
    }

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
        let filer = Filer::Known { account_id, actor };
        self.file(filer, number_id, reason).await
    }

    /// Files a release request as the customer whose token `token` is, checking
    /// the token in the filing group's own read (see the module's comment)
    /// rather than in a look-up first. The token is checked after the call
    /// began, as an up-front look-up would be, so a revocation committed
    /// before it is always seen. `Unauthenticated` if the token is not a
    /// customer token, or unknown, or revoked; otherwise as
    /// [`Store::file_request`] for the token's account.
    pub async fn file_request_with_token(
        &self,
        token: &str,
        number_id: Uuid,
        reason: Reason,
    ) -> Result<FiledRequest, StoreError> {
        let hash = customer_token_hash(token).ok_or(StoreError::Unauthenticated)?;
        self.file(Filer::Token(hash), number_id, reason).await
    }

    async fn file(
        &self,
        filer: Filer,
        number_id: Uuid,
        reason: Reason,
    ) -> Result<FiledRequest, StoreError> {
        let filing = Filing {
            filer,
            number_id,
            reason,
        };
        self.shared
            .groups
            .filings
            .submit(filing, || Filings(self.detached()))
            .await
    }

    /// Writes `filings` together. `Ok` holds each filing's own answer
    /// (refusals included, in order); `Err` means nothing was written.
    async fn file_together(&self, filings: &[Filing]) -> Result<Vec<Outcome>, StoreError> {
        match &self.shared.filing_sessions {
            Some(sessions) => self.file_in_one_statement(sessions, filings).await,
            None => self.file_in_one_transaction(filings).await,
        }
    }

    /// SQLite: the read and the writes in one transaction, which holds the one
    /// write lock throughout.
    async fn file_in_one_transaction(
        &self,
        filings: &[Filing],
    ) -> Result<Vec<Outcome>, StoreError> {
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let found = Found::read(&txn, filings).await?;
        let mut decided = self.decide(filings, &found);
        let mut claimed = Vec::new();
        if !decided.accepted.is_empty() {
            let requests = decided.accepted.iter().map(Accepted::request_row);
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
            let timeline = decided.accepted.iter().map(Accepted::event_row);
            release_event::Entity::insert_many(timeline)
                .exec_without_returning(&txn)
                .await?;
            let emails = std::mem::take(&mut decided.emails);
            claimed = outbox::queue_emails(&txn, emails, now(), self.email_claim()).await?;
        }
        txn.commit().await?;
        Ok(self.filed(decided.outcomes, claimed))
    }

    /// PostgreSQL: two round trips whatever the group's size, each one
    /// statement of a fixed text (prepared once per session, its plan cached),
    /// on the filing writer's own sessions: the read, then the requests, their
    /// events and their emails in one statement, which commits on its own.
    /// Under READ COMMITTED a transaction around the two would protect nothing
    /// more: the read takes no locks either way, and the unique index on open
    /// requests decides races.
    async fn file_in_one_statement(
        &self,
        sessions: &KeyedSessions,
        filings: &[Filing],
    ) -> Result<Vec<Outcome>, StoreError> {
        // Taken for its place, not its connection: background writers (the
        // emails' bookkeeping) wait while the group is written.
        let _turn = self.shared.write_gate.turn().await;
        let found = Found::read(&sessions.db, filings).await?;
        let mut decided = self.decide(filings, &found);
        if decided.accepted.is_empty() {
            return Ok(decided.outcomes);
        }
        let emails = outbox::NewEmails::new(decided.emails, now(), self.email_claim());
        let columns = FilingColumns::in_number_order(&mut decided.accepted);
        emails
            .bind(columns.bind(sqlx::query(INSERT_FILINGS)))
            .execute(&sessions.pool)
            .await
            .map_err(|e| {
                if is_sqlx_unique_violation_of(&e, OPEN_PER_NUMBER) {
                    DomainError::ReleaseAlreadyPending.into()
                } else {
                    StoreError::from_sqlx(e)
                }
            })?;
        Ok(self.filed(decided.outcomes, emails.written_all()))
    }

    /// The answers of a written group, after handing its claimed emails over.
    fn filed(&self, outcomes: Vec<Outcome>, claimed: Vec<outbox::OutboxItem>) -> Vec<Outcome> {
        if outcomes.iter().any(Result::is_ok) {
            self.emails_committed(claimed);
        }
        outcomes
    }

    /// Each filing's answer, in order, and what the accepted ones write.
    fn decide<'a>(&'a self, filings: &[Filing], found: &'a Found) -> Decided<'a> {
        let staff_email = self.shared.settings.staff_email.as_str();
        let mut open: HashSet<Uuid> = found
            .numbers
            .values()
            .filter(|n| n.open)
            .map(|n| n.id)
            .collect();
        let mut decided = Decided {
            outcomes: Vec::with_capacity(filings.len()),
            accepted: Vec::new(),
            emails: Vec::new(),
        };
        for filing in filings {
            let (account_id, actor) = match &filing.filer {
                Filer::Known { account_id, actor } => (*account_id, *actor),
                Filer::Token(hash) => match found.tokens.get(hash) {
                    Some(&account_id) => (account_id, Actor::Customer(account_id)),
                    None => {
                        decided.outcomes.push(Err(StoreError::Unauthenticated));
                        continue;
                    }
                },
            };
            let number = match found.numbers.get(&filing.number_id) {
                Some(number) if number.account_id == Some(account_id) => number,
                _ => {
                    decided.outcomes.push(Err(DomainError::NotFound.into()));
                    continue;
                }
            };
            let refusal = match parse_status(&number.status) {
                Err(corrupt) => Some(corrupt),
                Ok(status) if status != NumberStatus::Active => {
                    Some(DomainError::NumberNotActive.into())
                }
                Ok(_) => match found.in_use.get(&number.id) {
                    Some(agents) => Some(DomainError::PhoneNumberInUse(agents.clone()).into()),
                    // Open already, or filed earlier in this batch.
                    None if !open.insert(number.id) => {
                        Some(DomainError::ReleaseAlreadyPending.into())
                    }
                    None => None,
                },
            };
            if let Some(refusal) = refusal {
                decided.outcomes.push(Err(refusal));
                continue;
            }
            let (Some(account_name), Some(account_email)) =
                (&number.account_name, &number.account_email)
            else {
                let missing = format!("account {account_id} is missing");
                decided.outcomes.push(Err(StoreError::Corrupt(missing)));
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
            let event_id = releasedesk_domain::new_id();
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
                decided.emails.push(Email {
                    template,
                    to,
                    event_id,
                    payload: payload.clone(),
                });
            }
            decided.accepted.push(Accepted {
                filed: filed.clone(),
                account_id,
                actor,
                event_id,
            });
            decided.outcomes.push(Ok(filed));
        }
        decided
    }
}

/// What a group of filings found of its numbers and its filers' tokens.
struct Found {
    numbers: HashMap<Uuid, Candidate>,
    /// The account of each valid token among the group's, by hash.
    tokens: HashMap<String, Uuid>,
    /// The active agents of the numbers in use.
    in_use: HashMap<Uuid, Vec<InUseAgent>>,
}

impl Found {
    async fn read(db: &impl ConnectionTrait, filings: &[Filing]) -> Result<Self, StoreError> {
        let number_ids: Vec<Uuid> = filings.iter().map(|f| f.number_id).collect();
        let hashes: Vec<String> = filings
            .iter()
            .filter_map(|f| match &f.filer {
                Filer::Token(hash) => Some(hash.clone()),
                Filer::Known { .. } => None,
            })
            .collect();
        let mut numbers = HashMap::with_capacity(number_ids.len());
        let mut tokens = HashMap::new();
        let rows = candidates_select(&number_ids, &hashes, db.get_database_backend())
            .into_model::<Candidate>()
            .all(db)
            .await?;
        for mut number in rows {
            if let (Some(hash), Some(account_id)) = (number.token_hash.take(), number.account_id) {
                tokens.insert(hash, account_id);
            }
            numbers.insert(number.id, number);
        }
        // A token the read did not pair with a number of its account is
        // unknown, revoked, or filing for a number it does not own (404, not
        // 401): rare, so only then is it looked up alone.
        let unpaired: Vec<String> = hashes
            .into_iter()
            .filter(|hash| !tokens.contains_key(hash))
            .collect();
        if !unpaired.is_empty() {
            let valid = valid_customer_tokens(db, &unpaired).await?;
            tokens.extend(
                valid
                    .into_iter()
                    .map(|(hash, principal)| (hash, principal.account_id)),
            );
        }
        // Who uses a number matters only for the refusal's details: rare.
        let used: Vec<Uuid> = numbers
            .values()
            .filter(|n| n.in_use)
            .map(|n| n.id)
            .collect();
        let in_use = if used.is_empty() {
            HashMap::new()
        } else {
            agents_using(db, &used).await?
        };
        Ok(Self {
            numbers,
            tokens,
            in_use,
        })
    }
}

/// A group's answers, and what its accepted filings write.
struct Decided<'a> {
    outcomes: Vec<Outcome>,
    accepted: Vec<Accepted>,
    /// Two per accepted filing.
    emails: Vec<Email<'a>>,
}

/// A filing that passed every check.
struct Accepted {
    filed: FiledRequest,
    account_id: Uuid,
    actor: Actor,
    /// Its "requested" timeline event.
    event_id: Uuid,
}

impl Accepted {
    fn request_row(&self) -> release_request::ActiveModel {
        request_row(&self.filed, self.account_id, self.actor)
    }

    fn event_row(&self) -> release_event::ActiveModel {
        events::row(
            self.event_id,
            self.filed.id,
            REQUESTED,
            self.actor,
            None,
            self.filed.requested_at,
        )
    }
}

/// The kind of a filing's timeline event.
const REQUESTED: &str = "requested";

/// A group's requests, their events and their emails in one statement, each
/// column one array parameter (see [`FilingColumns`] and
/// [`outbox::NewEmails`] for the order). Columns left out are NULL, as
/// [`request_row`] writes them. A plain INSERT of the emails, not `ON CONFLICT
/// (dedup_key) DO NOTHING` as `queue_emails` writes: a filing's dedup keys
/// begin with the id of its new event, so none can exist, and a speculative
/// insertion costs PostgreSQL a lock and a confirmation per row (~15% of its CPU
/// per filing, docs/BENCHMARKS.md). Public for the benchmark, which has
/// PostgreSQL run it without `serve`.
pub const INSERT_FILINGS: &str = "\
WITH requests AS (
    INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason,
        status, requested_at, requested_by, filed_by_staff_id, early_termination_fee_minor,
        currency, version, updated_at, execution_attempts)
    SELECT id, account_id, phone_number_id, phone_number, reason, 'pending', requested_at,
        requested_by, filed_by_staff_id, fee, currency, 1, requested_at, 0
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::timestamptz[], $7::text[], $8::uuid[], $9::int8[], $10::text[])
        AS r (id, account_id, phone_number_id, phone_number, reason, requested_at,
            requested_by, filed_by_staff_id, fee, currency)
), timeline AS (
    INSERT INTO release_events (id, request_id, at, kind, actor)
    SELECT id, request_id, at, 'requested', actor
    FROM unnest($11::uuid[], $1::uuid[], $6::timestamptz[], $7::text[])
        AS e (id, request_id, at, actor)
)
INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts,
    next_attempt_at, created_at)
SELECT id, 'email', topic, recipient, payload::json, dedup_key, $17, $18, $19, $20
FROM unnest($12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[])
    AS o (id, topic, recipient, payload, dedup_key)";

/// The columns of [`INSERT_FILINGS`]'s requests and events, one array each.
#[derive(Default)]
struct FilingColumns {
    ids: Vec<Uuid>,
    account_ids: Vec<Uuid>,
    number_ids: Vec<Uuid>,
    numbers: Vec<String>,
    reasons: Vec<String>,
    requested_at: Vec<DateTime<Utc>>,
    requested_by: Vec<String>,
    filed_by_staff: Vec<Option<Uuid>>,
    fees: Vec<i64>,
    currencies: Vec<String>,
    event_ids: Vec<Uuid>,
}

impl FilingColumns {
    /// The columns of `accepted`, in the order of their numbers: two groups in
    /// flight (see [`Filings::in_flight`]) then insert the numbers they share
    /// in the same order, so their INSERTs never wait on each other in a cycle.
    fn in_number_order(accepted: &mut [Accepted]) -> Self {
        accepted.sort_unstable_by_key(|accepted| accepted.filed.phone_number_id);
        accepted.iter().fold(Self::default(), Self::with)
    }

    fn with(mut self, accepted: &Accepted) -> Self {
        let filed = &accepted.filed;
        self.ids.push(filed.id);
        self.account_ids.push(accepted.account_id);
        self.number_ids.push(filed.phone_number_id);
        self.numbers.push(filed.phone_number.clone());
        self.reasons.push(filed.reason.clone());
        self.requested_at.push(filed.requested_at);
        self.requested_by.push(accepted.actor.label());
        self.filed_by_staff.push(staff_of(accepted.actor));
        self.fees.push(filed.early_termination_fee.minor());
        self.currencies.push(filed.currency.clone());
        self.event_ids.push(accepted.event_id);
        self
    }

    /// Binds `$1` to `$11`.
    fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.ids)
            .bind(self.account_ids)
            .bind(self.number_ids)
            .bind(self.numbers)
            .bind(self.reasons)
            .bind(self.requested_at)
            .bind(self.requested_by)
            .bind(self.filed_by_staff)
            .bind(self.fees)
            .bind(self.currencies)
            .bind(self.event_ids)
    }
}

/// The staff member who filed, if one did.
fn staff_of(actor: Actor) -> Option<Uuid> {
    match actor {
        Actor::Staff(id) => Some(id),
        _ => None,
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
        filed_by_staff_id: Set(staff_of(actor)),
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
    /// One of the group's tokens, valid and of the number's owner (a number
    /// comes once for each such token, or once with none).
    token_hash: Option<String>,
}

/// The group's numbers with their owner and whether each is in use or has an
/// open request, paired with those of the group's token `hashes` that are
/// valid and of the number's owner, in one statement. Both tests are `EXISTS`
/// on the number's own rows: the open requests through
/// `idx_release_requests_number` (a number has few requests, open or not), the
/// status test [`unindexed`] so no planner walks every open request instead.
/// The tokens join by their unique hash.
pub(crate) fn candidates_select(
    numbers: &[Uuid],
    hashes: &[String],
    backend: DbBackend,
) -> Select<phone_number::Entity> {
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
    let owners_token = Condition::all()
        .add(
            Expr::col((api_token::Entity, api_token::Column::AccountId))
                .equals((phone_number::Entity, phone_number::Column::AccountId)),
        )
        .add(Expr::col((api_token::Entity, api_token::Column::RevokedAt)).is_null())
        .add(one_of(
            api_token::Column::TokenHash,
            hashes.to_vec(),
            backend,
        ));
    let mut select = phone_number::Entity::find()
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
        .column_as(api_token::Column::TokenHash, "token_hash")
        .join(
            JoinType::LeftJoin,
            phone_number::Entity::belongs_to(account::Entity)
                .from(phone_number::Column::AccountId)
                .to(account::Column::Id)
                .into(),
        )
        .filter(one_of(phone_number::Column::Id, numbers.to_vec(), backend));
    QueryTrait::query(&mut select).join(JoinType::LeftJoin, api_token::Entity, owners_token);
    select
}

#[cfg(test)]
mod tests {
    use releasedesk_domain::RequestStatus;
    use sea_orm::{DbBackend, QueryTrait};
    use uuid::Uuid;

    use super::{Accepted, FilingColumns, OPEN, candidates_select};
    use crate::{Actor, FiledRequest};

    /// PostgreSQL prepares and plans a statement once per connection only if
    /// its text is the same for every group size.
    #[test]
    fn a_groups_read_on_postgresql_is_one_statement_whatever_its_size() {
        let sql = |n| {
            candidates_select(
                &vec![Uuid::nil(); n],
                &vec![String::new(); n],
                DbBackend::Postgres,
            )
            .build(DbBackend::Postgres)
            .sql
        };
        assert_eq!(sql(1), sql(64));
        assert!(
            sql(1).contains(r#""phone_numbers"."id" = ANY($"#),
            "{}",
            sql(1)
        );
    }

    /// Whatever order a group's filings came in, its requests go to
    /// PostgreSQL in the order of their numbers, each row whole.
    #[test]
    fn a_groups_requests_are_written_in_the_order_of_their_numbers() {
        let accepted = |number: u128| Accepted {
            filed: FiledRequest {
                id: Uuid::from_u128(1000 + number),
                phone_number_id: Uuid::from_u128(number),
                phone_number: format!("+1555000000{number}"),
                reason: "Written in number order.".into(),
                status: RequestStatus::Pending,
                requested_at: chrono::Utc::now(),
                early_termination_fee: releasedesk_domain::Money::from_minor(0),
                currency: "USD".into(),
            },
            account_id: Uuid::nil(),
            actor: Actor::System,
            event_id: Uuid::from_u128(2000 + number),
        };
        let mut group = [accepted(3), accepted(1), accepted(2)];
        let columns = FilingColumns::in_number_order(&mut group);
        assert_eq!(columns.number_ids, [1, 2, 3].map(Uuid::from_u128));
        assert_eq!(columns.ids, [1001, 1002, 1003].map(Uuid::from_u128));
        assert_eq!(columns.event_ids, [2001, 2002, 2003].map(Uuid::from_u128));
        assert_eq!(
            columns.numbers,
            ["+15550000001", "+15550000002", "+15550000003"]
        );
    }

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

//! Filing release requests, with group commit (see `group`).
//!
//! A filing is a write transaction of several statements (the number, its
//! agents, the request, its timeline event, two emails). The filing writer
//! writes every filing waiting with a fixed number of statements, however
//! many it holds: on SQLite one read (a second only when a number is in use)
//! and three multi-row INSERTs in one transaction; on PostgreSQL one statement
//! that checks and writes them all ([`INSERT_FILINGS`]), and a read only of
//! the filings it refused, to say why. Each filing gets the answer it would
//! have got alone, in queue order: a number filed twice in one group is filed
//! once, the second gets `RELEASE_ALREADY_PENDING`. On PostgreSQL a second
//! group is written beside the first once a full one waits (see
//! [`Filings::in_flight`]).
//!
//! A customer's filing over the API brings its bearer token unchecked, and the
//! group's statements check it along with the numbers
//! ([`Store::file_request_with_token`]): the request then costs no look-up of
//! its own before it joins a group.

use std::collections::{HashMap, HashSet};

use chrono::Datelike;
use chrono::{DateTime, Utc};
use releasedesk_domain::{
    DomainError, InUseAgent, Money, NumberStatus, Reason, ReleasePolicy, RequestStatus, time::now,
};
use sea_orm::{
    ActiveValue::Set,
    Condition, ConnectionTrait, DbBackend, DbErr, EntityTrait, FromQueryResult, JoinType,
    QueryFilter, QuerySelect, QueryTrait, Select,
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

/// The template of a filing's email to the account.
const TO_CUSTOMER: &str = "request_filed";
/// The template of a filing's email to staff.
const TO_STAFF: &str = "staff_new_request";

/// How often a filing [`INSERT_FILINGS`] left out but a read then found
/// allowed is filed again (see [`Store::answer_left_out`]).
const LEFT_OUT_ROUNDS: usize = 3;

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
    /// The hash of a customer token, checked by the group's statements: its account
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
    /// the token in the filing group's own statements (see the module's comment)
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
        let filings: Vec<&Filing> = filings.iter().collect();
        let found = Found::read(&txn, &filings).await?;
        let mut decided = self.decide(&filings, &found);
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

    /// PostgreSQL: one round trip whatever the group's size, on the filing
    /// writer's own sessions: [`INSERT_FILINGS`] checks every filing and
    /// writes those that pass (requests, events, emails) in one statement of a
    /// fixed text (prepared once per session, its plan cached), which commits
    /// on its own. The filings it leaves out were refused, and only they are
    /// read, to say why ([`Store::answer_left_out`]). Under READ COMMITTED the
    /// checks take no locks; the unique index on open requests decides races
    /// (the statement fails as a whole and the group is retried one filing at
    /// a time).
    async fn file_in_one_statement(
        &self,
        sessions: &KeyedSessions,
        filings: &[Filing],
    ) -> Result<Vec<Outcome>, StoreError> {
        // Taken for its place, not its connection: background writers (the
        // emails' bookkeeping) wait while the group is written.
        let _turn = self.shared.write_gate.turn().await;
        let all: Vec<&Filing> = filings.iter().collect();
        // Nothing is written unless this succeeds: an error is the group's.
        let written = self.insert_checked(sessions, &all).await?;
        let mut claimed = written.claimed;
        let mut outcomes: Vec<Option<Outcome>> = written
            .filed
            .into_iter()
            .map(|filed| filed.map(Ok))
            .collect();
        let left_out: Vec<usize> = (0..filings.len())
            .filter(|&i| outcomes[i].is_none())
            .collect();
        if !left_out.is_empty() {
            let answers = self
                .answer_left_out(sessions, filings, left_out, &mut claimed)
                .await;
            for (i, answer) in answers {
                outcomes[i] = Some(answer);
            }
        }
        let outcomes = outcomes
            .into_iter()
            .map(|outcome| {
                outcome.unwrap_or_else(|| {
                    Err(StoreError::Corrupt("a filing was left unanswered".into()))
                })
            })
            .collect();
        Ok(self.filed(outcomes, claimed))
    }

    /// Answers the filings [`INSERT_FILINGS`] left out, after the group's
    /// statement committed (so every error is the filing's own, never the
    /// group's): each is decided as [`Store::file_in_one_transaction`] decides
    /// it, from one read of them all. One that now passes (its number changed
    /// between the two statements) is filed again alone, at most
    /// [`LEFT_OUT_ROUNDS`] times; after that it is `Unavailable`, to be
    /// retried.
    async fn answer_left_out(
        &self,
        sessions: &KeyedSessions,
        filings: &[Filing],
        mut left: Vec<usize>,
        claimed: &mut Vec<outbox::OutboxItem>,
    ) -> Vec<(usize, Outcome)> {
        let mut answers = Vec::with_capacity(left.len());
        for _ in 0..LEFT_OUT_ROUNDS {
            if left.is_empty() {
                break;
            }
            let these: Vec<&Filing> = left.iter().map(|&i| &filings[i]).collect();
            let found = match Found::read(&sessions.db, &these).await {
                Ok(found) => found,
                Err(error) => {
                    answers.extend(left.drain(..).map(|i| (i, Err(error.clone()))));
                    break;
                }
            };
            let decided = self.decide(&these, &found);
            let mut again = Vec::new();
            for (i, outcome) in left.drain(..).zip(decided.outcomes) {
                match outcome {
                    Err(refusal) => answers.push((i, Err(refusal))),
                    Ok(_) => again.push(i),
                }
            }
            for i in again {
                match self.insert_checked(sessions, &[&filings[i]]).await {
                    Ok(written) => match written.filed.into_iter().next().flatten() {
                        Some(filed) => {
                            claimed.extend(written.claimed);
                            answers.push((i, Ok(filed)));
                        }
                        None => left.push(i),
                    },
                    Err(error) => answers.push((i, Err(error))),
                }
            }
        }
        answers.extend(left.into_iter().map(|i| {
            let changing = DbErr::Custom("the number changed while it was filed".into());
            (i, Err(StoreError::Unavailable(changing)))
        }));
        answers
    }

    /// Runs [`INSERT_FILINGS`] for `filings`: each one's answer if it was
    /// written (`None` if the statement left it out), and the emails written
    /// claimed for this process's dispatcher.
    async fn insert_checked(
        &self,
        sessions: &KeyedSessions,
        filings: &[&Filing],
    ) -> Result<Written, StoreError> {
        let policy = self.policy();
        let staff_email = self.shared.settings.staff_email.as_str();
        let delivery = outbox::Delivery::new(now(), self.email_claim());
        let columns = filings
            .iter()
            .fold(FilingColumns::default(), |columns, filing| {
                columns.with(filing, policy)
            });
        let fee = policy.early_termination_fee;
        let query = columns
            .bind(sqlx::query(INSERT_FILINGS))
            .bind(fee.minor())
            .bind(json!(fee).to_string())
            .bind(json!(Money::ZERO).to_string())
            .bind(policy.currency.as_str())
            .bind(TO_CUSTOMER)
            .bind(TO_STAFF)
            .bind(staff_email);
        let rows = delivery
            .bind(query)
            .bind(Actor::CUSTOMER_PREFIX)
            .fetch_all(&sessions.pool)
            .await
            .map_err(|e| {
                if is_sqlx_unique_violation_of(&e, OPEN_PER_NUMBER) {
                    DomainError::ReleaseAlreadyPending.into()
                } else {
                    StoreError::from_sqlx(e)
                }
            })?;
        let mut written = Written {
            filed: vec![None; filings.len()],
            claimed: Vec::new(),
        };
        for row in &rows {
            let row = WrittenRow::decode(row)?;
            let i = usize::try_from(row.ord - 1)
                .ok()
                .filter(|&i| i < filings.len())
                .ok_or_else(|| StoreError::Corrupt(format!("no filing {}", row.ord)))?;
            let filed = FiledRequest {
                id: columns.ids[i],
                phone_number_id: columns.number_ids[i],
                phone_number: row.e164,
                reason: columns.reasons[i].clone(),
                status: RequestStatus::Pending,
                requested_at: columns.requested_at[i],
                early_termination_fee: Money::from_minor(row.fee),
                currency: policy.currency.clone(),
            };
            if delivery.hands_over() {
                let payload: serde_json::Value = serde_json::from_str(&row.payload)
                    .map_err(|e| StoreError::Corrupt(format!("a filing's email payload: {e}")))?;
                let event_id = columns.event_ids[i];
                written.claimed.push(delivery.item(
                    columns.customer_email_ids[i],
                    TO_CUSTOMER,
                    &row.account_email,
                    event_id,
                    payload.clone(),
                ));
                written.claimed.push(delivery.item(
                    columns.staff_email_ids[i],
                    TO_STAFF,
                    staff_email,
                    event_id,
                    payload,
                ));
            }
            written.filed[i] = Some(filed);
        }
        Ok(written)
    }

    /// The answers of a written group, after handing its claimed emails over.
    fn filed(&self, outcomes: Vec<Outcome>, claimed: Vec<outbox::OutboxItem>) -> Vec<Outcome> {
        if outcomes.iter().any(Result::is_ok) {
            self.emails_committed(claimed);
        }
        outcomes
    }

    /// Each filing's answer, in order, and what the accepted ones write.
    fn decide<'a>(&'a self, filings: &[&Filing], found: &'a Found) -> Decided<'a> {
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
                (TO_CUSTOMER, account_email.as_str()),
                (TO_STAFF, staff_email),
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
    async fn read(db: &impl ConnectionTrait, filings: &[&Filing]) -> Result<Self, StoreError> {
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

/// A group's filings checked and written in one statement (PostgreSQL), each
/// filing's values one array parameter (see [`FilingColumns`]), the values
/// they share after them. A filing is written if its number is active, its
/// filer's (the account given, or a valid token of the number's owner), not
/// used by an active agent, and without an open request: the checks of
/// `candidates_select` and `Store::decide`, in SQL. Of several filings for one
/// number the first that passes is written. The requests go in the order of
/// their numbers, so two groups in flight (see [`Filings::in_flight`]) insert
/// the numbers they share in the same order and never wait on each other in
/// a cycle. The fee, the emails' payload and dedup keys are made here as
/// `Store::decide` and `outbox::dedup_key` make them (a test compares the
/// rows), and a token filer's actor label from `Actor::CUSTOMER_PREFIX` (`$25`).
/// Every table is read by key, in a subquery per filing that a plan cannot
/// turn into a read of the whole table: the number and its owner in `LATERAL`
/// subqueries, the token, agents and open requests in `EXISTS`, each with
/// `OFFSET 0`, which keeps PostgreSQL from merging it into a join or running it
/// once over every row to hash. The writer's sessions plan this statement
/// once and keep the plan (`db::KeyedSessions`); planned while the tables were
/// small, a join hashed every assigned number and a hashed `EXISTS` every agent
/// link, and kept doing so as they grew (docs/BENCHMARKS.md: 305 ms for a group
/// of 16 at 1,000,000 numbers, 1 ms by key).
/// The emails are a plain INSERT, not `ON CONFLICT (dedup_key) DO NOTHING` as
/// `queue_emails` writes: their keys begin with the id of the new event, so
/// none can exist, and a speculative insertion costs PostgreSQL a lock and a
/// confirmation per row. Answers the written filings: their place in the
/// arrays (from 1), number, fee, account email and payload. Public for the
/// benchmark, which has PostgreSQL run it without `serve`.
pub const INSERT_FILINGS: &str = "\
WITH checked AS MATERIALIZED (
    SELECT f.*, n.e164, n.status AS number_status, n.account_id AS owner,
        a.name AS account_name, a.email AS account_email,
        (f.fee_cutoff IS NULL OR n.purchased_at > f.fee_cutoff) AS owes,
        f.account_id = n.account_id OR EXISTS (
            SELECT 1 FROM api_tokens t WHERE t.token_hash = f.token_hash
                AND t.account_id = n.account_id AND t.revoked_at IS NULL OFFSET 0) AS filers,
        EXISTS (
            SELECT 1 FROM agent_numbers u WHERE u.phone_number_id = n.id AND EXISTS (
                SELECT 1 FROM agents g WHERE g.id = u.agent_id AND g.active OFFSET 0)
            OFFSET 0) AS in_use,
        EXISTS (
            SELECT 1 FROM release_requests r WHERE r.phone_number_id = n.id
                AND CASE WHEN r.status IN ('pending', 'approved', 'releasing')
                    THEN TRUE ELSE FALSE END OFFSET 0) AS open
    FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[],
        $6::timestamptz[], $7::text[], $8::uuid[], $9::timestamptz[], $10::uuid[],
        $11::uuid[], $12::uuid[], $13::text[])
        WITH ORDINALITY AS f (id, number_id, account_id, token_hash, reason, requested_at,
            requested_by, filed_by_staff_id, fee_cutoff, event_id, customer_email_id,
            staff_email_id, requested_at_json, ord)
    CROSS JOIN LATERAL (SELECT id, e164, status, account_id, purchased_at
        FROM phone_numbers WHERE id = f.number_id OFFSET 0) n
    CROSS JOIN LATERAL (SELECT name, email FROM accounts WHERE id = n.account_id OFFSET 0) a
), passed AS (
    SELECT DISTINCT ON (number_id) * FROM checked
    WHERE number_status = 'active' AND filers AND NOT in_use AND NOT open
    ORDER BY number_id, ord
), filed AS (
    SELECT passed.*,
        CASE WHEN owes THEN $14::int8 ELSE 0 END AS fee,
        COALESCE(requested_by, $25::text || owner) AS actor,
        json_build_object('account_name', account_name, 'currency', $17::text,
            'early_termination_fee', CASE WHEN owes THEN $15::json ELSE $16::json END,
            'phone_number', e164, 'reason', reason, 'request_id', id,
            'requested_at', requested_at_json::json) AS payload
    FROM passed
), requests AS (
    INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason,
        status, requested_at, requested_by, filed_by_staff_id, early_termination_fee_minor,
        currency, version, updated_at, execution_attempts)
    SELECT id, owner, number_id, e164, reason, 'pending', requested_at, actor,
        filed_by_staff_id, fee, $17, 1, requested_at, 0
    FROM filed ORDER BY number_id
), timeline AS (
    INSERT INTO release_events (id, request_id, at, kind, actor)
    SELECT event_id, id, requested_at, 'requested', actor FROM filed
), emails AS (
    INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts,
        next_attempt_at, created_at)
    SELECT e.id, 'email', e.topic, e.recipient, f.payload,
        f.event_id || ':' || e.topic || ':' || e.recipient, $21, $22, $23, $24
    FROM filed f CROSS JOIN LATERAL (VALUES
        (f.customer_email_id, $18::text, f.account_email),
        (f.staff_email_id, $19::text, $20::text)) AS e (id, topic, recipient)
)
SELECT ord, e164, fee, account_email, payload::text AS payload FROM filed";

/// The columns of [`INSERT_FILINGS`]'s filings, one array each (`$1` to `$13`).
#[derive(Default)]
struct FilingColumns {
    ids: Vec<Uuid>,
    number_ids: Vec<Uuid>,
    /// The account, where the filer is known; its token's hash otherwise.
    account_ids: Vec<Option<Uuid>>,
    token_hashes: Vec<Option<String>>,
    reasons: Vec<String>,
    requested_at: Vec<DateTime<Utc>>,
    /// The actor's label, where the filer is known.
    requested_by: Vec<Option<String>>,
    filed_by_staff: Vec<Option<Uuid>>,
    /// See [`ReleasePolicy::term_cutoff`].
    fee_cutoffs: Vec<Option<DateTime<Utc>>>,
    event_ids: Vec<Uuid>,
    customer_email_ids: Vec<Uuid>,
    staff_email_ids: Vec<Uuid>,
    /// `requested_at` as the emails' payload has it.
    requested_at_json: Vec<String>,
}

impl FilingColumns {
    fn with(mut self, filing: &Filing, policy: &ReleasePolicy) -> Self {
        let at = now();
        let (account_id, token_hash, actor) = match &filing.filer {
            Filer::Known { account_id, actor } => (Some(*account_id), None, Some(*actor)),
            Filer::Token(hash) => (None, Some(hash.clone()), None),
        };
        self.ids.push(releasedesk_domain::new_id());
        self.number_ids.push(filing.number_id);
        self.account_ids.push(account_id);
        self.token_hashes.push(token_hash);
        self.reasons.push(filing.reason.as_str().to_owned());
        self.requested_at.push(at);
        self.requested_by.push(actor.map(|actor| actor.label()));
        self.filed_by_staff.push(actor.and_then(staff_of));
        self.fee_cutoffs
            .push(postgres_cutoff(policy.term_cutoff(at)));
        self.event_ids.push(releasedesk_domain::new_id());
        self.customer_email_ids.push(releasedesk_domain::new_id());
        self.staff_email_ids.push(releasedesk_domain::new_id());
        self.requested_at_json.push(json!(at).to_string());
        self
    }

    /// Binds `$1` to `$13`.
    fn bind<'q>(&'q self, query: PgQuery<'q>) -> PgQuery<'q> {
        query
            .bind(&self.ids[..])
            .bind(&self.number_ids[..])
            .bind(&self.account_ids[..])
            .bind(&self.token_hashes[..])
            .bind(&self.reasons[..])
            .bind(&self.requested_at[..])
            .bind(&self.requested_by[..])
            .bind(&self.filed_by_staff[..])
            .bind(&self.fee_cutoffs[..])
            .bind(&self.event_ids[..])
            .bind(&self.customer_email_ids[..])
            .bind(&self.staff_email_ids[..])
            .bind(&self.requested_at_json[..])
    }
}

/// A fee cutoff as PostgreSQL can take it: its timestamps begin in 4713 BC,
/// and a cutoff before year 1 (a minimum term of millennia) leaves every
/// number owing the fee, as no cutoff does.
fn postgres_cutoff(cutoff: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    cutoff.filter(|cutoff| cutoff.year() >= 1)
}

/// What [`INSERT_FILINGS`] answers of a filing it wrote.
struct WrittenRow {
    /// Its place in the arrays, from 1.
    ord: i64,
    e164: String,
    fee: i64,
    account_email: String,
    payload: String,
}

impl WrittenRow {
    fn decode(row: &sqlx::postgres::PgRow) -> Result<Self, StoreError> {
        use sqlx::Row;
        let get = StoreError::from_sqlx;
        Ok(Self {
            ord: row.try_get("ord").map_err(get)?,
            e164: row.try_get("e164").map_err(get)?,
            fee: row.try_get("fee").map_err(get)?,
            account_email: row.try_get("account_email").map_err(get)?,
            payload: row.try_get("payload").map_err(get)?,
        })
    }
}

/// What [`INSERT_FILINGS`] wrote of a group.
struct Written {
    /// Each filing's answer, in order; `None` where it was left out.
    filed: Vec<Option<FiledRequest>>,
    /// The emails written claimed for this process's dispatcher.
    claimed: Vec<outbox::OutboxItem>,
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
    // PostgreSQL: the filing writer's sessions keep this read's plan (see
    // [`INSERT_FILINGS`]), so each table is read per number, by key: the
    // link's agent and the owner in subqueries of their own, and `OFFSET 0`
    // keeps each `EXISTS` from being run once over every row and hashed.
    // SQLite runs every join as look-ups by key anyway, and the subqueries
    // cost it a tenth of its filing throughput (docs/BENCHMARKS.md).
    let by_key = backend == DbBackend::Postgres;
    let links_agent = Expr::col((agent::Entity, agent::Column::Id))
        .equals((agent_number::Entity, agent_number::Column::AgentId));
    let active = Expr::col((agent::Entity, agent::Column::Active)).eq(true);
    let mut in_use = Query::select()
        .expr(Expr::val(1))
        .from(agent_number::Entity)
        .and_where(
            Expr::col((agent_number::Entity, agent_number::Column::PhoneNumberId))
                .equals((phone_number::Entity, phone_number::Column::Id)),
        )
        .to_owned();
    let mut open = Query::select()
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
    if by_key {
        let agent = Query::select()
            .expr(Expr::val(1))
            .from(agent::Entity)
            .and_where(links_agent)
            .and_where(active)
            .offset(0)
            .to_owned();
        in_use.and_where(Expr::exists(agent)).offset(0);
        open.offset(0);
    } else {
        in_use
            .inner_join(agent::Entity, links_agent)
            .and_where(active);
    }
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
    let select = phone_number::Entity::find().select_only().columns([
        phone_number::Column::Id,
        phone_number::Column::E164,
        phone_number::Column::AccountId,
        phone_number::Column::Status,
        phone_number::Column::PurchasedAt,
    ]);
    let mut select = if by_key {
        let owners = |column: account::Column| {
            let select = Query::select()
                .column(column)
                .from(account::Entity)
                .and_where(
                    Expr::col((account::Entity, account::Column::Id))
                        .equals((phone_number::Entity, phone_number::Column::AccountId)),
                )
                .to_owned();
            Expr::SubQuery(None, Box::new(select.into()))
        };
        select
            .expr_as(owners(account::Column::Name), "account_name")
            .expr_as(owners(account::Column::Email), "account_email")
    } else {
        select
            .column_as(account::Column::Name, "account_name")
            .column_as(account::Column::Email, "account_email")
            .join(
                JoinType::LeftJoin,
                phone_number::Entity::belongs_to(account::Entity)
                    .from(phone_number::Column::AccountId)
                    .to(account::Column::Id)
                    .into(),
            )
    }
    .expr_as(Expr::exists(in_use), "in_use")
    .expr_as(Expr::exists(open), "open")
    .column_as(api_token::Column::TokenHash, "token_hash")
    .filter(one_of(phone_number::Column::Id, numbers.to_vec(), backend));
    QueryTrait::query(&mut select).join(JoinType::LeftJoin, api_token::Entity, owners_token);
    select
}

#[cfg(test)]
mod tests {
    use releasedesk_domain::RequestStatus;
    use sea_orm::{DbBackend, QueryTrait};
    use uuid::Uuid;

    use super::{OPEN, candidates_select};

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

//! The durable outbox: every email (and, later, every job) is a row here, written in
//! the transaction of the change that causes it, before anything is sent.

use std::collections::{HashSet, VecDeque};

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, sea_query::OnConflict};
use uuid::Uuid;

use crate::{
    StoreError,
    db::{PgQuery, one_of},
    entity::outbox,
};

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[schema(rename_all = "snake_case")]
pub enum OutboxStatus {
    Pending,
    Sending,
    Sent,
    /// Gave up after the bounded number of attempts; visible to staff.
    Dead,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sending => "sending",
            Self::Sent => "sent",
            Self::Dead => "dead",
        }
    }
}

/// The outbox kind of emails.
const EMAIL: &str = "email";
/// The outbox kind of jobs.
const JOB: &str = "job";

/// An email to queue: which template, to whom, and the values it renders.
pub(crate) struct Email<'a> {
    pub template: &'static str,
    pub to: &'a str,
    /// The event that causes the email; with `to` it makes the dedup key, so the
    /// same (event, recipient) is queued once however often the code runs.
    pub event_id: Uuid,
    pub payload: serde_json::Value,
}

/// Inserts outbox rows (one statement), skipping any whose dedup key exists.
async fn insert(
    txn: &impl ConnectionTrait,
    rows: Vec<outbox::ActiveModel>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    skipping_duplicates(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(())
}

fn skipping_duplicates(rows: Vec<outbox::ActiveModel>) -> sea_orm::InsertMany<outbox::ActiveModel> {
    outbox::Entity::insert_many(rows).on_conflict(
        OnConflict::column(outbox::Column::DedupKey)
            .do_nothing()
            .to_owned(),
    )
}

/// A new pending row, due at `at`.
fn pending(
    id: Uuid,
    kind: &str,
    topic: &str,
    recipient: Option<&str>,
    payload: serde_json::Value,
    dedup_key: String,
    at: DateTime<Utc>,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: Set(id),
        kind: Set(kind.into()),
        topic: Set(topic.into()),
        recipient: Set(recipient.map(str::to_owned)),
        payload: Set(payload),
        dedup_key: Set(dedup_key),
        status: Set(OutboxStatus::Pending.as_str().into()),
        attempts: Set(0),
        next_attempt_at: Set(at),
        last_error: Set(None),
        created_at: Set(at),
        sent_at: Set(None),
    }
}

/// Schedules a job durably: the row commits with the change that needs the job,
/// and a dispatcher hands it to the job queue. `key` makes it unique (one
/// `execute_release` per request, however often approval is retried).
pub(crate) async fn queue_job(
    txn: &impl ConnectionTrait,
    job: &'static str,
    key: Uuid,
    payload: serde_json::Value,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let id = releasedesk_domain::new_id();
    let row = pending(id, JOB, job, None, payload, format!("{job}:{key}"), at);
    insert(txn, vec![row]).await
}

pub(crate) async fn queue_email(
    txn: &impl ConnectionTrait,
    email: Email<'_>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    queue_emails(txn, vec![email], at, None).await?;
    Ok(())
}

/// Queues several emails in one statement. With `claim` (this process runs a
/// dispatcher with room for them: [`Store::email_claim`]) they are written
/// claimed by it, `sending` under its lease, and returned to be handed over
/// after the commit ([`Store::emails_committed`]): the dispatcher then sends
/// them without a claim of its own, one write per email fewer. Rows whose
/// dedup key exists are skipped, and not returned.
pub(crate) async fn queue_emails(
    txn: &impl ConnectionTrait,
    emails: Vec<Email<'_>>,
    at: DateTime<Utc>,
    claim: Option<std::time::Duration>,
) -> Result<Vec<OutboxItem>, StoreError> {
    let new = NewEmails::new(emails, at, claim);
    if !new.delivery.hands_over() {
        insert(txn, new.rows().collect()).await?;
        return Ok(Vec::new());
    }
    let inserted = skipping_duplicates(new.rows().collect())
        .exec_with_returning_keys(txn)
        .await?;
    Ok(new.written(inserted))
}

/// An email's dedup key: the same (event, template, recipient) is queued once.
/// (`INSERT_FILINGS` makes a filing's keys the same way in SQL.)
fn dedup_key(event_id: Uuid, template: &str, to: &str) -> String {
    format!("{event_id}:{template}:{to}")
}

/// How new emails are written: `pending` and due now, or claimed for this
/// process's dispatcher (see [`queue_emails`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    status: OutboxStatus,
    /// 1 for claimed rows, on their first attempt; 0 for pending ones.
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    created_at: DateTime<Utc>,
}

impl Delivery {
    pub(crate) fn new(at: DateTime<Utc>, claim: Option<std::time::Duration>) -> Self {
        let (status, next_attempt_at) = match claim {
            Some(lease) => (OutboxStatus::Sending, at + delta(lease)),
            None => (OutboxStatus::Pending, at),
        };
        Self {
            status,
            attempts: i32::from(claim.is_some()),
            next_attempt_at,
            created_at: at,
        }
    }

    /// Whether emails written this way go to this process's dispatcher once
    /// committed (claimed), rather than wait for a claim (pending).
    pub(crate) fn hands_over(self) -> bool {
        self.status != OutboxStatus::Pending
    }

    /// The email as the dispatcher gets it.
    pub(crate) fn item(
        self,
        id: Uuid,
        template: &str,
        to: &str,
        event_id: Uuid,
        payload: serde_json::Value,
    ) -> OutboxItem {
        OutboxItem {
            id,
            topic: template.into(),
            recipient: Some(to.into()),
            dedup_key: dedup_key(event_id, template, to),
            payload,
            attempts: self.attempts,
        }
    }

    /// Binds the next four parameters of a PostgreSQL statement that inserts
    /// emails: their status, attempts, next attempt and creation time.
    pub(crate) fn bind(self, query: PgQuery<'_>) -> PgQuery<'_> {
        query
            .bind(self.status.as_str())
            .bind(self.attempts)
            .bind(self.next_attempt_at)
            .bind(self.created_at)
    }
}

/// Emails about to be written, and how (see [`Delivery`]).
struct NewEmails {
    items: Vec<OutboxItem>,
    delivery: Delivery,
}

impl NewEmails {
    fn new(emails: Vec<Email<'_>>, at: DateTime<Utc>, claim: Option<std::time::Duration>) -> Self {
        let delivery = Delivery::new(at, claim);
        let items = emails
            .into_iter()
            .map(|email| {
                let id = releasedesk_domain::new_id();
                delivery.item(id, email.template, email.to, email.event_id, email.payload)
            })
            .collect();
        Self { items, delivery }
    }

    fn rows(&self) -> impl Iterator<Item = outbox::ActiveModel> + '_ {
        let delivery = self.delivery;
        self.items.iter().cloned().map(move |item| {
            email_row(
                item,
                delivery.status,
                delivery.next_attempt_at,
                delivery.created_at,
            )
        })
    }

    /// The emails to hand to this process's dispatcher, given the ids the
    /// insert wrote: the claimed ones written (none when written pending).
    fn written(self, inserted: impl IntoIterator<Item = Uuid>) -> Vec<OutboxItem> {
        if !self.delivery.hands_over() {
            return Vec::new();
        }
        let inserted: HashSet<Uuid> = inserted.into_iter().collect();
        let mut items = self.items;
        items.retain(|item| inserted.contains(&item.id));
        items
    }
}

/// The row of a new email: `pending` and due at `next_attempt_at`, or
/// `sending` (claimed) until then.
fn email_row(
    item: OutboxItem,
    status: OutboxStatus,
    next_attempt_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> outbox::ActiveModel {
    outbox::ActiveModel {
        status: Set(status.as_str().into()),
        attempts: Set(item.attempts),
        next_attempt_at: Set(next_attempt_at),
        ..pending(
            item.id,
            EMAIL,
            &item.topic,
            item.recipient.as_deref(),
            item.payload,
            item.dedup_key,
            at,
        )
    }
}

/// Emails written claimed for this process's dispatcher and not yet taken by it
/// (see [`queue_emails`]).
#[derive(Default)]
pub(crate) struct Adoption {
    /// The dispatcher's lease, once one runs in this process.
    lease: std::sync::OnceLock<std::time::Duration>,
    waiting: std::sync::Mutex<VecDeque<OutboxItem>>,
}

impl Adoption {
    /// The lease new emails are written under, while there is room.
    fn claim(&self) -> Option<std::time::Duration> {
        let lease = *self.lease.get()?;
        (self.waiting().len() < ADOPTED_AT_MOST).then_some(lease)
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, VecDeque<OutboxItem>> {
        // Nothing panics while holding it; a poisoned queue is still whole.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Emails waiting in memory for this process's dispatcher, at most: beyond,
/// new ones are written `pending` for any dispatcher to claim, so a slow
/// sender neither holds an unbounded backlog in memory nor lets leases run
/// out on emails it has not reached. Ten thousand is a few seconds of a
/// burst of filings (a few MiB), which the dispatcher sends long before a
/// lease runs out; at 1,000, a third of a 10,000-filing burst's emails went
/// `pending` and cost a claim (an UPDATE) each (docs/BENCHMARKS.md).
const ADOPTED_AT_MOST: usize = 10_000;

/// Rows not yet delivered (pending, or claimed and maybe abandoned), spelled
/// as the partial index `idx_outbox_undelivered` spells it.
pub(crate) const UNDELIVERED: &str = "status IN ('pending', 'sending')";

/// `status = '<status>'`, a literal: as parameters, neither database can see
/// which partial index (`idx_outbox_undelivered`, `idx_outbox_dead`) applies.
pub(crate) fn status_is(status: OutboxStatus) -> sea_orm::sea_query::SimpleExpr {
    // `as_str` is one of four fixed words: nothing to quote.
    sea_orm::sea_query::Expr::cust(format!("status = '{}'", status.as_str()))
}

/// The claim of [`Store::claim_outbox`]: up to `limit` due rows of `kind`,
/// `sending` until `lease` after `at`.
fn claim(
    kind: &str,
    limit: u64,
    lease: std::time::Duration,
    at: DateTime<Utc>,
) -> sea_orm::UpdateMany<outbox::Entity> {
    use sea_orm::{
        ColumnTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
        sea_query::{Expr, ExprTrait, LockBehavior, LockType},
    };
    let due = outbox::Entity::find()
        .select_only()
        .column(outbox::Column::Id)
        .filter(outbox::Column::Kind.eq(kind))
        // Literals, not parameters: the condition of `idx_outbox_undelivered`,
        // which both databases use only when they can see it is implied.
        .filter(Expr::cust(UNDELIVERED))
        .filter(outbox::Column::NextAttemptAt.lte(at))
        .order_by_asc(outbox::Column::NextAttemptAt)
        .limit(limit)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .into_query();
    outbox::Entity::update_many()
        .col_expr(
            outbox::Column::Status,
            Expr::value(OutboxStatus::Sending.as_str()),
        )
        .col_expr(
            outbox::Column::Attempts,
            Expr::col(outbox::Column::Attempts).add(1),
        )
        .col_expr(
            outbox::Column::NextAttemptAt,
            Expr::value(at + delta(lease)),
        )
        .filter(outbox::Column::Id.in_subquery(due))
}

/// One outbox row handed to a dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxItem {
    pub id: Uuid,
    /// The email template or job name.
    pub topic: String,
    pub recipient: Option<String>,
    pub payload: serde_json::Value,
    /// Stable per (event, recipient): use it as the email's Message-ID.
    pub dedup_key: String,
    /// Including this one.
    pub attempts: i32,
}

/// How a failed delivery is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: i32,
    pub base_delay: std::time::Duration,
    pub max_delay: std::time::Duration,
}

impl RetryPolicy {
    /// Exponential backoff: `base × 2^(attempts-1)`, capped.
    pub fn delay(&self, attempts: i32) -> std::time::Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        self.base_delay
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.max_delay)
    }
}

fn delta(duration: std::time::Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(duration).unwrap_or(chrono::TimeDelta::MAX)
}

impl crate::Store {
    /// This process runs an email dispatcher with `lease`: from now on the
    /// emails that filings and releases write are claimed for it as they are
    /// written (see [`queue_emails`]) and wait for it in
    /// [`Store::take_adopted_emails`]. Rows it never reaches (it died) go back
    /// to any dispatcher when the lease runs out, as a claim's do. The first
    /// lease set stays.
    pub fn adopt_new_emails(&self, lease: std::time::Duration) {
        let _ = self.shared.adoption.lease.set(lease);
    }

    /// Up to `limit` emails written claimed for this process, oldest first.
    pub fn take_adopted_emails(&self, limit: usize) -> Vec<OutboxItem> {
        let mut waiting = self.shared.adoption.waiting();
        let n = limit.min(waiting.len());
        waiting.drain(..n).collect()
    }

    /// The lease to write new emails under, when this process's dispatcher
    /// takes them and has room.
    pub(crate) fn email_claim(&self) -> Option<std::time::Duration> {
        self.shared.adoption.claim()
    }

    /// After a commit that wrote emails (and no job): hands the ones written
    /// claimed to this process's dispatcher, and wakes it.
    pub(crate) fn emails_committed(&self, claimed: Vec<OutboxItem>) {
        if !claimed.is_empty() {
            self.shared.adoption.waiting().extend(claimed);
        }
        self.wake_mailer();
    }

    /// Claims up to `limit` due rows of `kind` (`email` or `job`): pending ones
    /// whose time has come, and `sending` ones whose claimer's lease ran out (it
    /// died). Each claimed row is `sending` until `lease` from now; they come
    /// oldest first. One statement (`UPDATE … WHERE id IN (SELECT … LIMIT n)
    /// RETURNING`); on PostgreSQL concurrent dispatchers skip each other's rows
    /// (`FOR UPDATE SKIP LOCKED`). Emails are background writes (see
    /// [`WriteGate`](crate::db::WriteGate)): on SQLite they wait for a gap
    /// between the writes that requests wait on.
    pub async fn claim_outbox(
        &self,
        kind: &str,
        limit: u64,
        lease: std::time::Duration,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let turn = self.outbox_turn(kind).await;
        let mut rows = claim(kind, limit, lease, releasedesk_domain::time::now())
            .exec_with_returning(turn.db())
            .await?;
        rows.sort_by_key(|row| (row.created_at, row.id));
        Ok(rows
            .into_iter()
            .map(|row| OutboxItem {
                id: row.id,
                topic: row.topic,
                recipient: row.recipient,
                payload: row.payload,
                dedup_key: row.dedup_key,
                attempts: row.attempts,
            })
            .collect())
    }

    /// Marks claimed rows of `kind` delivered, in one statement: a dispatcher
    /// settles a batch with one commit instead of one per row.
    pub async fn outbox_sent(&self, kind: &str, ids: &[Uuid]) -> Result<(), StoreError> {
        use sea_orm::{QueryFilter, sea_query::Expr};
        if ids.is_empty() {
            return Ok(());
        }
        let turn = self.outbox_turn(kind).await;
        outbox::Entity::update_many()
            .col_expr(
                outbox::Column::Status,
                Expr::value(OutboxStatus::Sent.as_str()),
            )
            .col_expr(
                outbox::Column::SentAt,
                Expr::value(releasedesk_domain::time::now()),
            )
            .col_expr(
                outbox::Column::LastError,
                Expr::value(Option::<String>::None),
            )
            .filter(one_of(
                outbox::Column::Id,
                ids.to_vec(),
                turn.db().get_database_backend(),
            ))
            .exec(turn.db())
            .await?;
        Ok(())
    }

    /// The write turn for the dispatcher's bookkeeping of `kind`: emails in the
    /// background, jobs (a release waits on them) in the foreground.
    async fn outbox_turn(&self, kind: &str) -> crate::db::WriteTurn {
        match kind {
            EMAIL => self.shared.write_gate.background_turn().await,
            _ => self.shared.write_gate.turn().await,
        }
    }

    /// The plan of a dispatcher's claim of `kind`'s due rows (see
    /// [`Store::claim_outbox`]): it must read the partial index of
    /// undelivered rows, never every email ever sent.
    pub async fn claim_plan(&self, kind: &str) -> Result<Vec<String>, StoreError> {
        use sea_orm::QueryTrait;
        let backend = self.shared.db.get_database_backend();
        let at = releasedesk_domain::time::now();
        let claim = claim(kind, 100, std::time::Duration::from_secs(60), at);
        self.plan(claim.build(backend)).await
    }

    /// Records a failed delivery: retried after the policy's backoff, or `dead`
    /// when permanent or out of attempts. Returns the new status.
    pub async fn outbox_failed(
        &self,
        item: &OutboxItem,
        error: &str,
        permanent: bool,
        policy: &RetryPolicy,
    ) -> Result<OutboxStatus, StoreError> {
        use sea_orm::{ColumnTrait, QueryFilter, sea_query::Expr};
        let dead = permanent || item.attempts >= policy.max_attempts;
        let status = if dead {
            OutboxStatus::Dead
        } else {
            OutboxStatus::Pending
        };
        let next = releasedesk_domain::time::now() + delta(policy.delay(item.attempts));
        let error: String = error.chars().take(1000).collect();
        let turn = self.shared.write_gate.turn().await;
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::value(status.as_str()))
            .col_expr(outbox::Column::NextAttemptAt, Expr::value(next))
            .col_expr(outbox::Column::LastError, Expr::value(error))
            .filter(outbox::Column::Id.eq(item.id))
            .exec(turn.db())
            .await?;
        Ok(status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_claim_names_the_undelivered_statuses_as_the_index_does() {
        assert_eq!(
            UNDELIVERED,
            format!(
                "status IN ('{}', '{}')",
                OutboxStatus::Pending.as_str(),
                OutboxStatus::Sending.as_str()
            )
        );
    }

    #[test]
    fn emails_are_written_claimed_only_for_a_dispatcher_with_room() {
        let adoption = Adoption::default();
        assert_eq!(adoption.claim(), None, "no dispatcher in this process");
        let lease = Duration::from_secs(60);
        adoption.lease.set(lease).unwrap();
        assert_eq!(adoption.claim(), Some(lease));
        let item = OutboxItem {
            id: Uuid::nil(),
            topic: "request_filed".into(),
            recipient: Some("ops@acme.example".into()),
            payload: serde_json::json!({}),
            dedup_key: "k".into(),
            attempts: 1,
        };
        adoption
            .waiting()
            .extend(std::iter::repeat_n(item, ADOPTED_AT_MOST));
        assert_eq!(
            adoption.claim(),
            None,
            "a full hand-over writes pending rows"
        );
        adoption.waiting().pop_front();
        assert_eq!(adoption.claim(), Some(lease));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let policy = RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=7).map(|n| policy.delay(n).as_secs()).collect();
        assert_eq!(delays, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(policy.delay(1000).as_secs(), 60);
    }
}

/// An outbox row as staff see it (no payload: it may hold personal data).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct OutboxView {
    pub id: Uuid,
    pub kind: String,
    pub topic: String,
    pub recipient: Option<String>,
    #[schema(value_type = OutboxStatus)]
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub next_attempt_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl crate::Store {
    /// Outbox rows in `status` (e.g. `dead`: deliveries given up on), oldest first.
    pub async fn list_outbox(
        &self,
        status: OutboxStatus,
        page: crate::PageRequest,
    ) -> Result<crate::Page<OutboxView>, StoreError> {
        use sea_orm::QueryFilter;
        let query = outbox::Entity::find().filter(status_is(status));
        let page =
            crate::paging::by_id(&self.shared.db, query, outbox::Column::Id, &page, |r| r.id)
                .await?;
        Ok(page.map(|row| OutboxView {
            id: row.id,
            kind: row.kind,
            topic: row.topic,
            recipient: row.recipient,
            status: row.status,
            attempts: row.attempts,
            last_error: row.last_error,
            next_attempt_at: row.next_attempt_at,
            created_at: row.created_at,
            sent_at: row.sent_at,
        }))
    }
}

impl std::str::FromStr for OutboxStatus {
    type Err = releasedesk_domain::DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::Pending, Self::Sending, Self::Sent, Self::Dead]
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| {
                releasedesk_domain::DomainError::invalid(
                    "status",
                    "must be one of: pending, sending, sent, dead",
                )
            })
    }
}

//! The durable outbox: every email (and, later, every job) is a row here, written in
//! the transaction of the change that causes it, before anything is sent.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, sea_query::OnConflict};
use uuid::Uuid;

use crate::{StoreError, entity::outbox};

/// Where an outbox row is in its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An email to queue: which template, to whom, and the values it renders.
pub(crate) struct Email<'a> {
    pub template: &'static str,
    pub to: &'a str,
    /// The event that causes the email; with `to` it makes the dedup key, so the
    /// same (event, recipient) is queued once however often the code runs.
    pub event_id: Uuid,
    pub payload: serde_json::Value,
}

/// Inserts an outbox row unless one with the same dedup key exists.
async fn insert(txn: &impl ConnectionTrait, row: outbox::ActiveModel) -> Result<(), StoreError> {
    outbox::Entity::insert(row)
        .on_conflict(
            OnConflict::column(outbox::Column::DedupKey)
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(txn)
        .await?;
    Ok(())
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
    insert(
        txn,
        outbox::ActiveModel {
            id: Set(releasedesk_domain::new_id()),
            kind: Set("job".into()),
            topic: Set(job.into()),
            recipient: Set(None),
            payload: Set(payload),
            dedup_key: Set(format!("{job}:{key}")),
            status: Set(OutboxStatus::Pending.as_str().into()),
            attempts: Set(0),
            next_attempt_at: Set(at),
            last_error: Set(None),
            created_at: Set(at),
            sent_at: Set(None),
        },
    )
    .await
}

pub(crate) async fn queue_email(
    txn: &impl ConnectionTrait,
    email: Email<'_>,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let row = outbox::ActiveModel {
        id: Set(releasedesk_domain::new_id()),
        kind: Set("email".into()),
        topic: Set(email.template.into()),
        recipient: Set(Some(email.to.to_owned())),
        payload: Set(email.payload),
        dedup_key: Set(format!(
            "{}:{}:{}",
            email.event_id, email.template, email.to
        )),
        status: Set(OutboxStatus::Pending.as_str().into()),
        attempts: Set(0),
        next_attempt_at: Set(at),
        last_error: Set(None),
        created_at: Set(at),
        sent_at: Set(None),
    };
    insert(txn, row).await
}

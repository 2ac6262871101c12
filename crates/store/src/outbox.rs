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

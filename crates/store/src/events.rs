//! The release timeline: one row per change, written in the change's transaction.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{StoreError, entity::release_event};

/// Who did something, as written in the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Actor {
    Customer(Uuid),
    Staff(Uuid),
    System,
}

impl Actor {
    /// What a customer's label begins with; the account's id follows.
    pub(crate) const CUSTOMER_PREFIX: &str = "customer:";

    pub fn label(&self) -> String {
        match self {
            Actor::Customer(account) => format!("{}{account}", Self::CUSTOMER_PREFIX),
            Actor::Staff(staff) => format!("staff:{staff}"),
            Actor::System => "system".to_owned(),
        }
    }
}

/// One timeline entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventView {
    pub at: DateTime<Utc>,
    pub kind: String,
    pub actor: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<release_event::Model> for EventView {
    fn from(row: release_event::Model) -> Self {
        Self {
            at: row.at,
            kind: row.kind,
            actor: row.actor,
            note: row.note,
        }
    }
}

/// Appends an event; returns its id (outbox rows derive their dedup key from it).
pub(crate) async fn record(
    txn: &impl ConnectionTrait,
    request_id: Uuid,
    kind: &str,
    actor: Actor,
    note: Option<&str>,
    at: DateTime<Utc>,
) -> Result<Uuid, StoreError> {
    let [id] = record_all(txn, request_id, [(kind, note)], actor, at).await?;
    Ok(id)
}

/// Appends several events of one request at one moment in one statement, in
/// order; returns their ids.
pub(crate) async fn record_all<const N: usize>(
    txn: &impl ConnectionTrait,
    request_id: Uuid,
    events: [(&str, Option<&str>); N],
    actor: Actor,
    at: DateTime<Utc>,
) -> Result<[Uuid; N], StoreError> {
    let ids: [Uuid; N] = std::array::from_fn(|_| releasedesk_domain::new_id());
    let rows = ids
        .iter()
        .zip(events)
        .map(|(id, (kind, note))| row(*id, request_id, kind, actor, note, at));
    release_event::Entity::insert_many(rows)
        .exec_without_returning(txn)
        .await?;
    Ok(ids)
}

/// The row of one event.
pub(crate) fn row(
    id: Uuid,
    request_id: Uuid,
    kind: &str,
    actor: Actor,
    note: Option<&str>,
    at: DateTime<Utc>,
) -> release_event::ActiveModel {
    release_event::ActiveModel {
        id: Set(id),
        request_id: Set(request_id),
        at: Set(at),
        kind: Set(kind.to_owned()),
        actor: Set(actor.label()),
        note: Set(note.map(str::to_owned)),
    }
}

pub(crate) async fn timeline(
    db: &impl ConnectionTrait,
    request_id: Uuid,
) -> Result<Vec<EventView>, StoreError> {
    let rows = release_event::Entity::find()
        .filter(release_event::Column::RequestId.eq(request_id))
        .order_by_asc(release_event::Column::Id)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(EventView::from).collect())
}

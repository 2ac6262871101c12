//! Read-only figures for operators (`/metrics`): how much work is waiting.

use chrono::{DateTime, Utc};
use releasedesk_domain::RequestStatus;
use sea_orm::{
    ColumnTrait, EntityTrait, QueryFilter, QuerySelect,
    sea_query::{Expr, Func},
};

use crate::{
    OutboxStatus, Store, StoreError,
    entity::{outbox, release_request},
};

/// Statuses whose counts stay small (work in progress); finished requests grow
/// without bound and would turn every scrape into a scan.
const OPEN: [RequestStatus; 4] = [
    RequestStatus::Pending,
    RequestStatus::Approved,
    RequestStatus::Releasing,
    RequestStatus::Failed,
];

/// A snapshot of the queues.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Requests per open status (every one of them, zeros included).
    pub requests: Vec<(RequestStatus, u64)>,
    /// When the oldest pending request was filed.
    pub oldest_pending: Option<DateTime<Utc>>,
    /// Outbox rows per kind (`email`, `job`) and status (`pending`, `sending`,
    /// `dead`); sent rows are history, not backlog.
    pub outbox: Vec<(String, OutboxStatus, u64)>,
}

impl Store {
    pub async fn queue_stats(&self) -> Result<QueueStats, StoreError> {
        let counted: Vec<(String, i64)> = release_request::Entity::find()
            .select_only()
            .column(release_request::Column::Status)
            .column_as(release_request::Column::Id.count(), "n")
            .filter(release_request::Column::Status.is_in(OPEN.map(RequestStatus::as_str)))
            .group_by(release_request::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let requests = OPEN
            .iter()
            .map(|status| {
                let n = counted
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| u64::try_from(*n).unwrap_or(0));
                (*status, n)
            })
            .collect();

        let oldest_pending: Option<Option<DateTime<Utc>>> = release_request::Entity::find()
            .select_only()
            .column_as(
                Expr::expr(Func::min(Expr::col(release_request::Column::RequestedAt))),
                "oldest",
            )
            .filter(release_request::Column::Status.eq(RequestStatus::Pending.as_str()))
            .into_tuple()
            .one(&self.db)
            .await?;

        let backlog = [
            OutboxStatus::Pending,
            OutboxStatus::Sending,
            OutboxStatus::Dead,
        ];
        // One statement per partial index (undelivered rows, dead rows): never
        // through the sent history, and SQLite would not combine the two.
        let mut rows: Vec<(String, String, i64)> = Vec::new();
        for rows_of in [
            Expr::cust(crate::outbox::UNDELIVERED),
            crate::outbox::status_is(OutboxStatus::Dead),
        ] {
            let counted: Vec<(String, String, i64)> = outbox::Entity::find()
                .select_only()
                .column(outbox::Column::Kind)
                .column(outbox::Column::Status)
                .column_as(outbox::Column::Id.count(), "n")
                .filter(rows_of)
                .group_by(outbox::Column::Kind)
                .group_by(outbox::Column::Status)
                .into_tuple()
                .all(&self.db)
                .await?;
            rows.extend(counted);
        }
        let mut outbox = Vec::new();
        for kind in ["email", "job"] {
            for status in backlog {
                let n = rows
                    .iter()
                    .find(|(k, s, _)| k == kind && s == status.as_str())
                    .map_or(0, |(_, _, n)| u64::try_from(*n).unwrap_or(0));
                outbox.push((kind.to_owned(), status, n));
            }
        }

        Ok(QueueStats {
            requests,
            oldest_pending: oldest_pending.flatten(),
            outbox,
        })
    }
}

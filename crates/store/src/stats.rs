//! Read-only figures for operators (`/metrics`): how much work is waiting.

use chrono::{DateTime, Utc};
use releasedesk_domain::RequestStatus;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
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
            .all(&self.shared.db)
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
            .one(&self.shared.db)
            .await?;

        let backlog = [
            OutboxStatus::Pending,
            OutboxStatus::Sending,
            OutboxStatus::Dead,
        ];
        let mut rows: Vec<(String, String, i64)> = Vec::new();
        for counts in backlog_counts() {
            rows.extend(
                counts
                    .into_tuple::<(String, String, i64)>()
                    .all(&self.shared.db)
                    .await?,
            );
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

    /// The plans of the outbox's backlog counts, one per statement, for tests
    /// and operators to see that they read the partial indexes of undelivered
    /// and dead rows, not the history of sent ones.
    pub async fn backlog_plans(&self) -> Result<Vec<Vec<String>>, StoreError> {
        use sea_orm::QueryTrait;
        let backend = self.shared.db.get_database_backend();
        let mut plans = Vec::new();
        for counts in backlog_counts() {
            plans.push(self.plan(counts.build(backend)).await?);
        }
        Ok(plans)
    }
}

/// Outbox rows by kind and status, one statement per partial index
/// (undelivered rows, dead rows): SQLite would not combine the two.
fn backlog_counts() -> [sea_orm::Select<outbox::Entity>; 2] {
    [
        Expr::cust(crate::outbox::UNDELIVERED),
        crate::outbox::status_is(OutboxStatus::Dead),
    ]
    .map(|rows_of| {
        outbox::Entity::find()
            .select_only()
            .column(outbox::Column::Kind)
            .column(outbox::Column::Status)
            .column_as(outbox::Column::Id.count(), "n")
            .filter(rows_of)
            .group_by(outbox::Column::Kind)
            .group_by(outbox::Column::Status)
    })
}

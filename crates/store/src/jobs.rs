//! Upkeep of the job queue's own tables (apalis keeps them on our database).

use std::time::Duration;

use sea_orm::{ConnectionTrait, Statement, Value};

use crate::{Backend, Store, StoreError};

/// The purge on SQLite. Its condition names that of apalis's partial index of
/// finished jobs (`idx_jobs_completed_done_at`), as a statement must for SQLite
/// to use a partial index: the worker drops the wider indexes on `status`
/// (`releasedesk_worker::queue`), and without it this would read every job.
pub const SQLITE_PURGE: &str = "DELETE FROM Jobs WHERE rowid IN (SELECT rowid FROM Jobs \
    WHERE status IN ('Done', 'Failed', 'Killed') AND done_at IS NOT NULL \
    AND status IN ('Done', 'Killed') AND done_at < ? LIMIT ?)";

impl Store {
    /// Deletes up to `limit` jobs that finished (`Done` or `Killed`) more than
    /// `older_than` ago. Finished rows slow the queue's acks as they pile up; the
    /// history that matters lives in `release_events`. Returns how many went.
    pub async fn purge_finished_jobs(
        &self,
        older_than: Duration,
        limit: u64,
    ) -> Result<u64, StoreError> {
        let cutoff = releasedesk_domain::time::now()
            - chrono::TimeDelta::from_std(older_than).unwrap_or(chrono::TimeDelta::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (backend, sql, values): (_, &str, Vec<Value>) = match self.backend() {
            Backend::Sqlite => (
                sea_orm::DbBackend::Sqlite,
                SQLITE_PURGE,
                vec![cutoff.timestamp().into(), limit.into()],
            ),
            Backend::Postgres => (
                sea_orm::DbBackend::Postgres,
                "DELETE FROM apalis.jobs WHERE id IN (SELECT id FROM apalis.jobs \
                 WHERE status IN ('Done', 'Killed') AND done_at < $1 LIMIT $2)",
                vec![cutoff.into(), limit.into()],
            ),
        };
        // Upkeep nobody waits on: after the foreground writers, like the
        // emails' bookkeeping.
        let turn = self.shared.write_gate.background_turn().await;
        let result = turn
            .db()
            .execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
        Ok(result.rows_affected())
    }
}

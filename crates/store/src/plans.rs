//! The database's plans for statements that must be served by an index, for
//! operators and tests to see that they are (`EXPLAIN QUERY PLAN` on SQLite,
//! `EXPLAIN` on PostgreSQL, one line per step).

use sea_orm::{ConnectionTrait, QueryTrait, Statement, TransactionTrait};
use uuid::Uuid;

use crate::{Backend, Store, StoreError, execution, filing};

/// The plans of the two group-commit statements whose cost must not grow with
/// the table: what a group of filings and a group of releases look up.
#[derive(Debug, Clone)]
pub struct GroupPlans {
    /// The group's numbers, with their owner, whether each is in use or has
    /// an open request, and the group's tokens of its owner.
    pub open_requests: Vec<String>,
    /// The guarded UPDATE that takes the group's requests for release.
    pub take_releases: Vec<String>,
}

impl Store {
    /// [`GroupPlans`] for a group of `size` (made-up) ids, each filing with a
    /// token of its own.
    pub async fn group_plans(&self, size: usize) -> Result<GroupPlans, StoreError> {
        let backend = self.shared.db.get_database_backend();
        let ids: Vec<Uuid> = (0..size).map(|_| releasedesk_domain::new_id()).collect();
        let tokens: Vec<String> = ids
            .iter()
            .map(|id| format!("{:064x}", id.as_u128()))
            .collect();
        let open_requests = filing::candidates_select(&ids, &tokens, backend).build(backend);
        let take_releases =
            execution::released_together(&ids, releasedesk_domain::time::now()).build(backend);
        Ok(GroupPlans {
            open_requests: self.plan(open_requests).await?,
            take_releases: self.plan(take_releases).await?,
        })
    }

    /// The plan of `sql`, a statement without bound parameters (its
    /// placeholders unbound), one line per step: for statements the store
    /// does not build, such as the job queue's own.
    pub async fn plan_of_sql(&self, sql: &str) -> Result<Vec<String>, StoreError> {
        let backend = self.shared.db.get_database_backend();
        self.plan(Statement::from_string(backend, sql)).await
    }

    /// The plan of `statement`, one line per step.
    pub(crate) async fn plan(&self, statement: Statement) -> Result<Vec<String>, StoreError> {
        let (explain, column) = match self.backend() {
            Backend::Sqlite => ("EXPLAIN QUERY PLAN", "detail"),
            Backend::Postgres => ("EXPLAIN", "QUERY PLAN"),
        };
        let explained = Statement::from_sql_and_values(
            statement.db_backend,
            format!("{explain} {}", statement.sql),
            statement.values.map(|v| v.0).unwrap_or_default(),
        );
        // One connection for both statements. SQLite checks a connection's
        // cached schema when a statement starts reading, which EXPLAIN QUERY
        // PLAN does not: without the read first, a connection idle since a
        // schema change on another (a migration) explains with what is gone.
        let txn = self.shared.db.unguarded().begin().await?;
        if self.backend() == Backend::Sqlite {
            txn.execute_unprepared("SELECT count(*) FROM sqlite_schema")
                .await?;
        }
        let rows = txn.query_all_raw(explained).await?;
        txn.commit().await?;
        rows.iter()
            .map(|row| row.try_get::<String>("", column).map_err(StoreError::from))
            .collect()
    }
}

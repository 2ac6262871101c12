//! The database's plans for statements that must be served by an index, for
//! operators and tests to see that they are (`EXPLAIN QUERY PLAN` on SQLite,
//! `EXPLAIN` on PostgreSQL, one line per step).

use sea_orm::{
    ConnectionTrait, DbBackend, DbErr, QueryTrait, Statement, TransactionTrait, Value,
    sea_query::ArrayType,
};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::{Backend, INSERT_FILINGS, Store, StoreError, execution, filing};

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

/// Tables with fewer rows than this when analysed keep no statistics (see
/// [`Store::forget_small_table_statistics`]).
pub const SMALL_TABLE_ROWS: u64 = 10_000;

/// PostgreSQL: the plans the filing writer's sessions run their two
/// statements with (`db::KeyedSessions`).
#[derive(Debug, Clone)]
pub struct FilingPlans {
    /// [`INSERT_FILINGS`]: a group's checks and writes.
    pub insert: Vec<String>,
    /// The read of the filings it left out, to say why.
    pub left_out: Vec<String>,
}

impl Store {
    /// [`GroupPlans`] for a group of `size` (made-up) ids, each filing with a
    /// token of its own.
    pub async fn group_plans(&self, size: usize) -> Result<GroupPlans, StoreError> {
        let backend = self.shared.db.get_database_backend();
        let (ids, tokens) = made_up_group(size);
        let open_requests = filing::candidates_select(&ids, &tokens, backend).build(backend);
        let take_releases =
            execution::released_together(&ids, releasedesk_domain::time::now()).build(backend);
        Ok(GroupPlans {
            open_requests: self.plan(open_requests).await?,
            take_releases: self.plan(take_releases).await?,
        })
    }

    /// PostgreSQL: [`FilingPlans`] as the filing writer's sessions would make
    /// them now, from the tables as they are (`None` on SQLite, which has no
    /// such sessions). Those sessions plan each statement once, for any
    /// parameters, and keep the plan as the tables grow; a plan must
    /// therefore find every row by key whatever the tables' sizes when it was
    /// made.
    pub async fn filing_plans(&self) -> Result<Option<FilingPlans>, StoreError> {
        let Some(sessions) = &self.shared.filing_sessions else {
            return Ok(None);
        };
        let (ids, tokens) = made_up_group(1);
        let left_out = filing::candidates_select(&ids, &tokens, DbBackend::Postgres)
            .build(DbBackend::Postgres);
        let mut session = sessions
            .pool
            .acquire()
            .await
            .map_err(StoreError::from_sqlx)?;
        let left_out_types = left_out
            .values
            .iter()
            .flat_map(|values| values.0.iter())
            .map(parameter_type)
            .collect::<Result<Vec<_>, _>>()?;
        let plans = async {
            Ok(FilingPlans {
                // Its parameters' types are written in it or follow from the columns.
                insert: generic_plan(&mut session, INSERT_FILINGS, &[]).await?,
                left_out: generic_plan(&mut session, &left_out.sql, &left_out_types).await?,
            })
        }
        .await;
        if plans.is_err() {
            // It may still hold a statement prepared under the plan's name.
            session.close_on_drop();
        }
        plans.map(Some)
    }

    /// SQLite: forgets the statistics of the tables that were small when
    /// analysed (under [`SMALL_TABLE_ROWS`] rows), after a start's migrations.
    ///
    /// The job queue's set-up runs `PRAGMA optimize`, which analyses the
    /// tables not analysed yet (every one of ours, at a process's start). On a
    /// database still nearly empty that records a handful of rows per table,
    /// and SQLite's planner then reads such a table whole rather than through
    /// its index, and keeps doing so as the table grows, until the optimize of
    /// a later start finds it many times larger: a filing group read every
    /// number, account, token, agent and request, for each group.
    /// Without statistics the planner takes every table to be large and finds
    /// rows by key; a table that is large when analysed keeps its statistics.
    /// Hold [`Store::lock_migrations`] around it.
    pub async fn forget_small_table_statistics(&self) -> Result<(), StoreError> {
        if self.backend() != Backend::Sqlite {
            return Ok(());
        }
        let db = self.shared.db.unguarded();
        let analysed = db
            .query_all_raw(Statement::from_string(
                DbBackend::Sqlite,
                "SELECT name FROM sqlite_schema WHERE name IN ('sqlite_stat1', 'sqlite_stat4') \
                 ORDER BY name DESC",
            ))
            .await?;
        if analysed.is_empty() {
            return Ok(());
        }
        // A statistic's first number is the rows of its table (or index).
        // `sqlite_stat1` says which tables were small, so it goes last.
        let small = format!(
            "SELECT tbl FROM sqlite_stat1 GROUP BY tbl \
             HAVING max(CAST(stat AS INTEGER)) < {SMALL_TABLE_ROWS}"
        );
        let mut forget = String::new();
        for table in analysed {
            let table: String = table.try_get("", "name")?;
            forget.push_str(&format!("DELETE FROM {table} WHERE tbl IN ({small}); "));
        }
        forget.push_str("ANALYZE sqlite_schema");
        db.execute_unprepared(&forget).await?;
        Ok(())
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

/// `size` made-up number ids, each with a token hash of its own, for plans.
fn made_up_group(size: usize) -> (Vec<Uuid>, Vec<String>) {
    let ids: Vec<Uuid> = (0..size).map(|_| releasedesk_domain::new_id()).collect();
    let tokens = ids
        .iter()
        .map(|id| format!("{:064x}", id.as_u128()))
        .collect();
    (ids, tokens)
}

/// The plan `session` makes of `sql`, a statement with parameters `$1` to
/// `$n` of `types` (or of the types PostgreSQL infers, if none are given),
/// prepared as the session prepares it: under `force_generic_plan` the plan of
/// any parameters (here all NULL). One line per step.
async fn generic_plan(
    session: &mut PgConnection,
    sql: &str,
    types: &[&str],
) -> Result<Vec<String>, StoreError> {
    const NAME: &str = "releasedesk_plan";
    let parameters = vec!["NULL"; parameter_count(sql)].join(", ");
    let types = match types {
        [] => String::new(),
        types => format!("({})", types.join(", ")),
    };
    let prepare = format!("PREPARE {NAME} {types} AS {sql}");
    sqlx::raw_sql(AssertSqlSafe(prepare))
        .execute(&mut *session)
        .await
        .map_err(StoreError::from_sqlx)?;
    let explain = format!("EXPLAIN EXECUTE {NAME}({parameters})");
    let plan = sqlx::query_scalar(AssertSqlSafe(explain))
        .fetch_all(&mut *session)
        .await;
    let deallocate = format!("DEALLOCATE {NAME}");
    sqlx::raw_sql(AssertSqlSafe(deallocate))
        .execute(&mut *session)
        .await
        .map_err(StoreError::from_sqlx)?;
    plan.map_err(StoreError::from_sqlx)
}

/// The PostgreSQL type sea-query's `value` is bound as, for the kinds of
/// value the filing writer's read binds.
fn parameter_type(value: &Value) -> Result<&'static str, StoreError> {
    match value {
        Value::Bool(_) => Ok("boolean"),
        Value::Int(_) => Ok("int4"),
        Value::BigInt(_) | Value::BigUnsigned(_) => Ok("int8"),
        Value::String(_) => Ok("text"),
        Value::Uuid(_) => Ok("uuid"),
        Value::Array(ArrayType::String, _) => Ok("text[]"),
        Value::Array(ArrayType::Uuid, _) => Ok("uuid[]"),
        other => Err(StoreError::Database(DbErr::Custom(format!(
            "no PostgreSQL type known for a parameter {other:?}"
        )))),
    }
}

/// The highest `$n` in `sql`.
fn parameter_count(sql: &str) -> usize {
    sql.split('$')
        .skip(1)
        .filter_map(|after| {
            let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            after[..digits].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::parameter_count;

    #[test]
    fn the_parameter_count_is_the_highest_placeholder() {
        assert_eq!(parameter_count("SELECT $2, $12 || '$', $3"), 12);
        assert_eq!(parameter_count("SELECT 1"), 0);
        assert_eq!(parameter_count(crate::INSERT_FILINGS), 25);
    }
}

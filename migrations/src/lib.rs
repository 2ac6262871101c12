//! The ReleaseDesk schema: one set of sea-orm migrations for SQLite and PostgreSQL.

pub use sea_orm_migration::{prelude::*, seaql_migrations};

mod m20261123_000001_initial;
mod m20261123_000002_execution;
mod m20261123_000003_idempotency;
mod m20261123_000004_outbox_notify;
mod m20261123_000005_outbox_due_by_kind;
mod m20261202_000006_partial_indexes;
mod m20261204_000007_assigned_numbers;

pub use m20261123_000004_outbox_notify::CHANNEL as OUTBOX_CHANNEL;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        atomic(vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_execution::Migration),
            Box::new(m20261123_000003_idempotency::Migration),
            Box::new(m20261123_000004_outbox_notify::Migration),
            Box::new(m20261123_000005_outbox_due_by_kind::Migration),
            Box::new(m20261202_000006_partial_indexes::Migration),
            Box::new(m20261204_000007_assigned_numbers::Migration),
        ])
    }
}

/// `migrations`, each run in a transaction of its own together with its row
/// in `seaql_migrations`, on SQLite too: sea-orm-migration does that on
/// PostgreSQL only unless a migration asks. A process stopped or failing
/// halfway through one leaves it wholly undone, to be run again at the next
/// start, never half-applied (both databases roll DDL back).
fn atomic(migrations: Vec<Box<dyn MigrationTrait>>) -> Vec<Box<dyn MigrationTrait>> {
    migrations
        .into_iter()
        .map(|migration| Box::new(Atomic(migration)) as Box<dyn MigrationTrait>)
        .collect()
}

struct Atomic(Box<dyn MigrationTrait>);

impl MigrationName for Atomic {
    fn name(&self) -> &str {
        self.0.name()
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Atomic {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.up(manager).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        self.0.down(manager).await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Runs `statements` in order, for migrations written as fixed SQL that both
/// databases accept.
async fn run_statements(manager: &SchemaManager<'_>, statements: &[&str]) -> Result<(), DbErr> {
    let db = manager.get_connection();
    for statement in statements {
        db.execute_unprepared(statement).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection};

    use super::*;

    #[test]
    fn every_migration_runs_in_a_transaction() {
        for migration in Migrator::migrations() {
            assert_eq!(
                migration.use_transaction(),
                Some(true),
                "{}",
                migration.name()
            );
        }
    }

    /// Creates a table, then fails, as a process stopped halfway would.
    struct CutShort;

    impl MigrationName for CutShort {
        fn name(&self) -> &str {
            "m20990101_000001_cut_short"
        }
    }

    #[async_trait::async_trait]
    impl MigrationTrait for CutShort {
        async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
            manager
                .get_connection()
                .execute_unprepared("CREATE TABLE half_done (id INTEGER PRIMARY KEY)")
                .await?;
            Err(DbErr::Migration("stopped halfway".into()))
        }
    }

    struct CutShortMigrator;

    #[async_trait::async_trait]
    impl MigratorTrait for CutShortMigrator {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            atomic(vec![Box::new(CutShort)])
        }
    }

    async fn tables(db: &DatabaseConnection, name: &str) -> usize {
        db.query_all_raw(sea_orm_migration::sea_orm::Statement::from_string(
            db.get_database_backend(),
            format!("SELECT name FROM sqlite_master WHERE type = 'table' AND name = '{name}'"),
        ))
        .await
        .unwrap()
        .len()
    }

    /// On SQLite a migration that fails halfway leaves nothing behind: not its
    /// first statement's table, nor a record that it ran; run again, it fails
    /// again in the same place instead of on a table that already exists.
    #[tokio::test]
    async fn a_migration_cut_short_on_sqlite_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("m.db").display());
        let db = Database::connect(url).await.unwrap();
        for _ in 0..2 {
            let error = CutShortMigrator::up(&db, None).await.unwrap_err();
            assert!(error.to_string().contains("stopped halfway"), "{error}");
            assert_eq!(tables(&db, "half_done").await, 0, "half a migration stayed");
            assert!(
                CutShortMigrator::get_applied_migrations(&db)
                    .await
                    .unwrap()
                    .is_empty()
            );
        }
        db.close().await.unwrap();
    }
}

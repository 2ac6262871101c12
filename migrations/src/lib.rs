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
        vec![
            Box::new(m20261123_000001_initial::Migration),
            Box::new(m20261123_000002_execution::Migration),
            Box::new(m20261123_000003_idempotency::Migration),
            Box::new(m20261123_000004_outbox_notify::Migration),
            Box::new(m20261123_000005_outbox_due_by_kind::Migration),
            Box::new(m20261202_000006_partial_indexes::Migration),
            Box::new(m20261204_000007_assigned_numbers::Migration),
        ]
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

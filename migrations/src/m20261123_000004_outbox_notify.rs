//! PostgreSQL: every commit that schedules a job (an approval's
//! `execute_release`, a reclaim's carrier call) notifies channel
//! `releasedesk_outbox`, so workers in other processes (the reviewer approves,
//! a worker process executes) start at once instead of at their next poll. A
//! trigger costs no extra round trip, and PostgreSQL folds the notifications of
//! one transaction into one, delivered at commit.
//!
//! Emails do not notify: a NOTIFY makes the commit take a cluster-wide lock, which
//! cost a third of the throughput of a small transaction in pgbench here, and
//! filing (two emails, no job) is the hottest write. Emails go out at the next
//! poll (`worker.poll_interval`). SQLite has no other process to tell: nothing
//! to do there.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The channel workers LISTEN on.
pub const CHANNEL: &str = "releasedesk_outbox";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared(&format!(
            "CREATE OR REPLACE FUNCTION releasedesk_notify_outbox() RETURNS trigger AS $$
             BEGIN
                 PERFORM pg_notify('{CHANNEL}', '');
                 RETURN NULL;
             END;
             $$ LANGUAGE plpgsql"
        ))
        .await?;
        db.execute_unprepared(
            "CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
             FOR EACH ROW WHEN (NEW.kind = 'job')
             EXECUTE FUNCTION releasedesk_notify_outbox()",
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != DatabaseBackend::Postgres {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("DROP TRIGGER IF EXISTS outbox_notify ON outbox")
            .await?;
        db.execute_unprepared("DROP FUNCTION IF EXISTS releasedesk_notify_outbox()")
            .await?;
        Ok(())
    }
}

//! Indexes only of the rows their queries look for.
//!
//! Every filing writes a request and two emails, and every sent email is updated
//! once more; each index on those rows is one more entry to write each time.
//! Two indexes held mostly rows nobody asks for through them:
//!
//! - `idx_outbox_due (status, next_attempt_at)` indexed every outbox row ever
//!   sent, and made the "sent" UPDATE write a new entry for each email. The
//!   dispatcher claims through `idx_outbox_undelivered` (migration 5); what is
//!   left to look up by status is the dead rows staff list, now
//!   `idx_outbox_dead (id) WHERE status = 'dead'` (in the listing's order).
//! - `idx_release_requests_claimed (claimed_by, …)` indexed every request,
//!   though only claimed ones are ever looked up by claimer (a reviewer's
//!   "mine"); `idx_release_requests_claimer` holds the same columns of claimed
//!   requests only (`WHERE claimed_by IS NOT NULL`, which both databases prove
//!   from `claimed_by = ?`). A new name: on SQLite, recreating an index under
//!   the name just dropped failed on another of the pool's connections.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX idx_outbox_dead ON outbox (id) WHERE status = 'dead'",
    "DROP INDEX IF EXISTS idx_outbox_due",
    "CREATE INDEX idx_release_requests_claimer ON release_requests \
     (claimed_by, status, requested_at, id) WHERE claimed_by IS NOT NULL",
    "DROP INDEX IF EXISTS idx_release_requests_claimed",
];

const DOWN: &[&str] = &[
    "CREATE INDEX idx_release_requests_claimed ON release_requests \
     (claimed_by, status, requested_at, id)",
    "DROP INDEX IF EXISTS idx_release_requests_claimer",
    "CREATE INDEX idx_outbox_due ON outbox (status, next_attempt_at)",
    "DROP INDEX IF EXISTS idx_outbox_dead",
];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_statements(manager, DOWN).await
    }
}

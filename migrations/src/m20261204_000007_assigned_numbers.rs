//! The phone-number indexes by account hold only numbers that have one.
//!
//! `idx_phone_numbers_account (account_id, id)` and
//! `idx_phone_numbers_released_from (released_from_account, id)` indexed every
//! number, most of them under NULL: the inventory and every released number in
//! the first, every number never released in the second. Nothing looks numbers
//! up by a NULL account, yet each release moved the number's entry into the
//! first index's NULL range and out of the second's, two more B-tree descents
//! per release into ranges that grow with the history. The new indexes hold
//! the same columns of the rows with an account only (`… IS NOT NULL`, which
//! SQLite and PostgreSQL both prove from `account_id = ?`). New names, as in
//! migration 6; `IF [NOT] EXISTS` so a run cut short can be run again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_phone_numbers_assigned ON phone_numbers \
     (account_id, id) WHERE account_id IS NOT NULL",
    "DROP INDEX IF EXISTS idx_phone_numbers_account",
    "CREATE INDEX IF NOT EXISTS idx_phone_numbers_released_by ON phone_numbers \
     (released_from_account, id) WHERE released_from_account IS NOT NULL",
    "DROP INDEX IF EXISTS idx_phone_numbers_released_from",
];

const DOWN: &[&str] = &[
    "CREATE INDEX IF NOT EXISTS idx_phone_numbers_released_from ON phone_numbers \
     (released_from_account, id)",
    "DROP INDEX IF EXISTS idx_phone_numbers_released_by",
    "CREATE INDEX IF NOT EXISTS idx_phone_numbers_account ON phone_numbers (account_id, id)",
    "DROP INDEX IF EXISTS idx_phone_numbers_assigned",
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

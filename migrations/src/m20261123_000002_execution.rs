//! Bookkeeping for exactly-once execution: a lease on the request while a worker
//! carries it out, the attempt count, and when the carrier confirmed the release.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ReleaseRequests {
    Table,
    LeaseUntil,
    ExecutionAttempts,
    CarrierReleasedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in [
            timestamp_with_time_zone_null(ReleaseRequests::LeaseUntil),
            integer(ReleaseRequests::ExecutionAttempts)
                .default(0)
                .take(),
            timestamp_with_time_zone_null(ReleaseRequests::CarrierReleasedAt),
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ReleaseRequests::Table)
                        .add_column(column)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            ReleaseRequests::LeaseUntil,
            ReleaseRequests::ExecutionAttempts,
            ReleaseRequests::CarrierReleasedAt,
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table(ReleaseRequests::Table)
                        .drop_column(column)
                        .take(),
                )
                .await?;
        }
        Ok(())
    }
}

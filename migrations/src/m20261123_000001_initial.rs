use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    Name,
    Email,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ApiTokens {
    Table,
    Id,
    AccountId,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Staff {
    Table,
    Id,
    Email,
    Name,
    Role,
    TokenHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum PhoneNumbers {
    Table,
    Id,
    E164,
    AccountId,
    Status,
    PurchasedAt,
    BillingCycleStartedAt,
    MonthlyPriceMinor,
    Currency,
    FriendlyName,
    EmailToSms,
    SmsWebhookUrl,
    VoiceWebhookUrl,
    ReleasedAt,
    ReclaimableUntil,
    AvailableAfter,
    ReleasedFromAccount,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SmsMessages {
    Table,
    Id,
    PhoneNumberId,
    Direction,
    Peer,
    Body,
    SentAt,
}

#[derive(DeriveIden)]
enum Agents {
    Table,
    Id,
    AccountId,
    Name,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum AgentNumbers {
    Table,
    AgentId,
    PhoneNumberId,
}

#[derive(DeriveIden)]
enum ReleaseRequests {
    Table,
    Id,
    AccountId,
    PhoneNumberId,
    PhoneNumber,
    Reason,
    Status,
    RequestedAt,
    RequestedBy,
    FiledByStaffId,
    EarlyTerminationFeeMinor,
    Currency,
    ClaimedBy,
    ClaimedAt,
    DecidedAt,
    DecidedBy,
    DecisionNote,
    CancelledBy,
    ReleasedAt,
    FailureReason,
    Version,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ReleaseEvents {
    Table,
    Id,
    RequestId,
    At,
    Kind,
    Actor,
    Note,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Kind,
    Topic,
    Recipient,
    Payload,
    DedupKey,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    SentAt,
}

fn fk(
    name: &str,
    from: (impl IntoIden, impl IntoIden),
    to: (impl IntoIden, impl IntoIden),
    on_delete: ForeignKeyAction,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from(from.0, from.1)
        .to(to.0, to.1)
        .on_delete(on_delete)
        .take()
}

fn index(name: &str, table: impl IntoIden, cols: &[&'static str]) -> IndexCreateStatement {
    let mut index = Index::create().name(name).table(table).take();
    for col in cols {
        index.col(Alias::new(*col));
    }
    index
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        use ForeignKeyAction::{Cascade, Restrict, SetNull};

        manager
            .create_table(
                Table::create()
                    .table(Accounts::Table)
                    .col(pk_uuid(Accounts::Id))
                    .col(string(Accounts::Name))
                    .col(string(Accounts::Email))
                    .col(timestamp_with_time_zone(Accounts::CreatedAt))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiTokens::Table)
                    .col(pk_uuid(ApiTokens::Id))
                    .col(uuid(ApiTokens::AccountId))
                    .col(string_uniq(ApiTokens::TokenHash))
                    .col(timestamp_with_time_zone(ApiTokens::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiTokens::RevokedAt))
                    .foreign_key(&mut fk(
                        "fk_api_tokens_account",
                        (ApiTokens::Table, ApiTokens::AccountId),
                        (Accounts::Table, Accounts::Id),
                        Cascade,
                    ))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Staff::Table)
                    .col(pk_uuid(Staff::Id))
                    .col(string_uniq(Staff::Email))
                    .col(string(Staff::Name))
                    .col(string(Staff::Role))
                    .col(string_uniq(Staff::TokenHash))
                    .col(timestamp_with_time_zone(Staff::CreatedAt))
                    .col(timestamp_with_time_zone_null(Staff::RevokedAt))
                    .take(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(PhoneNumbers::Table)
                    .col(pk_uuid(PhoneNumbers::Id))
                    .col(string_uniq(PhoneNumbers::E164))
                    .col(uuid_null(PhoneNumbers::AccountId))
                    .col(string(PhoneNumbers::Status))
                    .col(timestamp_with_time_zone(PhoneNumbers::PurchasedAt))
                    .col(timestamp_with_time_zone(
                        PhoneNumbers::BillingCycleStartedAt,
                    ))
                    .col(big_integer(PhoneNumbers::MonthlyPriceMinor))
                    .col(string(PhoneNumbers::Currency))
                    .col(string_null(PhoneNumbers::FriendlyName))
                    .col(string_null(PhoneNumbers::EmailToSms))
                    .col(string_null(PhoneNumbers::SmsWebhookUrl))
                    .col(string_null(PhoneNumbers::VoiceWebhookUrl))
                    .col(timestamp_with_time_zone_null(PhoneNumbers::ReleasedAt))
                    .col(timestamp_with_time_zone_null(
                        PhoneNumbers::ReclaimableUntil,
                    ))
                    .col(timestamp_with_time_zone_null(PhoneNumbers::AvailableAfter))
                    .col(uuid_null(PhoneNumbers::ReleasedFromAccount))
                    .col(timestamp_with_time_zone(PhoneNumbers::CreatedAt))
                    .col(timestamp_with_time_zone(PhoneNumbers::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_phone_numbers_account",
                        (PhoneNumbers::Table, PhoneNumbers::AccountId),
                        (Accounts::Table, Accounts::Id),
                        SetNull,
                    ))
                    .foreign_key(&mut fk(
                        "fk_phone_numbers_released_from",
                        (PhoneNumbers::Table, PhoneNumbers::ReleasedFromAccount),
                        (Accounts::Table, Accounts::Id),
                        SetNull,
                    ))
                    .take(),
            )
            .await?;
        // A customer's numbers in id (creation) order; the former owner's released
        // numbers; the cooling-off sweep.
        for idx in [
            index(
                "idx_phone_numbers_account",
                PhoneNumbers::Table,
                &["account_id", "id"],
            ),
            index(
                "idx_phone_numbers_released_from",
                PhoneNumbers::Table,
                &["released_from_account", "id"],
            ),
            index(
                "idx_phone_numbers_status_available_after",
                PhoneNumbers::Table,
                &["status", "available_after"],
            ),
        ] {
            manager.create_index(idx).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(SmsMessages::Table)
                    .col(pk_uuid(SmsMessages::Id))
                    .col(uuid(SmsMessages::PhoneNumberId))
                    .col(string(SmsMessages::Direction))
                    .col(string(SmsMessages::Peer))
                    .col(text(SmsMessages::Body))
                    .col(timestamp_with_time_zone(SmsMessages::SentAt))
                    .foreign_key(&mut fk(
                        "fk_sms_messages_number",
                        (SmsMessages::Table, SmsMessages::PhoneNumberId),
                        (PhoneNumbers::Table, PhoneNumbers::Id),
                        Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_sms_messages_number",
                SmsMessages::Table,
                &["phone_number_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Agents::Table)
                    .col(pk_uuid(Agents::Id))
                    .col(uuid(Agents::AccountId))
                    .col(string(Agents::Name))
                    .col(boolean(Agents::Active))
                    .col(timestamp_with_time_zone(Agents::CreatedAt))
                    .col(timestamp_with_time_zone(Agents::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_agents_account",
                        (Agents::Table, Agents::AccountId),
                        (Accounts::Table, Accounts::Id),
                        Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_agents_account",
                Agents::Table,
                &["account_id", "id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AgentNumbers::Table)
                    .col(uuid(AgentNumbers::AgentId))
                    .col(uuid(AgentNumbers::PhoneNumberId))
                    .primary_key(
                        Index::create()
                            .col(AgentNumbers::AgentId)
                            .col(AgentNumbers::PhoneNumberId),
                    )
                    .foreign_key(&mut fk(
                        "fk_agent_numbers_agent",
                        (AgentNumbers::Table, AgentNumbers::AgentId),
                        (Agents::Table, Agents::Id),
                        Cascade,
                    ))
                    .foreign_key(&mut fk(
                        "fk_agent_numbers_number",
                        (AgentNumbers::Table, AgentNumbers::PhoneNumberId),
                        (PhoneNumbers::Table, PhoneNumbers::Id),
                        Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_agent_numbers_number",
                AgentNumbers::Table,
                &["phone_number_id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ReleaseRequests::Table)
                    .col(pk_uuid(ReleaseRequests::Id))
                    .col(uuid(ReleaseRequests::AccountId))
                    .col(uuid(ReleaseRequests::PhoneNumberId))
                    .col(string(ReleaseRequests::PhoneNumber))
                    .col(text(ReleaseRequests::Reason))
                    .col(string(ReleaseRequests::Status))
                    .col(timestamp_with_time_zone(ReleaseRequests::RequestedAt))
                    .col(string(ReleaseRequests::RequestedBy))
                    .col(uuid_null(ReleaseRequests::FiledByStaffId))
                    .col(big_integer(ReleaseRequests::EarlyTerminationFeeMinor))
                    .col(string(ReleaseRequests::Currency))
                    .col(uuid_null(ReleaseRequests::ClaimedBy))
                    .col(timestamp_with_time_zone_null(ReleaseRequests::ClaimedAt))
                    .col(timestamp_with_time_zone_null(ReleaseRequests::DecidedAt))
                    .col(uuid_null(ReleaseRequests::DecidedBy))
                    .col(text_null(ReleaseRequests::DecisionNote))
                    .col(string_null(ReleaseRequests::CancelledBy))
                    .col(timestamp_with_time_zone_null(ReleaseRequests::ReleasedAt))
                    .col(text_null(ReleaseRequests::FailureReason))
                    .col(integer(ReleaseRequests::Version))
                    .col(timestamp_with_time_zone(ReleaseRequests::UpdatedAt))
                    .foreign_key(&mut fk(
                        "fk_release_requests_account",
                        (ReleaseRequests::Table, ReleaseRequests::AccountId),
                        (Accounts::Table, Accounts::Id),
                        Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_release_requests_number",
                        (ReleaseRequests::Table, ReleaseRequests::PhoneNumberId),
                        (PhoneNumbers::Table, PhoneNumbers::Id),
                        Restrict,
                    ))
                    .foreign_key(&mut fk(
                        "fk_release_requests_claimed_by",
                        (ReleaseRequests::Table, ReleaseRequests::ClaimedBy),
                        (Staff::Table, Staff::Id),
                        SetNull,
                    ))
                    .take(),
            )
            .await?;
        // DESIGN invariant 1: at most one open request per number, enforced here so
        // that concurrent filings race in the database, not in application code.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX release_requests_one_open_per_number \
                 ON release_requests (phone_number_id) \
                 WHERE status IN ('pending', 'approved', 'releasing')",
            )
            .await?;
        // Customer lists (newest first), the reviewer queue (by status, by age) and
        // its "mine" / "unclaimed" views.
        for idx in [
            index(
                "idx_release_requests_account",
                ReleaseRequests::Table,
                &["account_id", "requested_at", "id"],
            ),
            index(
                "idx_release_requests_status",
                ReleaseRequests::Table,
                &["status", "requested_at", "id"],
            ),
            index(
                "idx_release_requests_claimed",
                ReleaseRequests::Table,
                &["claimed_by", "status", "requested_at", "id"],
            ),
            index(
                "idx_release_requests_number",
                ReleaseRequests::Table,
                &["phone_number_id"],
            ),
        ] {
            manager.create_index(idx).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(ReleaseEvents::Table)
                    .col(pk_uuid(ReleaseEvents::Id))
                    .col(uuid(ReleaseEvents::RequestId))
                    .col(timestamp_with_time_zone(ReleaseEvents::At))
                    .col(string(ReleaseEvents::Kind))
                    .col(string(ReleaseEvents::Actor))
                    .col(text_null(ReleaseEvents::Note))
                    .foreign_key(&mut fk(
                        "fk_release_events_request",
                        (ReleaseEvents::Table, ReleaseEvents::RequestId),
                        (ReleaseRequests::Table, ReleaseRequests::Id),
                        Cascade,
                    ))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_release_events_request",
                ReleaseEvents::Table,
                &["request_id", "id"],
            ))
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(pk_uuid(Outbox::Id))
                    .col(string(Outbox::Kind))
                    .col(string(Outbox::Topic))
                    .col(string_null(Outbox::Recipient))
                    .col(json(Outbox::Payload))
                    .col(string_uniq(Outbox::DedupKey))
                    .col(string(Outbox::Status))
                    .col(integer(Outbox::Attempts))
                    .col(timestamp_with_time_zone(Outbox::NextAttemptAt))
                    .col(text_null(Outbox::LastError))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .take(),
            )
            .await?;
        manager
            .create_index(index(
                "idx_outbox_due",
                Outbox::Table,
                &["status", "next_attempt_at"],
            ))
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Outbox::Table.into_iden(),
            ReleaseEvents::Table.into_iden(),
            ReleaseRequests::Table.into_iden(),
            AgentNumbers::Table.into_iden(),
            Agents::Table.into_iden(),
            SmsMessages::Table.into_iden(),
            PhoneNumbers::Table.into_iden(),
            Staff::Table.into_iden(),
            ApiTokens::Table.into_iden(),
            Accounts::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).take())
                .await?;
        }
        Ok(())
    }
}

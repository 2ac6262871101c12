use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "phone_numbers")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    #[sea_orm(unique)]
    pub e164: String,
    /// The owner; `None` once released.
    pub account_id: Option<Uuid>,
    pub status: String,
    pub purchased_at: DateTimeUtc,
    pub billing_cycle_started_at: DateTimeUtc,
    pub monthly_price_minor: i64,
    pub currency: String,
    pub friendly_name: Option<String>,
    pub email_to_sms: Option<String>,
    pub sms_webhook_url: Option<String>,
    pub voice_webhook_url: Option<String>,
    pub released_at: Option<DateTimeUtc>,
    pub reclaimable_until: Option<DateTimeUtc>,
    pub available_after: Option<DateTimeUtc>,
    /// The owner before the release: may reclaim, and sees the number until it is
    /// `available`.
    pub released_from_account: Option<Uuid>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "release_requests")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub account_id: Uuid,
    pub phone_number_id: Uuid,
    /// The number's E.164 form, copied at filing (it never changes for an id) so
    /// lists and the queue's search need no join.
    pub phone_number: String,
    pub reason: String,
    pub status: String,
    pub requested_at: DateTimeUtc,
    /// The actor who filed it, as written in the timeline.
    pub requested_by: String,
    /// Set when support filed on behalf of the customer (four-eyes rule).
    pub filed_by_staff_id: Option<Uuid>,
    pub early_termination_fee_minor: i64,
    pub currency: String,
    pub claimed_by: Option<Uuid>,
    pub claimed_at: Option<DateTimeUtc>,
    pub decided_at: Option<DateTimeUtc>,
    pub decided_by: Option<Uuid>,
    pub decision_note: Option<String>,
    /// `customer` or `staff`.
    pub cancelled_by: Option<String>,
    pub released_at: Option<DateTimeUtc>,
    pub failure_reason: Option<String>,
    /// Bumped on every change.
    pub version: i32,
    pub updated_at: DateTimeUtc,
    /// While set and in the future, a worker is carrying the release out.
    pub lease_until: Option<DateTimeUtc>,
    pub execution_attempts: i32,
    /// When the carrier confirmed the release: a re-run skips the carrier call.
    pub carrier_released_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "idempotency_keys")]
pub struct Model {
    /// Whose key it is: `account:<id>` or `staff:<id>`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub scope: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Hex SHA-256 of the method, path and canonical body.
    pub request_hash: String,
    /// `in_flight` or `done`.
    pub state: String,
    pub response_status: Option<i32>,
    pub response_body: Option<String>,
    /// An `in_flight` row whose lock has passed was abandoned (its process died)
    /// and may be taken over.
    pub locked_until: DateTimeUtc,
    pub created_at: DateTimeUtc,
    pub expires_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

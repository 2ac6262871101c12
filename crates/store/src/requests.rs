//! Release requests from the customer's side: file, cancel, list, read.

use chrono::{DateTime, Utc};
use releasedesk_domain::{DomainError, Money, RequestStatus, time::now};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    Actor, Cursor, EventView, Page, PageRequest, Store, StoreError,
    db::begin_write,
    entity::release_request,
    events, paging,
    schema::{MoneySchema, RequestStatusSchema},
};

/// The answer to filing: exactly the fields talkover's API returns, plus the fee.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FiledRequest {
    pub id: Uuid,
    pub phone_number_id: Uuid,
    #[schema(example = "+15551234567")]
    pub phone_number: String,
    pub reason: String,
    #[schema(value_type = RequestStatusSchema)]
    pub status: RequestStatus,
    pub requested_at: DateTime<Utc>,
    #[schema(value_type = MoneySchema)]
    pub early_termination_fee: Money,
    pub currency: String,
}

/// A release request as its account sees it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RequestView {
    pub id: Uuid,
    pub phone_number_id: Uuid,
    #[schema(example = "+15551234567")]
    pub phone_number: String,
    pub reason: String,
    #[schema(value_type = RequestStatusSchema)]
    pub status: RequestStatus,
    pub requested_at: DateTime<Utc>,
    #[schema(value_type = MoneySchema)]
    pub early_termination_fee: Money,
    pub currency: String,
    pub cancelled_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_note: Option<String>,
    pub released_at: Option<DateTime<Utc>>,
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<EventView>>,
}

pub(crate) fn parse_request_status(status: &str) -> Result<RequestStatus, StoreError> {
    status
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("release_requests.status: {e}")))
}

impl TryFrom<release_request::Model> for RequestView {
    type Error = StoreError;

    fn try_from(row: release_request::Model) -> Result<Self, StoreError> {
        Ok(Self {
            status: parse_request_status(&row.status)?,
            id: row.id,
            phone_number_id: row.phone_number_id,
            phone_number: row.phone_number,
            reason: row.reason,
            requested_at: row.requested_at,
            early_termination_fee: Money::from_minor(row.early_termination_fee_minor),
            currency: row.currency,
            cancelled_by: row.cancelled_by,
            decided_at: row.decided_at,
            decision_note: row.decision_note,
            released_at: row.released_at,
            failure_reason: row.failure_reason,
            events: None,
        })
    }
}

/// The request, if it belongs to the account.
async fn owned_request(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    request_id: Uuid,
) -> Result<release_request::Model, StoreError> {
    release_request::Entity::find_by_id(request_id)
        .filter(release_request::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(DomainError::NotFound.into())
}

impl Store {
    /// Cancels a pending request of the account. Only `pending` can be cancelled;
    /// the guard is in the UPDATE, so a concurrent approval and cancel cannot both
    /// win.
    pub async fn cancel_by_customer(
        &self,
        account_id: Uuid,
        request_id: Uuid,
    ) -> Result<RequestView, StoreError> {
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let updated = release_request::Entity::update_many()
            .col_expr(
                release_request::Column::Status,
                Expr::value(RequestStatus::Cancelled.as_str()),
            )
            .col_expr(
                release_request::Column::CancelledBy,
                Expr::value("customer"),
            )
            .col_expr(release_request::Column::DecidedAt, Expr::value(at))
            .col_expr(release_request::Column::UpdatedAt, Expr::value(at))
            .col_expr(
                release_request::Column::Version,
                Expr::col(release_request::Column::Version).add(1),
            )
            .filter(release_request::Column::Id.eq(request_id))
            .filter(release_request::Column::AccountId.eq(account_id))
            .filter(release_request::Column::Status.eq(RequestStatus::Pending.as_str()))
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            owned_request(&txn, account_id, request_id).await?;
            return Err(DomainError::RequestNotPending.into());
        }
        events::record(
            &txn,
            request_id,
            "cancelled",
            Actor::Customer(account_id),
            None,
            at,
        )
        .await?;
        let view = RequestView::try_from(owned_request(&txn, account_id, request_id).await?)?;
        txn.commit().await?;
        Ok(view)
    }

    /// One request of the account, with its timeline.
    pub async fn get_request(
        &self,
        account_id: Uuid,
        request_id: Uuid,
    ) -> Result<RequestView, StoreError> {
        let row = owned_request(&self.shared.db, account_id, request_id).await?;
        let mut view = RequestView::try_from(row)?;
        view.events = Some(events::timeline(&self.shared.db, request_id).await?);
        Ok(view)
    }

    /// The account's requests, newest first.
    pub async fn list_requests(
        &self,
        account_id: Uuid,
        status: Option<RequestStatus>,
        page: PageRequest,
    ) -> Result<Page<RequestView>, StoreError> {
        use release_request::Column;
        let mut query = release_request::Entity::find().filter(Column::AccountId.eq(account_id));
        if let Some(status) = status {
            query = query.filter(Column::Status.eq(status.as_str()));
        }
        if let Some(cursor) = &page.cursor {
            query = query.filter(paging::after_time(
                Column::RequestedAt,
                Column::Id,
                cursor,
                false,
            )?);
        }
        let rows = query
            .order_by_desc(Column::RequestedAt)
            .order_by_desc(Column::Id)
            .limit(page.fetch())
            .all(&self.shared.db)
            .await?;
        let page = Page::from_rows(rows, &page, |r| Cursor::after(r.requested_at, r.id), |r| r);
        let items = page
            .items
            .into_iter()
            .map(RequestView::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }
}

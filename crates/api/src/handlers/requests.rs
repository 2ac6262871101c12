use axum::extract::State;
use releasedesk_store::{RequestView, Store, schema::RequestStatusSchema};

use crate::{
    ApiError,
    body::ListQuery,
    envelope::{Data, Listed},
    extract::{Customer, PathId, Query},
    openapi::{DataEnvelope, ListEnvelope, PageParams},
};

/// List the account's release requests
///
/// Newest first.
#[utoipa::path(
    get,
    path = "/release-requests",
    operation_id = "list_release_requests",
    tag = "release requests",
    security(("customer_token" = [])),
    params(
        ("status" = Option<RequestStatusSchema>, Query, description = "Only requests in this status."),
        PageParams,
    ),
    responses((status = 200, description = "One page of requests.", body = ListEnvelope<RequestView>)),
)]
pub async fn list(
    State(store): State<Store>,
    Customer(me): Customer,
    Query(query): Query<ListQuery>,
) -> Result<Listed<RequestView>, ApiError> {
    let (status, page) = query.requests()?;
    Ok(Listed(
        store.list_requests(me.account_id, status, page).await?,
    ))
}

/// Get one release request with its timeline
#[utoipa::path(
    get,
    path = "/release-requests/{id}",
    operation_id = "get_release_request",
    tag = "release requests",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    responses((status = 200, description = "The request and its `events`.", body = DataEnvelope<RequestView>)),
)]
pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<RequestView>, ApiError> {
    Ok(Data(store.get_request(me.account_id, id).await?))
}

/// Cancel a pending release request
#[utoipa::path(
    post,
    path = "/release-requests/{id}/cancel",
    operation_id = "cancel_release_request",
    tag = "release requests",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    responses((status = 200, description = "The request, cancelled.", body = DataEnvelope<RequestView>)),
    extensions(("x-error-codes" = json!(["REQUEST_NOT_PENDING"]))),
)]
pub async fn cancel(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<RequestView>, ApiError> {
    Ok(Data(store.cancel_by_customer(me.account_id, id).await?))
}

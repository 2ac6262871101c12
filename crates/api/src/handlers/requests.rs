use axum::extract::State;
use releasedesk_store::{RequestView, Store};

use crate::{
    ApiError,
    body::ListQuery,
    envelope::{Data, Listed},
    extract::{Customer, PathId, Query},
};

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

pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<RequestView>, ApiError> {
    Ok(Data(store.get_request(me.account_id, id).await?))
}

pub async fn cancel(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<RequestView>, ApiError> {
    Ok(Data(store.cancel_by_customer(me.account_id, id).await?))
}

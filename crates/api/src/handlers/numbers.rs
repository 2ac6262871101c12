use axum::extract::State;
use releasedesk_store::{Actor, FiledRequest, NumberView, ReleasePreview, Store};

use crate::{
    ApiError,
    body::{ListQuery, PatchNumberBody, RequestReleaseBody},
    envelope::{Created, Data, Listed},
    extract::{Customer, Json, PathId, Query},
};

pub async fn list(
    State(store): State<Store>,
    Customer(me): Customer,
    Query(query): Query<ListQuery>,
) -> Result<Listed<NumberView>, ApiError> {
    let (status, page) = query.numbers()?;
    Ok(Listed(
        store.list_numbers(me.account_id, status, page).await?,
    ))
}

pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<NumberView>, ApiError> {
    Ok(Data(store.get_number(me.account_id, id).await?))
}

pub async fn patch(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
    Json(body): Json<PatchNumberBody>,
) -> Result<Data<NumberView>, ApiError> {
    let patch = body.parse()?;
    Ok(Data(store.patch_number(me.account_id, id, patch).await?))
}

pub async fn release_preview(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<ReleasePreview>, ApiError> {
    Ok(Data(store.preview_release(me.account_id, id).await?))
}

pub async fn request_release(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
    Json(body): Json<RequestReleaseBody>,
) -> Result<Created<FiledRequest>, ApiError> {
    let reason = body.parse()?;
    let actor = Actor::Customer(me.account_id);
    Ok(Created(
        store.file_request(me.account_id, id, reason, actor).await?,
    ))
}

pub async fn reclaim(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<NumberView>, ApiError> {
    Ok(Data(store.reclaim(me.account_id, id).await?))
}

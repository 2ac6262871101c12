//! The reviewer JSON API (`/reviewer/api/v1`): staff tokens only.

use axum::{
    Router,
    extract::State,
    routing::{get, post},
};
use releasedesk_api::{
    ApiError,
    body::RequestReleaseBody,
    envelope::{Created, Data, Listed},
    extract::{Json, MaybeJson, PathId, Query, Staff},
};
use releasedesk_store::{FiledRequest, OutboxView, QueueItem, ReviewDetail, Store};

use crate::body::{ApproveBody, CancelBody, OutboxQuery, QueueQuery};

pub fn router(store: Store) -> Router {
    Router::new()
        .route("/queue", get(queue))
        .route("/release-requests/{id}", get(detail))
        .route("/release-requests/{id}/claim", post(claim))
        .route("/release-requests/{id}/unclaim", post(unclaim))
        .route("/release-requests/{id}/approve", post(approve))
        .route("/release-requests/{id}/cancel", post(cancel))
        .route("/phone-numbers/{id}/request-release", post(file_on_behalf))
        .route("/outbox", get(outbox))
        .with_state(store)
}

async fn queue(
    State(store): State<Store>,
    Staff(me): Staff,
    Query(query): Query<QueueQuery>,
) -> Result<Listed<QueueItem>, ApiError> {
    let (filter, page) = query.parse()?;
    Ok(Listed(store.queue(&me, &filter, page).await?))
}

async fn detail(
    State(store): State<Store>,
    Staff(_): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.review_detail(id).await?))
}

async fn claim(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.claim(&me, id).await?))
}

async fn unclaim(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.unclaim(&me, id).await?))
}

async fn approve(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
    MaybeJson(body): MaybeJson<ApproveBody>,
) -> Result<Data<ReviewDetail>, ApiError> {
    let note = body.map(ApproveBody::parse).transpose()?.flatten();
    Ok(Data(store.approve(&me, id, note).await?))
}

async fn cancel(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
    Json(body): Json<CancelBody>,
) -> Result<Data<ReviewDetail>, ApiError> {
    let note = body.parse()?;
    Ok(Data(store.cancel_by_staff(&me, id, note).await?))
}

async fn file_on_behalf(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
    Json(body): Json<RequestReleaseBody>,
) -> Result<Created<FiledRequest>, ApiError> {
    let reason = body.parse()?;
    Ok(Created(store.file_on_behalf(&me, id, reason).await?))
}

/// Emails and jobs by delivery status; `?status=dead` (the default) lists what
/// was given up on after the bounded retries.
async fn outbox(
    State(store): State<Store>,
    Staff(_): Staff,
    Query(query): Query<OutboxQuery>,
) -> Result<Listed<OutboxView>, ApiError> {
    let (status, page) = query.parse()?;
    Ok(Listed(store.list_outbox(status, page).await?))
}

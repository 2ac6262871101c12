//! The reviewer JSON API (`/reviewer/api/v1`): staff tokens only.

use axum::{Router, extract::State};
use releasedesk_api::{
    ApiError,
    body::RequestReleaseBody,
    envelope::{Created, Data, Listed},
    extract::{Json, MaybeJson, PathId, Query, Staff},
    openapi::{DataEnvelope, ListEnvelope, PageParams},
};
use releasedesk_store::{
    FiledRequest, OutboxStatus, OutboxView, QueueItem, ReviewDetail, Store,
    schema::RequestStatusSchema,
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::body::{ApproveBody, CancelBody, OutboxQuery, QueueQuery};

/// The routes under `/reviewer/api/v1`.
pub fn router(store: Store) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(store)
}

/// The reviewer API's part of the OpenAPI document (paths under
/// `/reviewer/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    OpenApiRouter::default()
        .nest("/reviewer/api/v1", routes())
        .into_openapi()
}

/// Every route, registered through `routes!` so that it is documented by
/// construction.
fn routes() -> OpenApiRouter<Store> {
    OpenApiRouter::default()
        .routes(routes!(queue))
        .routes(routes!(detail))
        .routes(routes!(claim))
        .routes(routes!(unclaim))
        .routes(routes!(approve))
        .routes(routes!(cancel))
        .routes(routes!(file_on_behalf))
        .routes(routes!(outbox))
}

/// The review queue
///
/// Release requests with their account, age, claim and live in-use state.
#[utoipa::path(
    get,
    path = "/queue",
    operation_id = "review_queue",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(
        ("status" = Option<RequestStatusSchema>, Query, description = "Requests in this status (default `pending`)."),
        ("order" = Option<String>, Query, description = "`oldest` (default) or `newest` first.", example = "oldest"),
        ("q" = Option<String>, Query, description = "Part of the phone number or of the account's name."),
        ("claimed" = Option<String>, Query, description = "`mine`, `unclaimed` or `any` (default)."),
        PageParams,
    ),
    responses((status = 200, description = "One page of the queue.", body = ListEnvelope<QueueItem>)),
)]
async fn queue(
    State(store): State<Store>,
    Staff(me): Staff,
    Query(query): Query<QueueQuery>,
) -> Result<Listed<QueueItem>, ApiError> {
    let (filter, page) = query.parse()?;
    Ok(Listed(store.queue(&me, &filter, page).await?))
}

/// One release request as a reviewer sees it, with its timeline
#[utoipa::path(
    get,
    path = "/release-requests/{id}",
    operation_id = "review_release_request",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    responses((status = 200, description = "The request.", body = DataEnvelope<ReviewDetail>)),
)]
async fn detail(
    State(store): State<Store>,
    Staff(_): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.review_detail(id).await?))
}

/// Claim a release request
///
/// Others cannot approve or cancel it while you hold it.
#[utoipa::path(
    post,
    path = "/release-requests/{id}/claim",
    operation_id = "claim_release_request",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    responses((status = 200, description = "The request, claimed by you.", body = DataEnvelope<ReviewDetail>)),
    extensions(("x-error-codes" = json!(["REQUEST_NOT_PENDING", "CLAIMED_BY_OTHER"]))),
)]
async fn claim(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.claim(&me, id).await?))
}

/// Leave a release request you claimed
#[utoipa::path(
    post,
    path = "/release-requests/{id}/unclaim",
    operation_id = "unclaim_release_request",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    responses((status = 200, description = "The request, unclaimed.", body = DataEnvelope<ReviewDetail>)),
    extensions(("x-error-codes" = json!(["REQUEST_NOT_PENDING", "CLAIMED_BY_OTHER"]))),
)]
async fn unclaim(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
) -> Result<Data<ReviewDetail>, ApiError> {
    Ok(Data(store.unclaim(&me, id).await?))
}

/// Approve a release request
///
/// Re-checks that no active agent uses the number; the number becomes
/// `releasing` and its release is scheduled in the same transaction.
#[utoipa::path(
    post,
    path = "/release-requests/{id}/approve",
    operation_id = "approve_release_request",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    request_body(content = ApproveBody, description = "Optional; so is its note."),
    responses((status = 200, description = "The request, approved.", body = DataEnvelope<ReviewDetail>)),
    extensions(("x-error-codes" = json!(["REQUEST_NOT_PENDING", "CLAIMED_BY_OTHER", "NUMBER_NOT_ACTIVE", "PHONE_NUMBER_IN_USE"]))),
)]
async fn approve(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
    MaybeJson(body): MaybeJson<ApproveBody>,
) -> Result<Data<ReviewDetail>, ApiError> {
    let note = body.map(ApproveBody::parse).transpose()?.flatten();
    Ok(Data(store.approve(&me, id, note).await?))
}

/// Cancel a release request, with a note for the customer
#[utoipa::path(
    post,
    path = "/release-requests/{id}/cancel",
    operation_id = "staff_cancel_release_request",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The request's id.")),
    request_body = CancelBody,
    responses((status = 200, description = "The request, cancelled by staff.", body = DataEnvelope<ReviewDetail>)),
    extensions(("x-error-codes" = json!(["REQUEST_NOT_PENDING", "CLAIMED_BY_OTHER"]))),
)]
async fn cancel(
    State(store): State<Store>,
    Staff(me): Staff,
    PathId(id): PathId,
    Json(body): Json<CancelBody>,
) -> Result<Data<ReviewDetail>, ApiError> {
    let note = body.parse()?;
    Ok(Data(store.cancel_by_staff(&me, id, note).await?))
}

/// File a release request on a customer's behalf
///
/// Another reviewer must approve it.
#[utoipa::path(
    post,
    path = "/phone-numbers/{id}/request-release",
    operation_id = "file_release_request_on_behalf",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    request_body = RequestReleaseBody,
    responses((status = 201, description = "The request, pending review.", body = DataEnvelope<FiledRequest>)),
    extensions(("x-error-codes" = json!(["RELEASE_ALREADY_PENDING", "NUMBER_NOT_ACTIVE", "PHONE_NUMBER_IN_USE"]))),
)]
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
#[utoipa::path(
    get,
    path = "/outbox",
    operation_id = "list_outbox",
    tag = "reviewer",
    security(("staff_token" = [])),
    params(
        ("status" = Option<OutboxStatus>, Query, description = "Rows in this delivery status (default `dead`)."),
        PageParams,
    ),
    responses((status = 200, description = "One page of outbox rows.", body = ListEnvelope<OutboxView>)),
)]
async fn outbox(
    State(store): State<Store>,
    Staff(_): Staff,
    Query(query): Query<OutboxQuery>,
) -> Result<Listed<OutboxView>, ApiError> {
    let (status, page) = query.parse()?;
    Ok(Listed(store.list_outbox(status, page).await?))
}

use axum::extract::State;
use releasedesk_store::{
    Actor, FiledRequest, NumberView, ReleasePreview, Store, schema::NumberStatusSchema,
};

use crate::{
    ApiError,
    body::{ListQuery, PatchNumberBody, RequestReleaseBody},
    envelope::{Created, Data, Listed},
    extract::{Customer, CustomerCaller, Json, PathId, Query},
    openapi::{DataEnvelope, ListEnvelope, PageParams},
};

/// List the account's phone numbers
///
/// Numbers the account owns, and released numbers it may still reclaim.
#[utoipa::path(
    get,
    path = "/phone-numbers",
    operation_id = "list_phone_numbers",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(
        ("status" = Option<NumberStatusSchema>, Query, description = "Only numbers in this status."),
        PageParams,
    ),
    responses((status = 200, description = "One page of numbers.", body = ListEnvelope<NumberView>)),
)]
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

/// Get one phone number
#[utoipa::path(
    get,
    path = "/phone-numbers/{id}",
    operation_id = "get_phone_number",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    responses((status = 200, description = "The number.", body = DataEnvelope<NumberView>)),
)]
pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<NumberView>, ApiError> {
    Ok(Data(store.get_number(me.account_id, id).await?))
}

/// Change a phone number's name or configuration
///
/// A field left out stays as it is; `null` clears it.
#[utoipa::path(
    patch,
    path = "/phone-numbers/{id}",
    operation_id = "update_phone_number",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    request_body = PatchNumberBody,
    responses((status = 200, description = "The number as changed.", body = DataEnvelope<NumberView>)),
    extensions(("x-error-codes" = json!(["NUMBER_NOT_ACTIVE"]))),
)]
pub async fn patch(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
    Json(body): Json<PatchNumberBody>,
) -> Result<Data<NumberView>, ApiError> {
    let patch = body.parse()?;
    Ok(Data(store.patch_number(me.account_id, id, patch).await?))
}

/// Preview releasing a phone number
///
/// What a release would cost and do, and what blocks it now.
#[utoipa::path(
    get,
    path = "/phone-numbers/{id}/release-preview",
    operation_id = "preview_release",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    responses((status = 200, description = "The preview.", body = DataEnvelope<ReleasePreview>)),
)]
pub async fn release_preview(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<ReleasePreview>, ApiError> {
    Ok(Data(store.preview_release(me.account_id, id).await?))
}

/// Ask for a phone number to be released
///
/// Files a release request for review by support staff. At most one request per
/// number is open at a time.
#[utoipa::path(
    post,
    path = "/phone-numbers/{id}/request-release",
    operation_id = "request_release",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    request_body = RequestReleaseBody,
    responses((status = 201, description = "The request, pending review.", body = DataEnvelope<FiledRequest>)),
    extensions(("x-error-codes" = json!(["RELEASE_ALREADY_PENDING", "NUMBER_NOT_ACTIVE", "PHONE_NUMBER_IN_USE"]))),
)]
pub async fn request_release(
    State(store): State<Store>,
    caller: CustomerCaller,
    id: Result<PathId, ApiError>,
    body: Result<Json<RequestReleaseBody>, ApiError>,
) -> Result<Created<FiledRequest>, ApiError> {
    let filing = match (id, body) {
        (Ok(PathId(id)), Ok(Json(body))) => body.parse().map(|reason| (id, reason)),
        (Err(error), _) | (_, Err(error)) => Err(error),
    };
    let (id, reason) = match filing {
        Ok(filing) => filing,
        Err(error) => {
            // An unknown caller learns nothing about its request: 401 first.
            caller.check(&store).await?;
            return Err(error);
        }
    };
    let filed = match caller {
        CustomerCaller::Known(me) => {
            let actor = Actor::Customer(me.account_id);
            store.file_request(me.account_id, id, reason, actor).await?
        }
        CustomerCaller::Unchecked(token) => {
            store.file_request_with_token(&token, id, reason).await?
        }
    };
    Ok(Created(filed))
}

/// Reclaim a released phone number
///
/// The former owner, within the reclaim window: the number is active again with a
/// new billing cycle; its history and configuration stay wiped.
#[utoipa::path(
    post,
    path = "/phone-numbers/{id}/reclaim",
    operation_id = "reclaim_phone_number",
    tag = "phone numbers",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The number's id.")),
    responses((status = 200, description = "The number, active again.", body = DataEnvelope<NumberView>)),
    extensions(("x-error-codes" = json!(["RECLAIM_WINDOW_EXPIRED", "NUMBER_NOT_RELEASED"]))),
)]
pub async fn reclaim(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<NumberView>, ApiError> {
    Ok(Data(store.reclaim(me.account_id, id).await?))
}

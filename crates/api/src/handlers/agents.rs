use axum::extract::State;
use releasedesk_store::{AgentView, Store};

use crate::{
    ApiError,
    body::{CreateAgentBody, ListQuery, PatchAgentBody},
    envelope::{Created, Data, Listed},
    extract::{Customer, Json, PathId, Query},
    openapi::{DataEnvelope, ListEnvelope, PageParams},
};

/// List the account's agents
#[utoipa::path(
    get,
    path = "/agents",
    operation_id = "list_agents",
    tag = "agents",
    security(("customer_token" = [])),
    params(PageParams),
    responses((status = 200, description = "One page of agents.", body = ListEnvelope<AgentView>)),
)]
pub async fn list(
    State(store): State<Store>,
    Customer(me): Customer,
    Query(query): Query<ListQuery>,
) -> Result<Listed<AgentView>, ApiError> {
    let page = query.page_only()?;
    Ok(Listed(store.list_agents(me.account_id, page).await?))
}

/// Create an agent
///
/// Every number in `phone_number_ids` must be an active number of the account.
#[utoipa::path(
    post,
    path = "/agents",
    operation_id = "create_agent",
    tag = "agents",
    security(("customer_token" = [])),
    request_body = CreateAgentBody,
    responses((status = 201, description = "The agent.", body = DataEnvelope<AgentView>)),
    extensions(("x-error-codes" = json!(["NUMBER_NOT_ACTIVE"]))),
)]
pub async fn create(
    State(store): State<Store>,
    Customer(me): Customer,
    Json(body): Json<CreateAgentBody>,
) -> Result<Created<AgentView>, ApiError> {
    let agent = body.parse()?;
    Ok(Created(store.create_agent(me.account_id, agent).await?))
}

/// Get one agent
#[utoipa::path(
    get,
    path = "/agents/{id}",
    operation_id = "get_agent",
    tag = "agents",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The agent's id.")),
    responses((status = 200, description = "The agent.", body = DataEnvelope<AgentView>)),
)]
pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<AgentView>, ApiError> {
    Ok(Data(store.get_agent(me.account_id, id).await?))
}

/// Change an agent
///
/// `phone_number_ids` replaces the whole set.
#[utoipa::path(
    patch,
    path = "/agents/{id}",
    operation_id = "update_agent",
    tag = "agents",
    security(("customer_token" = [])),
    params(("id" = uuid::Uuid, Path, description = "The agent's id.")),
    request_body = PatchAgentBody,
    responses((status = 200, description = "The agent as changed.", body = DataEnvelope<AgentView>)),
    extensions(("x-error-codes" = json!(["NUMBER_NOT_ACTIVE"]))),
)]
pub async fn patch(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
    Json(body): Json<PatchAgentBody>,
) -> Result<Data<AgentView>, ApiError> {
    let patch = body.parse()?;
    Ok(Data(store.update_agent(me.account_id, id, patch).await?))
}

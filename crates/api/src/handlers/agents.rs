use axum::extract::State;
use releasedesk_store::{AgentView, Store};

use crate::{
    ApiError,
    body::{CreateAgentBody, ListQuery, PatchAgentBody},
    envelope::{Created, Data, Listed},
    extract::{Customer, Json, PathId, Query},
};

pub async fn list(
    State(store): State<Store>,
    Customer(me): Customer,
    Query(query): Query<ListQuery>,
) -> Result<Listed<AgentView>, ApiError> {
    let page = query.page_only()?;
    Ok(Listed(store.list_agents(me.account_id, page).await?))
}

pub async fn create(
    State(store): State<Store>,
    Customer(me): Customer,
    Json(body): Json<CreateAgentBody>,
) -> Result<Created<AgentView>, ApiError> {
    let agent = body.parse()?;
    Ok(Created(store.create_agent(me.account_id, agent).await?))
}

pub async fn get(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
) -> Result<Data<AgentView>, ApiError> {
    Ok(Data(store.get_agent(me.account_id, id).await?))
}

pub async fn patch(
    State(store): State<Store>,
    Customer(me): Customer,
    PathId(id): PathId,
    Json(body): Json<PatchAgentBody>,
) -> Result<Data<AgentView>, ApiError> {
    let patch = body.parse()?;
    Ok(Data(store.update_agent(me.account_id, id, patch).await?))
}

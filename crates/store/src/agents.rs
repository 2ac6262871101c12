//! Agents and the numbers they use. A number assigned to an active agent cannot be
//! released (`PHONE_NUMBER_IN_USE`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use releasedesk_domain::{AgentName, DomainError, NumberStatus, time::now};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, sea_query::Expr,
};
use serde::Serialize;
use uuid::Uuid;

use crate::{
    Page, PageRequest, Store, StoreError,
    entity::{agent, agent_number, phone_number},
    numbers::parse_status,
    paging,
};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: Uuid,
    pub name: String,
    pub active: bool,
    pub phone_number_ids: Vec<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewAgent {
    pub name: AgentName,
    pub active: bool,
    pub phone_number_ids: Vec<Uuid>,
}

/// A change to an agent; `None` leaves a field alone. `phone_number_ids` replaces
/// the whole set.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub name: Option<AgentName>,
    pub active: Option<bool>,
    pub phone_number_ids: Option<Vec<Uuid>>,
}

/// Replaces the agent's numbers. Every number must belong to the account (else a
/// validation error that does not reveal other accounts' numbers) and be active.
/// The numbers' rows are locked so an approval cannot slip in between the check and
/// the assignment.
async fn replace_numbers(
    txn: &impl ConnectionTrait,
    account_id: Uuid,
    agent_id: Uuid,
    wanted: &[Uuid],
) -> Result<(), StoreError> {
    let wanted: BTreeSet<Uuid> = wanted.iter().copied().collect();
    let rows = phone_number::Entity::find()
        .filter(phone_number::Column::Id.is_in(wanted.iter().copied()))
        .filter(phone_number::Column::AccountId.eq(account_id))
        .lock_exclusive()
        .all(txn)
        .await?;
    let found: BTreeSet<Uuid> = rows.iter().map(|r| r.id).collect();
    if let Some(unknown) = wanted.difference(&found).next() {
        return Err(DomainError::invalid(
            "phone_number_ids",
            format!("no phone number {unknown} in this account"),
        )
        .into());
    }
    for row in &rows {
        if parse_status(&row.status)? != NumberStatus::Active {
            return Err(DomainError::NumberNotActive.into());
        }
    }
    agent_number::Entity::delete_many()
        .filter(agent_number::Column::AgentId.eq(agent_id))
        .exec(txn)
        .await?;
    if !wanted.is_empty() {
        let links = wanted
            .into_iter()
            .map(|phone_number_id| agent_number::ActiveModel {
                agent_id: Set(agent_id),
                phone_number_id: Set(phone_number_id),
            });
        agent_number::Entity::insert_many(links)
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

async fn views(
    db: &impl ConnectionTrait,
    rows: Vec<agent::Model>,
) -> Result<Vec<AgentView>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut numbers: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let links = agent_number::Entity::find()
        .filter(agent_number::Column::AgentId.is_in(ids))
        .order_by_asc(agent_number::Column::PhoneNumberId)
        .all(db)
        .await?;
    for link in links {
        numbers
            .entry(link.agent_id)
            .or_default()
            .push(link.phone_number_id);
    }
    Ok(rows
        .into_iter()
        .map(|row| AgentView {
            phone_number_ids: numbers.remove(&row.id).unwrap_or_default(),
            id: row.id,
            name: row.name,
            active: row.active,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
        .collect())
}

async fn owned_agent(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    agent_id: Uuid,
) -> Result<agent::Model, StoreError> {
    agent::Entity::find_by_id(agent_id)
        .filter(agent::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(DomainError::NotFound.into())
}

async fn view(db: &impl ConnectionTrait, row: agent::Model) -> Result<AgentView, StoreError> {
    views(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("agent view vanished".into()))
}

impl Store {
    pub async fn create_agent(
        &self,
        account_id: Uuid,
        new: NewAgent,
    ) -> Result<AgentView, StoreError> {
        let (txn, _turn) = crate::db::begin_write(&self.shared.write_gate).await?;
        let at = now();
        let row = agent::Entity::insert(agent::ActiveModel {
            id: Set(releasedesk_domain::new_id()),
            account_id: Set(account_id),
            name: Set(new.name.into_inner()),
            active: Set(new.active),
            created_at: Set(at),
            updated_at: Set(at),
        })
        .exec_with_returning(&txn)
        .await?;
        replace_numbers(&txn, account_id, row.id, &new.phone_number_ids).await?;
        let view = view(&txn, row).await?;
        txn.commit().await?;
        Ok(view)
    }

    pub async fn update_agent(
        &self,
        account_id: Uuid,
        agent_id: Uuid,
        patch: AgentPatch,
    ) -> Result<AgentView, StoreError> {
        let (txn, _turn) = crate::db::begin_write(&self.shared.write_gate).await?;
        owned_agent(&txn, account_id, agent_id).await?;
        let mut update =
            agent::Entity::update_many().col_expr(agent::Column::UpdatedAt, Expr::value(now()));
        if let Some(name) = patch.name {
            update = update.col_expr(agent::Column::Name, Expr::value(name.into_inner()));
        }
        if let Some(active) = patch.active {
            update = update.col_expr(agent::Column::Active, Expr::value(active));
        }
        update
            .filter(agent::Column::Id.eq(agent_id))
            .exec(&txn)
            .await?;
        if let Some(ids) = patch.phone_number_ids {
            replace_numbers(&txn, account_id, agent_id, &ids).await?;
        }
        let row = owned_agent(&txn, account_id, agent_id).await?;
        let view = view(&txn, row).await?;
        txn.commit().await?;
        Ok(view)
    }

    pub async fn get_agent(
        &self,
        account_id: Uuid,
        agent_id: Uuid,
    ) -> Result<AgentView, StoreError> {
        let row = owned_agent(&self.shared.db, account_id, agent_id).await?;
        view(&self.shared.db, row).await
    }

    pub async fn list_agents(
        &self,
        account_id: Uuid,
        page: PageRequest,
    ) -> Result<Page<AgentView>, StoreError> {
        let query = agent::Entity::find().filter(agent::Column::AccountId.eq(account_id));
        let page =
            paging::by_id(&self.shared.db, query, agent::Column::Id, &page, |r| r.id).await?;
        let items = views(&self.shared.db, page.items).await?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }
}

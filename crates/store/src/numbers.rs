//! Phone numbers: inventory (admin), the customer's views, configuration, and the
//! release preview.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use releasedesk_domain::{
    DomainError, E164, EmailAddress, FriendlyName, InUseAgent, Money, NumberStatus, RequestStatus,
    WebhookUrl, time::now,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, sea_query::Expr,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    Page, PageRequest, Store, StoreError,
    entity::{agent, agent_number, phone_number, release_request, sms_message},
    error::is_unique_violation,
    paging,
    schema::{MoneySchema, NumberStatusSchema},
};

/// A number's customer-editable configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct NumberConfig {
    pub email_to_sms: Option<String>,
    pub sms_webhook_url: Option<String>,
    pub voice_webhook_url: Option<String>,
}

/// A phone number as the customer API shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NumberView {
    pub id: Uuid,
    /// E.164.
    #[schema(example = "+15551234567")]
    pub phone_number: String,
    #[schema(value_type = NumberStatusSchema)]
    pub status: NumberStatus,
    pub friendly_name: Option<String>,
    pub config: NumberConfig,
    pub sms_message_count: u64,
    pub agent_ids: Vec<Uuid>,
    #[schema(value_type = MoneySchema)]
    pub monthly_price: Money,
    pub currency: String,
    pub purchased_at: DateTime<Utc>,
    pub billing_cycle_started_at: DateTime<Utc>,
    pub released_at: Option<DateTime<Utc>>,
    pub reclaimable_until: Option<DateTime<Utc>>,
    pub available_after: Option<DateTime<Utc>>,
}

/// A number to put into an account (admin, demo).
#[derive(Debug, Clone)]
pub struct NewNumber {
    pub account_id: Uuid,
    pub e164: E164,
    pub purchased_at: Option<DateTime<Utc>>,
    pub monthly_price: Money,
}

/// A change to a number: `None` leaves a field alone, `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct NumberPatch {
    pub friendly_name: Option<Option<FriendlyName>>,
    pub config: ConfigPatch,
}

#[derive(Debug, Clone, Default)]
pub struct ConfigPatch {
    pub email_to_sms: Option<Option<EmailAddress>>,
    pub sms_webhook_url: Option<Option<WebhookUrl>>,
    pub voice_webhook_url: Option<Option<WebhookUrl>>,
}

/// Why a number cannot be released right now.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Blocker {
    #[schema(value_type = String, example = "PHONE_NUMBER_IN_USE")]
    pub code: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_ids: Option<Vec<Uuid>>,
}

/// What releasing a number would cost and do, before the customer asks for it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReleasePreview {
    pub phone_number_id: Uuid,
    pub phone_number: String,
    pub can_release: bool,
    pub blockers: Vec<Blocker>,
    #[schema(value_type = MoneySchema)]
    pub early_termination_fee: Money,
    pub currency: String,
    pub cooling_off_period_days: u64,
    pub reclaim_window_days: u64,
    pub consequences: Vec<String>,
    pub warnings: Vec<String>,
}

/// Numbers the account may see: the ones it owns, and the ones it released that
/// are still within cooling-off (so it can reclaim them).
fn visible_to(account_id: Uuid) -> Condition {
    Condition::any()
        .add(phone_number::Column::AccountId.eq(account_id))
        .add(
            Condition::all()
                .add(phone_number::Column::ReleasedFromAccount.eq(account_id))
                .add(phone_number::Column::Status.eq(NumberStatus::Released.as_str())),
        )
}

pub(crate) fn parse_status(status: &str) -> Result<NumberStatus, StoreError> {
    status
        .parse()
        .map_err(|e| StoreError::Corrupt(format!("phone_numbers.status: {e}")))
}

/// The number, if the account owns it (not merely released it).
pub(crate) async fn owned(
    db: &impl ConnectionTrait,
    account_id: Uuid,
    number_id: Uuid,
) -> Result<phone_number::Model, StoreError> {
    phone_number::Entity::find_by_id(number_id)
        .filter(phone_number::Column::AccountId.eq(account_id))
        .one(db)
        .await?
        .ok_or(DomainError::NotFound.into())
}

/// Active agents that still use the number, by name.
pub(crate) async fn active_agents_using(
    db: &impl ConnectionTrait,
    number_id: Uuid,
) -> Result<Vec<InUseAgent>, StoreError> {
    let mut by_number = agents_using(db, &[number_id]).await?;
    Ok(by_number.remove(&number_id).unwrap_or_default())
}

/// Active agents that still use any of `numbers`, by number, each list by name.
pub(crate) async fn agents_using(
    db: &impl ConnectionTrait,
    numbers: &[Uuid],
) -> Result<HashMap<Uuid, Vec<InUseAgent>>, StoreError> {
    let rows: Vec<(Uuid, Uuid, String)> = agent::Entity::find()
        .select_only()
        .column(agent_number::Column::PhoneNumberId)
        .column(agent::Column::Id)
        .column(agent::Column::Name)
        .inner_join(agent_number::Entity)
        .filter(agent_number::Column::PhoneNumberId.is_in(numbers.iter().copied()))
        .filter(agent::Column::Active.eq(true))
        .order_by_asc(agent::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    let mut by_number: HashMap<Uuid, Vec<InUseAgent>> = HashMap::new();
    for (number, id, name) in rows {
        by_number
            .entry(number)
            .or_default()
            .push(InUseAgent { id, name });
    }
    Ok(by_number)
}

/// Renders rows as views, with two batched look-ups for the whole page.
async fn views(
    db: &impl ConnectionTrait,
    rows: Vec<phone_number::Model>,
) -> Result<Vec<NumberView>, StoreError> {
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let counts: HashMap<Uuid, i64> = sms_message::Entity::find()
        .select_only()
        .column(sms_message::Column::PhoneNumberId)
        .column_as(sms_message::Column::Id.count(), "n")
        .filter(sms_message::Column::PhoneNumberId.is_in(ids.clone()))
        .group_by(sms_message::Column::PhoneNumberId)
        .into_tuple::<(Uuid, i64)>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    let mut agents: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    let links = agent_number::Entity::find()
        .filter(agent_number::Column::PhoneNumberId.is_in(ids))
        .order_by_asc(agent_number::Column::AgentId)
        .all(db)
        .await?;
    for link in links {
        agents
            .entry(link.phone_number_id)
            .or_default()
            .push(link.agent_id);
    }
    rows.into_iter()
        .map(|row| {
            Ok(NumberView {
                status: parse_status(&row.status)?,
                sms_message_count: counts.get(&row.id).copied().unwrap_or(0).unsigned_abs(),
                agent_ids: agents.remove(&row.id).unwrap_or_default(),
                id: row.id,
                phone_number: row.e164,
                friendly_name: row.friendly_name,
                config: NumberConfig {
                    email_to_sms: row.email_to_sms,
                    sms_webhook_url: row.sms_webhook_url,
                    voice_webhook_url: row.voice_webhook_url,
                },
                monthly_price: Money::from_minor(row.monthly_price_minor),
                currency: row.currency,
                purchased_at: row.purchased_at,
                billing_cycle_started_at: row.billing_cycle_started_at,
                released_at: row.released_at,
                reclaimable_until: row.reclaimable_until,
                available_after: row.available_after,
            })
        })
        .collect()
}

pub(crate) async fn view(
    db: &impl ConnectionTrait,
    row: phone_number::Model,
) -> Result<NumberView, StoreError> {
    views(db, vec![row])
        .await?
        .pop()
        .ok_or_else(|| StoreError::Corrupt("number view vanished".into()))
}

impl Store {
    /// Puts a number into an account (admin, demo).
    pub async fn add_number(&self, new: NewNumber) -> Result<NumberView, StoreError> {
        let at = now();
        let purchased_at = new.purchased_at.map_or(at, |t| t.trunc_subsecs(6));
        let row = phone_number::ActiveModel {
            id: Set(releasedesk_domain::new_id()),
            e164: Set(new.e164.into_inner()),
            account_id: Set(Some(new.account_id)),
            status: Set(NumberStatus::Active.as_str().into()),
            purchased_at: Set(purchased_at),
            billing_cycle_started_at: Set(purchased_at),
            monthly_price_minor: Set(new.monthly_price.minor()),
            currency: Set(self.policy().currency.clone()),
            friendly_name: Set(None),
            email_to_sms: Set(None),
            sms_webhook_url: Set(None),
            voice_webhook_url: Set(None),
            released_at: Set(None),
            reclaimable_until: Set(None),
            available_after: Set(None),
            released_from_account: Set(None),
            created_at: Set(at),
            updated_at: Set(at),
        };
        let turn = self.shared.write_gate.turn().await;
        let inserted = phone_number::Entity::insert(row)
            .exec_with_returning(turn.db())
            .await;
        drop(turn);
        match inserted {
            Ok(row) => view(&self.shared.db, row).await,
            Err(e) if is_unique_violation(&e) => {
                Err(DomainError::invalid("e164", "this number is already in the inventory").into())
            }
            Err(e)
                if matches!(
                    e.sql_err(),
                    Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
                ) =>
            {
                Err(DomainError::invalid("account", "no such account").into())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The id of the number with this E.164 form, whoever owns it.
    pub async fn find_number_id(&self, e164: &E164) -> Result<Option<Uuid>, StoreError> {
        Ok(phone_number::Entity::find()
            .select_only()
            .column(phone_number::Column::Id)
            .filter(phone_number::Column::E164.eq(e164.as_str()))
            .into_tuple()
            .one(&self.shared.db)
            .await?)
    }

    /// Adds `count` demo SMS messages to a number's history; returns the new total.
    pub async fn add_sms(&self, number_id: Uuid, count: u32) -> Result<u64, StoreError> {
        if phone_number::Entity::find_by_id(number_id)
            .one(&self.shared.db)
            .await?
            .is_none()
        {
            return Err(DomainError::NotFound.into());
        }
        let at = now();
        let rows: Vec<_> = (0..count)
            .map(|i| sms_message::ActiveModel {
                id: Set(releasedesk_domain::new_id()),
                phone_number_id: Set(number_id),
                direction: Set(if i % 2 == 0 { "inbound" } else { "outbound" }.into()),
                peer: Set(format!("+1555010{:04}", i % 10_000)),
                body: Set(format!("Message {} of the demo history", i + 1)),
                sent_at: Set(at),
            })
            .collect();
        let turn = self.shared.write_gate.turn().await;
        for chunk in rows.chunks(500) {
            sms_message::Entity::insert_many(chunk.to_vec())
                .exec_without_returning(turn.db())
                .await?;
        }
        drop(turn);
        let total = sms_message::Entity::find()
            .filter(sms_message::Column::PhoneNumberId.eq(number_id))
            .count(&self.shared.db)
            .await?;
        Ok(total)
    }

    pub async fn list_numbers(
        &self,
        account_id: Uuid,
        status: Option<NumberStatus>,
        page: PageRequest,
    ) -> Result<Page<NumberView>, StoreError> {
        let mut query = phone_number::Entity::find().filter(visible_to(account_id));
        if let Some(status) = status {
            query = query.filter(phone_number::Column::Status.eq(status.as_str()));
        }
        let page = paging::by_id(
            &self.shared.db,
            query,
            phone_number::Column::Id,
            &page,
            |r| r.id,
        )
        .await?;
        let items = views(&self.shared.db, page.items).await?;
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// The database's plan for the first page of [`Store::list_numbers`], one
    /// line per step: for operators and tests to see that an account's numbers
    /// are found through the indexes by account, never by walking the table.
    pub async fn numbers_plan(&self, account_id: Uuid) -> Result<Vec<String>, StoreError> {
        use sea_orm::{QueryOrder, QuerySelect, QueryTrait};
        let statement = phone_number::Entity::find()
            .filter(visible_to(account_id))
            .order_by_asc(phone_number::Column::Id)
            .limit(PageRequest::DEFAULT_LIMIT)
            .build(self.shared.db.get_database_backend());
        self.plan(statement).await
    }

    pub async fn get_number(
        &self,
        account_id: Uuid,
        number_id: Uuid,
    ) -> Result<NumberView, StoreError> {
        let row = phone_number::Entity::find_by_id(number_id)
            .filter(visible_to(account_id))
            .one(&self.shared.db)
            .await?
            .ok_or(DomainError::NotFound)?;
        view(&self.shared.db, row).await
    }

    /// Sets the friendly name and configuration of an active number.
    pub async fn patch_number(
        &self,
        account_id: Uuid,
        number_id: Uuid,
        patch: NumberPatch,
    ) -> Result<NumberView, StoreError> {
        let (txn, _turn) = crate::db::begin_write(&self.shared.write_gate).await?;
        owned(&txn, account_id, number_id).await?;
        let changes = [
            (
                phone_number::Column::FriendlyName,
                patch.friendly_name.map(|v| v.map(FriendlyName::into_inner)),
            ),
            (
                phone_number::Column::EmailToSms,
                patch
                    .config
                    .email_to_sms
                    .map(|v| v.map(EmailAddress::into_inner)),
            ),
            (
                phone_number::Column::SmsWebhookUrl,
                patch
                    .config
                    .sms_webhook_url
                    .map(|v| v.map(WebhookUrl::into_inner)),
            ),
            (
                phone_number::Column::VoiceWebhookUrl,
                patch
                    .config
                    .voice_webhook_url
                    .map(|v| v.map(WebhookUrl::into_inner)),
            ),
        ];
        let mut update = phone_number::Entity::update_many()
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(now()));
        for (column, value) in changes {
            if let Some(value) = value {
                update = update.col_expr(column, Expr::value(value));
            }
        }
        let result = update
            .filter(phone_number::Column::Id.eq(number_id))
            .filter(phone_number::Column::AccountId.eq(account_id))
            .filter(phone_number::Column::Status.eq(NumberStatus::Active.as_str()))
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(DomainError::NumberNotActive.into());
        }
        let row = owned(&txn, account_id, number_id).await?;
        let view = view(&txn, row).await?;
        txn.commit().await?;
        Ok(view)
    }

    /// What releasing the number would cost and do, and what stands in the way.
    pub async fn preview_release(
        &self,
        account_id: Uuid,
        number_id: Uuid,
    ) -> Result<ReleasePreview, StoreError> {
        let number = phone_number::Entity::find_by_id(number_id)
            .filter(visible_to(account_id))
            .one(&self.shared.db)
            .await?
            .ok_or(DomainError::NotFound)?;
        let status = parse_status(&number.status)?;
        let policy = self.policy();
        let mut blockers = Vec::new();
        if status != NumberStatus::Active {
            blockers.push(Blocker {
                code: DomainError::NumberNotActive.code(),
                message: format!("The number is {status}, not active."),
                agent_ids: None,
            });
        }
        let open = release_request::Entity::find()
            .filter(release_request::Column::PhoneNumberId.eq(number_id))
            .filter(
                release_request::Column::Status
                    .is_in(RequestStatus::OPEN.iter().map(|s| s.as_str())),
            )
            .count(&self.shared.db)
            .await?;
        if open > 0 {
            blockers.push(Blocker {
                code: DomainError::ReleaseAlreadyPending.code(),
                message: "A release request for this number is already open.".into(),
                agent_ids: None,
            });
        }
        let in_use = active_agents_using(&self.shared.db, number_id).await?;
        if !in_use.is_empty() {
            let names: Vec<&str> = in_use.iter().map(|a| a.name.as_str()).collect();
            blockers.push(Blocker {
                code: DomainError::PhoneNumberInUse(Vec::new()).code(),
                message: format!(
                    "The number is assigned to active agents ({}); detach it first.",
                    names.join(", ")
                ),
                agent_ids: Some(in_use.iter().map(|a| a.id).collect()),
            });
        }
        let fee = policy.early_termination_fee(number.purchased_at, now());
        let sms = sms_message::Entity::find()
            .filter(sms_message::Column::PhoneNumberId.eq(number_id))
            .count(&self.shared.db)
            .await?;
        let e164 = number.e164;
        let consequences = vec![
            format!("{e164} leaves your account once support approves the release, and billing for it stops."),
            format!("All SMS history of {e164} ({sms} messages) is deleted."),
            "Its configuration (friendly name, email-to-SMS, SMS and voice webhook URLs) is reset to defaults.".into(),
            "It is removed from every agent it is assigned to.".into(),
            format!(
                "You can reclaim it within {} days of the release; after {} days it returns to the shared inventory.",
                policy.reclaim_window_days(),
                policy.cooling_off_days()
            ),
        ];
        let mut warnings = vec![
            "Deleted SMS history and configuration cannot be recovered, even by a reclaim."
                .to_owned(),
        ];
        if !fee.is_zero() {
            warnings.insert(
                0,
                format!(
                    "This number was purchased less than {} days ago and has a {fee} {} early termination fee.",
                    policy.minimum_term_days(),
                    policy.currency
                ),
            );
        }
        Ok(ReleasePreview {
            phone_number_id: number_id,
            phone_number: e164,
            can_release: blockers.is_empty(),
            blockers,
            early_termination_fee: fee,
            currency: policy.currency.clone(),
            cooling_off_period_days: policy.cooling_off_days(),
            reclaim_window_days: policy.reclaim_window_days(),
            consequences,
            warnings,
        })
    }
}

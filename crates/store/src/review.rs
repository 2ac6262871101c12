//! Release requests from support's side: the queue, claims and decisions.
//!
//! Every decision is a guarded UPDATE (`… WHERE status = 'pending' AND (claimed_by
//! IS NULL OR claimed_by = me)`): of two reviewers racing, exactly one changes a
//! row; the other's zero rows are diagnosed into the precise 4xx.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use releasedesk_domain::{
    DomainError, InUseAgent, Note, NumberStatus, Reason, RequestStatus, time::now,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{Expr, ExprTrait, Func, LikeExpr, Query},
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    Actor, Cursor, FiledRequest, Page, PageRequest, RequestView, StaffPrincipal, Store, StoreError,
    db::begin_write,
    entity::{account, agent, agent_number, phone_number, release_request, sms_message, staff},
    events,
    numbers::{active_agents_using, parse_status},
    outbox::{self, Email},
    paging,
};

/// Queue order by filing time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueOrder {
    #[default]
    Oldest,
    Newest,
}

/// Which claims to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClaimFilter {
    Mine,
    Unclaimed,
    #[default]
    Any,
}

/// What the queue shows.
#[derive(Debug, Clone, Default)]
pub struct QueueFilter {
    /// Defaults to `pending`.
    pub status: Option<RequestStatus>,
    pub order: QueueOrder,
    /// Part of a phone number or of an account name.
    pub search: Option<String>,
    pub claimed: ClaimFilter,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AccountRef {
    pub id: Uuid,
    pub name: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaffRef {
    pub id: Uuid,
    pub name: String,
}

/// One row of the review queue.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueItem {
    #[serde(flatten)]
    pub request: RequestView,
    pub account: AccountRef,
    pub age_seconds: i64,
    pub claimed_by: Option<StaffRef>,
    pub claimed_at: Option<DateTime<Utc>>,
    /// Whether an active agent uses the number right now.
    pub in_use: bool,
}

/// Everything a reviewer needs to decide one request.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewDetail {
    #[serde(flatten)]
    pub request: RequestView,
    pub account: AccountRef,
    pub account_email: String,
    pub age_seconds: i64,
    pub requested_by: String,
    pub claimed_by: Option<StaffRef>,
    pub claimed_at: Option<DateTime<Utc>>,
    #[schema(value_type = crate::schema::NumberStatusSchema)]
    pub number_status: NumberStatus,
    pub sms_message_count: u64,
    pub in_use: bool,
    #[schema(value_type = Vec<crate::schema::InUseAgentSchema>)]
    pub in_use_agents: Vec<InUseAgent>,
}

/// `%term%` for LIKE, with the term's own wildcards escaped.
fn contains_pattern(term: &str) -> LikeExpr {
    let escaped = term
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    LikeExpr::new(format!("%{}%", escaped.to_lowercase())).escape('\\')
}

fn search_condition(term: &str) -> Condition {
    let names = Query::select()
        .column(account::Column::Id)
        .from(account::Entity)
        .and_where(
            Expr::expr(Func::lower(Expr::col(account::Column::Name))).like(contains_pattern(term)),
        )
        .to_owned();
    Condition::any()
        .add(release_request::Column::PhoneNumber.like(contains_pattern(term)))
        .add(release_request::Column::AccountId.in_subquery(names))
}

fn age_seconds(since: DateTime<Utc>, at: DateTime<Utc>) -> i64 {
    Ord::max((at - since).num_seconds(), 0)
}

/// Why a guarded decision changed no row.
fn refusal(
    row: Option<&release_request::Model>,
    me: &StaffPrincipal,
) -> Result<DomainError, StoreError> {
    let Some(row) = row else {
        return Ok(DomainError::NotFound);
    };
    if crate::requests::parse_request_status(&row.status)? != RequestStatus::Pending {
        return Ok(DomainError::RequestNotPending);
    }
    if row.claimed_by.is_some_and(|by| by != me.id) {
        return Ok(DomainError::ClaimedByOther);
    }
    if row.filed_by_staff_id == Some(me.id) {
        return Ok(DomainError::Forbidden(
            "you filed this request; another reviewer must approve it",
        ));
    }
    Err(StoreError::Corrupt(format!(
        "guarded update on request {} refused without a reason",
        row.id
    )))
}

/// Pending, and claimed by nobody or by `me`.
fn decidable_by(me: &StaffPrincipal) -> Condition {
    Condition::all()
        .add(release_request::Column::Status.eq(RequestStatus::Pending.as_str()))
        .add(
            Condition::any()
                .add(release_request::Column::ClaimedBy.is_null())
                .add(release_request::Column::ClaimedBy.eq(me.id)),
        )
}

async fn names_of_staff(
    db: &impl ConnectionTrait,
    ids: HashSet<Uuid>,
) -> Result<HashMap<Uuid, String>, StoreError> {
    let rows: Vec<(Uuid, String)> = staff::Entity::find()
        .select_only()
        .column(staff::Column::Id)
        .column(staff::Column::Name)
        .filter(staff::Column::Id.is_in(ids))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows.into_iter().collect())
}

fn staff_ref(id: Option<Uuid>, names: &HashMap<Uuid, String>) -> Option<StaffRef> {
    id.map(|id| StaffRef {
        id,
        name: names.get(&id).cloned().unwrap_or_default(),
    })
}

/// Numbers among `ids` that an active agent uses.
async fn numbers_in_use(
    db: &impl ConnectionTrait,
    ids: Vec<Uuid>,
) -> Result<HashSet<Uuid>, StoreError> {
    let used: Vec<Uuid> = agent_number::Entity::find()
        .select_only()
        .column(agent_number::Column::PhoneNumberId)
        .inner_join(agent::Entity)
        .filter(agent_number::Column::PhoneNumberId.is_in(ids))
        .filter(agent::Column::Active.eq(true))
        .distinct()
        .into_tuple()
        .all(db)
        .await?;
    Ok(used.into_iter().collect())
}

/// The queue query for `filter`, from `page`'s cursor, `limit + 1` rows.
fn queue_select(
    me: &StaffPrincipal,
    filter: &QueueFilter,
    page: &PageRequest,
) -> Result<sea_orm::Select<release_request::Entity>, StoreError> {
    use release_request::Column;
    let status = filter.status.unwrap_or(RequestStatus::Pending);
    let ascending = filter.order == QueueOrder::Oldest;
    let mut query = release_request::Entity::find().filter(Column::Status.eq(status.as_str()));
    query = match filter.claimed {
        ClaimFilter::Mine => query.filter(Column::ClaimedBy.eq(me.id)),
        ClaimFilter::Unclaimed => query.filter(Column::ClaimedBy.is_null()),
        ClaimFilter::Any => query,
    };
    if let Some(term) = filter
        .search
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        query = query.filter(search_condition(term));
    }
    if let Some(cursor) = &page.cursor {
        query = query.filter(paging::after_time(
            Column::RequestedAt,
            Column::Id,
            cursor,
            ascending,
        )?);
    }
    query = if ascending {
        query
            .order_by_asc(Column::RequestedAt)
            .order_by_asc(Column::Id)
    } else {
        query
            .order_by_desc(Column::RequestedAt)
            .order_by_desc(Column::Id)
    };
    Ok(query.limit(page.fetch()))
}

impl Store {
    /// The review queue. With the default `pending` / oldest filter the query walks
    /// index `idx_release_requests_status (status, requested_at, id)` from the
    /// cursor and stops after `limit + 1` rows, so its cost does not grow with the
    /// number of requests stored ([`Store::queue_plan`] shows the plan).
    pub async fn queue(
        &self,
        me: &StaffPrincipal,
        filter: &QueueFilter,
        page: PageRequest,
    ) -> Result<Page<QueueItem>, StoreError> {
        let rows = queue_select(me, filter, &page)?
            .all(&self.shared.db)
            .await?;
        let page = Page::from_rows(rows, &page, |r| Cursor::after(r.requested_at, r.id), |r| r);
        self.queue_items(page).await
    }

    /// The database's plan for the queue query (`EXPLAIN QUERY PLAN` on SQLite,
    /// `EXPLAIN` on PostgreSQL), one line per step: for operators and tests to see
    /// that the queue is served by an index.
    pub async fn queue_plan(
        &self,
        me: &StaffPrincipal,
        filter: &QueueFilter,
        page: PageRequest,
    ) -> Result<Vec<String>, StoreError> {
        use sea_orm::QueryTrait;
        let statement =
            queue_select(me, filter, &page)?.build(self.shared.db.get_database_backend());
        self.plan(statement).await
    }

    /// Renders queue rows with three batched look-ups for the whole page.
    async fn queue_items(
        &self,
        page: Page<release_request::Model>,
    ) -> Result<Page<QueueItem>, StoreError> {
        let account_ids: HashSet<Uuid> = page.items.iter().map(|r| r.account_id).collect();
        let accounts: HashMap<Uuid, String> = account::Entity::find()
            .select_only()
            .column(account::Column::Id)
            .column(account::Column::Name)
            .filter(account::Column::Id.is_in(account_ids))
            .into_tuple::<(Uuid, String)>()
            .all(&self.shared.db)
            .await?
            .into_iter()
            .collect();
        let claimers = names_of_staff(
            &self.shared.db,
            page.items.iter().filter_map(|r| r.claimed_by).collect(),
        )
        .await?;
        let in_use = numbers_in_use(
            &self.shared.db,
            page.items.iter().map(|r| r.phone_number_id).collect(),
        )
        .await?;
        let at = now();
        let mut items = Vec::with_capacity(page.items.len());
        for row in page.items {
            items.push(QueueItem {
                account: AccountRef {
                    id: row.account_id,
                    name: accounts.get(&row.account_id).cloned().unwrap_or_default(),
                },
                age_seconds: age_seconds(row.requested_at, at),
                claimed_by: staff_ref(row.claimed_by, &claimers),
                claimed_at: row.claimed_at,
                in_use: in_use.contains(&row.phone_number_id),
                request: RequestView::try_from(row)?,
            });
        }
        Ok(Page {
            items,
            next_cursor: page.next_cursor,
        })
    }

    /// One request with everything needed to decide it.
    pub async fn review_detail(&self, request_id: Uuid) -> Result<ReviewDetail, StoreError> {
        detail_on(&self.shared.db, request_id).await
    }

    /// Takes a pending request (idempotent for its own claimer).
    pub async fn claim(
        &self,
        me: &StaffPrincipal,
        request_id: Uuid,
    ) -> Result<ReviewDetail, StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let updated = release_request::Entity::update_many()
            .col_expr(Column::ClaimedBy, Expr::value(me.id))
            .col_expr(Column::ClaimedAt, Expr::value(at))
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(request_id))
            .filter(Column::Status.eq(RequestStatus::Pending.as_str()))
            .filter(Column::ClaimedBy.is_null())
            .exec(&txn)
            .await?;
        if updated.rows_affected == 1 {
            events::record(&txn, request_id, "claimed", Actor::Staff(me.id), None, at).await?;
        } else {
            let row = release_request::Entity::find_by_id(request_id)
                .one(&txn)
                .await?;
            let mine = row
                .as_ref()
                .is_some_and(|r| r.claimed_by == Some(me.id) && r.status == "pending");
            if !mine {
                return Err(refusal(row.as_ref(), me)?.into());
            }
        }
        let detail = detail_on(&txn, request_id).await?;
        txn.commit().await?;
        Ok(detail)
    }

    /// Leaves a claimed request. Admins may release anyone's claim.
    pub async fn unclaim(
        &self,
        me: &StaffPrincipal,
        request_id: Uuid,
    ) -> Result<ReviewDetail, StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let mut update = release_request::Entity::update_many()
            .col_expr(Column::ClaimedBy, Expr::value(Option::<Uuid>::None))
            .col_expr(
                Column::ClaimedAt,
                Expr::value(Option::<DateTime<Utc>>::None),
            )
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(request_id))
            .filter(Column::Status.eq(RequestStatus::Pending.as_str()))
            .filter(Column::ClaimedBy.is_not_null());
        if !me.is_admin() {
            update = update.filter(Column::ClaimedBy.eq(me.id));
        }
        if update.exec(&txn).await?.rows_affected == 1 {
            events::record(&txn, request_id, "unclaimed", Actor::Staff(me.id), None, at).await?;
        } else {
            let row = release_request::Entity::find_by_id(request_id)
                .one(&txn)
                .await?;
            let unclaimed = row
                .as_ref()
                .is_some_and(|r| r.claimed_by.is_none() && r.status == "pending");
            if !unclaimed {
                return Err(refusal(row.as_ref(), me)?.into());
            }
        }
        let detail = detail_on(&txn, request_id).await?;
        txn.commit().await?;
        Ok(detail)
    }

    /// Approves a pending request: request `approved`, number `releasing`, the
    /// execution scheduled (an outbox job row) and the customer emailed — all in one
    /// transaction, after re-checking that no active agent uses the number.
    pub async fn approve(
        &self,
        me: &StaffPrincipal,
        request_id: Uuid,
        note: Option<Note>,
    ) -> Result<ReviewDetail, StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let note = note.map(Note::into_inner);
        let updated = release_request::Entity::update_many()
            .col_expr(
                Column::Status,
                Expr::value(RequestStatus::Approved.as_str()),
            )
            .col_expr(Column::ClaimedBy, Expr::value(me.id))
            .col_expr(Column::DecidedAt, Expr::value(at))
            .col_expr(Column::DecidedBy, Expr::value(me.id))
            .col_expr(Column::DecisionNote, Expr::value(note.clone()))
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(request_id))
            .filter(decidable_by(me))
            .filter(
                Condition::any()
                    .add(Column::FiledByStaffId.is_null())
                    .add(Column::FiledByStaffId.ne(me.id)),
            )
            .exec(&txn)
            .await?;
        let row = release_request::Entity::find_by_id(request_id)
            .one(&txn)
            .await?;
        let row = match row {
            Some(row) if updated.rows_affected == 1 => row,
            other => return Err(refusal(other.as_ref(), me)?.into()),
        };
        // Lock the number first: an agent assignment racing this approval either
        // committed before (and the check below sees it) or waits and then finds
        // the number no longer active.
        let marked = phone_number::Entity::update_many()
            .col_expr(
                phone_number::Column::Status,
                Expr::value(NumberStatus::Releasing.as_str()),
            )
            .col_expr(phone_number::Column::UpdatedAt, Expr::value(at))
            .filter(phone_number::Column::Id.eq(row.phone_number_id))
            .filter(phone_number::Column::Status.eq(NumberStatus::Active.as_str()))
            .exec(&txn)
            .await?;
        if marked.rows_affected == 0 {
            return Err(DomainError::NumberNotActive.into());
        }
        let in_use = active_agents_using(&txn, row.phone_number_id).await?;
        if !in_use.is_empty() {
            return Err(DomainError::PhoneNumberInUse(in_use).into());
        }
        let event_id = events::record(
            &txn,
            request_id,
            "approved",
            Actor::Staff(me.id),
            note.as_deref(),
            at,
        )
        .await?;
        outbox::queue_job(
            &txn,
            "execute_release",
            request_id,
            json!({ "request_id": request_id }),
            at,
        )
        .await?;
        self.email_customer(
            &txn,
            &row,
            "request_approved",
            event_id,
            note.as_deref(),
            at,
        )
        .await?;
        let detail = detail_on(&txn, request_id).await?;
        txn.commit().await?;
        self.wake_workers();
        Ok(detail)
    }

    /// Cancels a pending request with a note the customer receives by email.
    pub async fn cancel_by_staff(
        &self,
        me: &StaffPrincipal,
        request_id: Uuid,
        note: Note,
    ) -> Result<ReviewDetail, StoreError> {
        use release_request::Column;
        let (txn, _turn) = begin_write(&self.shared.write_gate).await?;
        let at = now();
        let note = note.into_inner();
        let updated = release_request::Entity::update_many()
            .col_expr(
                Column::Status,
                Expr::value(RequestStatus::Cancelled.as_str()),
            )
            .col_expr(Column::CancelledBy, Expr::value("staff"))
            .col_expr(Column::DecidedAt, Expr::value(at))
            .col_expr(Column::DecidedBy, Expr::value(me.id))
            .col_expr(Column::DecisionNote, Expr::value(note.clone()))
            .col_expr(Column::UpdatedAt, Expr::value(at))
            .col_expr(Column::Version, Expr::col(Column::Version).add(1))
            .filter(Column::Id.eq(request_id))
            .filter(decidable_by(me))
            .exec(&txn)
            .await?;
        let row = release_request::Entity::find_by_id(request_id)
            .one(&txn)
            .await?;
        let row = match row {
            Some(row) if updated.rows_affected == 1 => row,
            other => return Err(refusal(other.as_ref(), me)?.into()),
        };
        let event_id = events::record(
            &txn,
            request_id,
            "cancelled",
            Actor::Staff(me.id),
            Some(&note),
            at,
        )
        .await?;
        self.email_customer(&txn, &row, "request_cancelled", event_id, Some(&note), at)
            .await?;
        let detail = detail_on(&txn, request_id).await?;
        txn.commit().await?;
        self.wake_mailer();
        Ok(detail)
    }

    /// Files a request on behalf of the number's owner. The filer may not approve
    /// it (four-eyes).
    pub async fn file_on_behalf(
        &self,
        me: &StaffPrincipal,
        number_id: Uuid,
        reason: Reason,
    ) -> Result<FiledRequest, StoreError> {
        let owner: Option<Option<Uuid>> = phone_number::Entity::find_by_id(number_id)
            .select_only()
            .column(phone_number::Column::AccountId)
            .into_tuple()
            .one(&self.shared.db)
            .await?;
        match owner {
            None => Err(DomainError::NotFound.into()),
            Some(None) => Err(DomainError::NumberNotActive.into()),
            Some(Some(account_id)) => {
                self.file_request(account_id, number_id, reason, Actor::Staff(me.id))
                    .await
            }
        }
    }

    /// Queues a decision email to the request's account.
    async fn email_customer(
        &self,
        txn: &impl ConnectionTrait,
        row: &release_request::Model,
        template: &'static str,
        event_id: Uuid,
        note: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let account = crate::accounts::referenced_account(txn, row.account_id).await?;
        let payload = json!({
            "request_id": row.id,
            "phone_number": row.phone_number,
            "account_name": account.name,
            "note": note,
        });
        let email = Email {
            template,
            to: &account.email,
            event_id,
            payload,
        };
        outbox::queue_email(txn, email, at).await
    }
}

/// A request as staff see it, read on `db` (inside a write transaction, so an
/// answer is never lost after its commit).
async fn detail_on(
    db: &impl ConnectionTrait,
    request_id: Uuid,
) -> Result<ReviewDetail, StoreError> {
    let row = release_request::Entity::find_by_id(request_id)
        .one(db)
        .await?
        .ok_or(DomainError::NotFound)?;
    let account = crate::accounts::referenced_account(db, row.account_id).await?;
    let number = phone_number::Entity::find_by_id(row.phone_number_id)
        .one(db)
        .await?
        .ok_or_else(|| StoreError::Corrupt("request of a missing number".into()))?;
    let in_use_agents = active_agents_using(db, row.phone_number_id).await?;
    let sms_message_count = sms_message::Entity::find()
        .filter(sms_message::Column::PhoneNumberId.eq(row.phone_number_id))
        .count(db)
        .await?;
    let claimers = names_of_staff(db, row.claimed_by.into_iter().collect()).await?;
    let mut request = RequestView::try_from(row.clone())?;
    request.events = Some(events::timeline(db, request_id).await?);
    Ok(ReviewDetail {
        request,
        account: AccountRef {
            id: account.id,
            name: account.name,
        },
        account_email: account.email,
        age_seconds: age_seconds(row.requested_at, now()),
        requested_by: row.requested_by,
        claimed_by: staff_ref(row.claimed_by, &claimers),
        claimed_at: row.claimed_at,
        number_status: parse_status(&number.status)?,
        sms_message_count,
        in_use: !in_use_agents.is_empty(),
        in_use_agents,
    })
}

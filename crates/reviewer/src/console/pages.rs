//! Page rendering: askama templates fed with preformatted view models, so the
//! templates hold no logic beyond loops and conditionals.

use askama::Template;
use axum::{http::StatusCode, response::Html};
use chrono::{DateTime, Utc};
use releasedesk_api::ApiError;
use releasedesk_domain::RequestStatus;
use releasedesk_store::{ClaimFilter, Page, QueueFilter, QueueItem, QueueOrder, ReviewDetail};

use super::session::{Flash, Session};
use crate::body::QueueQuery;

/// "42 s", "17 min", "3 h", "5 d": the age of a request at a glance.
pub fn short_age(seconds: i64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3_600 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3_600),
        s => format!("{} d", s / 86_400),
    }
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

/// A user-facing sentence for a refused action.
pub fn describe(error: &ApiError) -> String {
    use releasedesk_domain::DomainError as D;
    match error {
        ApiError::Domain(D::ClaimedByOther) => "Another reviewer has claimed this request.".into(),
        ApiError::Domain(D::RequestNotPending) => "This request is no longer pending.".into(),
        ApiError::Domain(D::PhoneNumberInUse(agents)) => {
            let names: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
            format!(
                "The number is still used by active agents ({}); it cannot be released yet.",
                names.join(", ")
            )
        }
        ApiError::Domain(D::Validation(fields)) => fields
            .iter()
            .map(|f| f.message.clone())
            .collect::<Vec<_>>()
            .join(" "),
        ApiError::Domain(D::Forbidden(why)) => format!("Not allowed: {why}."),
        other => other.to_string(),
    }
}

fn render(template: &impl Template) -> Html<String> {
    match template.render() {
        Ok(html) => Html(html),
        Err(error) => {
            tracing::error!(%error, "template failed to render");
            Html(
                "<!doctype html><title>Error</title><p>The page could not be rendered.</p>"
                    .to_owned(),
            )
        }
    }
}

pub struct SelectOption {
    pub value: &'static str,
    pub label: &'static str,
    pub selected: bool,
}

fn options(pairs: &[(&'static str, &'static str)], current: &str) -> Vec<SelectOption> {
    pairs
        .iter()
        .map(|(value, label)| SelectOption {
            value,
            label,
            selected: *value == current,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "sign_in.html")]
struct SignIn<'a> {
    /// The sign-in form's own token (no session yet).
    csrf: &'a str,
    flash: Option<Flash>,
    staff_name: Option<String>,
}

pub fn sign_in(csrf: &str, flash: Option<Flash>) -> Html<String> {
    render(&SignIn {
        csrf,
        flash,
        staff_name: None,
    })
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    csrf: String,
    status: u16,
    message: String,
    flash: Option<Flash>,
    staff_name: Option<String>,
}

pub fn error_page(status: StatusCode, message: &str) -> Html<String> {
    render(&ErrorPage {
        csrf: String::new(),
        status: status.as_u16(),
        message: message.to_owned(),
        flash: None,
        staff_name: None,
    })
}

pub struct Row {
    pub href: String,
    pub phone_number: String,
    pub account: String,
    pub age: String,
    pub status: String,
    pub fee: String,
    pub in_use: bool,
    pub claimed_by: String,
    pub mine: bool,
}

#[derive(Template)]
#[template(path = "queue.html")]
struct QueuePage {
    staff_name: Option<String>,
    csrf: String,
    flash: Option<Flash>,
    rows: Vec<Row>,
    statuses: Vec<SelectOption>,
    orders: Vec<SelectOption>,
    claims: Vec<SelectOption>,
    q: String,
    next_href: Option<String>,
    first_href: Option<String>,
}

/// The queue URL for the same filters, at `cursor`.
fn queue_href(query: &QueueQuery, cursor: Option<&str>) -> String {
    let mut params: Vec<(&str, &str)> = Vec::new();
    for (key, value) in [
        ("status", &query.status),
        ("order", &query.order),
        ("q", &query.q),
        ("claimed", &query.claimed),
        ("limit", &query.limit),
    ] {
        if let Some(v) = value.as_deref().filter(|v| !v.is_empty()) {
            params.push((key, v));
        }
    }
    if let Some(cursor) = cursor {
        params.push(("cursor", cursor));
    }
    let encoded: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect();
    if encoded.is_empty() {
        "/reviewer/queue".to_owned()
    } else {
        format!("/reviewer/queue?{}", encoded.join("&"))
    }
}

fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub fn queue(
    session: &Session,
    query: &QueueQuery,
    filter: &QueueFilter,
    page: Page<QueueItem>,
    flash: Option<Flash>,
) -> Html<String> {
    let statuses: Vec<(&'static str, &'static str)> = RequestStatus::ALL
        .iter()
        .map(|s| (s.as_str(), s.as_str()))
        .collect();
    let status = filter.status.unwrap_or(RequestStatus::Pending).as_str();
    let order = match filter.order {
        QueueOrder::Oldest => "oldest",
        QueueOrder::Newest => "newest",
    };
    let claimed = match filter.claimed {
        ClaimFilter::Mine => "mine",
        ClaimFilter::Unclaimed => "unclaimed",
        ClaimFilter::Any => "any",
    };
    let rows = page
        .items
        .into_iter()
        .map(|item| Row {
            href: format!("/reviewer/requests/{}", item.request.id),
            phone_number: item.request.phone_number,
            account: item.account.name,
            age: short_age(item.age_seconds),
            status: item.request.status.to_string(),
            fee: format!(
                "{} {}",
                item.request.early_termination_fee, item.request.currency
            ),
            in_use: item.in_use,
            mine: item
                .claimed_by
                .as_ref()
                .is_some_and(|c| c.id == session.staff.id),
            claimed_by: item.claimed_by.map(|c| c.name).unwrap_or_default(),
        })
        .collect();
    render(&QueuePage {
        staff_name: Some(session.staff.name.clone()),
        csrf: session.csrf.clone(),
        flash,
        rows,
        statuses: options(&statuses, status),
        orders: options(
            &[("oldest", "Oldest first"), ("newest", "Newest first")],
            order,
        ),
        claims: options(
            &[
                ("any", "Anyone's"),
                ("mine", "Mine"),
                ("unclaimed", "Unclaimed"),
            ],
            claimed,
        ),
        q: query.q.clone().unwrap_or_default(),
        next_href: page
            .next_cursor
            .as_deref()
            .map(|c| queue_href(query, Some(c))),
        first_href: query.cursor.is_some().then(|| queue_href(query, None)),
    })
}

pub struct EventRow {
    pub at: String,
    pub kind: String,
    pub actor: String,
    pub note: String,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage<'a> {
    staff_name: Option<String>,
    csrf: String,
    flash: Option<Flash>,
    d: &'a ReviewDetail,
    age: String,
    requested_at: String,
    fee: String,
    claimed_by: String,
    claimed_by_me: bool,
    claimed_by_other: bool,
    pending: bool,
    events: Vec<EventRow>,
    agents: Vec<String>,
}

pub fn request(session: &Session, detail: &ReviewDetail, flash: Option<Flash>) -> Html<String> {
    let request = &detail.request;
    let claimer = detail.claimed_by.as_ref();
    let events = request
        .events
        .iter()
        .flatten()
        .map(|e| EventRow {
            at: when(e.at),
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            note: e.note.clone().unwrap_or_default(),
        })
        .collect();
    render(&RequestPage {
        staff_name: Some(session.staff.name.clone()),
        csrf: session.csrf.clone(),
        flash,
        d: detail,
        age: short_age(detail.age_seconds),
        requested_at: when(request.requested_at),
        fee: format!("{} {}", request.early_termination_fee, request.currency),
        claimed_by: claimer.map(|c| c.name.clone()).unwrap_or_default(),
        claimed_by_me: claimer.is_some_and(|c| c.id == session.staff.id),
        claimed_by_other: claimer.is_some_and(|c| c.id != session.staff.id),
        pending: request.status == RequestStatus::Pending,
        events,
        agents: detail
            .in_use_agents
            .iter()
            .map(|a| a.name.clone())
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_at_a_glance() {
        assert_eq!(short_age(5), "5 s");
        assert_eq!(short_age(125), "2 min");
        assert_eq!(short_age(3 * 3_600 + 59), "3 h");
        assert_eq!(short_age(47 * 3_600), "47 h");
        assert_eq!(short_age(5 * 86_400), "5 d");
    }

    #[test]
    fn queue_links_keep_the_filters() {
        let query = QueueQuery {
            q: Some("Acme & Co".into()),
            claimed: Some("mine".into()),
            ..QueueQuery::default()
        };
        assert_eq!(
            queue_href(&query, Some("abc")),
            "/reviewer/queue?q=Acme%20%26%20Co&claimed=mine&cursor=abc"
        );
        assert_eq!(queue_href(&QueueQuery::default(), None), "/reviewer/queue");
    }
}

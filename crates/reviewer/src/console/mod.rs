//! The reviewer console: server-rendered HTML, no JavaScript. Every page calls
//! the same store operations as the reviewer API; every form carries the session's
//! CSRF token; results come back as one-shot flash messages.

mod pages;
mod session;

use std::time::Duration;

use axum::{
    Form, Router,
    extract::{FromRef, Path, State},
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use axum_extra::extract::{SignedCookieJar, cookie::Key};
use releasedesk_api::{ApiError, extract::Query};
use releasedesk_domain::DomainError;
use releasedesk_store::Store;
use serde::Deserialize;
use uuid::Uuid;

use crate::body::{ApproveBody, CancelBody, QueueQuery};
use session::{Session, login_csrf, login_csrf_ok, set_flash, take_flash};

/// How the console signs and scopes its cookies.
#[derive(Clone)]
pub struct ConsoleSettings {
    /// Signs session cookies; every reviewer process must share it.
    pub key: Key,
    /// Send cookies over HTTPS only (when the public URL is https).
    pub secure_cookies: bool,
    pub session_ttl: Duration,
}

impl std::fmt::Debug for ConsoleSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleSettings")
            .field("secure_cookies", &self.secure_cookies)
            .field("session_ttl", &self.session_ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct ConsoleState {
    store: Store,
    settings: ConsoleSettings,
}

impl FromRef<ConsoleState> for Store {
    fn from_ref(state: &ConsoleState) -> Store {
        state.store.clone()
    }
}

impl FromRef<ConsoleState> for Key {
    fn from_ref(state: &ConsoleState) -> Key {
        state.settings.key.clone()
    }
}

pub fn router(store: Store, settings: ConsoleSettings) -> Router {
    Router::new()
        .route(
            "/reviewer",
            get(|| async { Redirect::to("/reviewer/queue") }),
        )
        .route(
            "/reviewer/",
            get(|| async { Redirect::to("/reviewer/queue") }),
        )
        .route("/reviewer/sign-in", get(sign_in_page).post(sign_in))
        .route("/reviewer/sign-out", post(sign_out))
        .route("/reviewer/queue", get(queue_page))
        .route("/reviewer/requests/{id}", get(request_page))
        .route("/reviewer/requests/{id}/{action}", post(act))
        .route("/reviewer/static/console.css", get(stylesheet))
        .with_state(ConsoleState { store, settings })
}

/// An error on a page: rendered as a small HTML page, never as JSON.
pub struct ConsoleError(ApiError);

impl From<ApiError> for ConsoleError {
    fn from(error: ApiError) -> Self {
        Self(error)
    }
}

impl From<releasedesk_store::StoreError> for ConsoleError {
    fn from(error: releasedesk_store::StoreError) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if let ApiError::Internal(detail) = &self.0 {
            tracing::error!(error = %detail, "console error");
        }
        let message = match &self.0 {
            ApiError::Internal(_) => "Something went wrong on our side.".to_owned(),
            ApiError::Domain(DomainError::Validation(fields)) => fields
                .iter()
                .map(|f| format!("{}: {}", f.field, f.message))
                .collect::<Vec<_>>()
                .join("; "),
            other => other.to_string(),
        };
        (status, pages::error_page(status, &message)).into_response()
    }
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../static/console.css"),
    )
}

async fn sign_in_page(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
) -> (SignedCookieJar, Html<String>) {
    let (jar, flash) = take_flash(jar);
    let (jar, csrf) = login_csrf(jar, state.settings.secure_cookies);
    (jar, pages::sign_in(&csrf, flash))
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    token: Option<String>,
    csrf: Option<String>,
}

async fn sign_in(
    State(state): State<ConsoleState>,
    jar: SignedCookieJar,
    Form(form): Form<SignInForm>,
) -> Result<(SignedCookieJar, Redirect), ConsoleError> {
    let secure = state.settings.secure_cookies;
    if !login_csrf_ok(&jar, form.csrf.as_deref()) {
        let jar = set_flash(
            jar,
            false,
            "Your sign-in form expired; please try again.",
            secure,
        );
        return Ok((jar, Redirect::to(session::SIGN_IN)));
    }
    let token = form.token.unwrap_or_default();
    match state.store.authenticate_staff(token.trim()).await? {
        Some(staff) => Ok((
            Session::start(jar, &state, staff.id),
            Redirect::to("/reviewer/queue"),
        )),
        None => {
            let jar = set_flash(jar, false, "That is not a valid staff token.", secure);
            Ok((jar, Redirect::to(session::SIGN_IN)))
        }
    }
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    csrf: Option<String>,
    note: Option<String>,
}

async fn sign_out(
    State(state): State<ConsoleState>,
    session: Session,
    jar: SignedCookieJar,
    Form(form): Form<ActionForm>,
) -> (SignedCookieJar, Redirect) {
    if !session.csrf_ok(form.csrf.as_deref()) {
        return (
            set_flash(
                jar,
                false,
                "Invalid form token.",
                state.settings.secure_cookies,
            ),
            Redirect::to("/reviewer/queue"),
        );
    }
    let jar = Session::end(jar);
    (
        set_flash(jar, true, "Signed out.", state.settings.secure_cookies),
        Redirect::to(session::SIGN_IN),
    )
}

async fn queue_page(
    State(state): State<ConsoleState>,
    session: Session,
    jar: SignedCookieJar,
    Query(query): Query<QueueQuery>,
) -> Result<(SignedCookieJar, Html<String>), ConsoleError> {
    let (filter, page) = query.parse()?;
    let items = state.store.queue(&session.staff, &filter, page).await?;
    let (jar, flash) = take_flash(jar);
    Ok((jar, pages::queue(&session, &query, &filter, items, flash)))
}

async fn request_page(
    State(state): State<ConsoleState>,
    session: Session,
    jar: SignedCookieJar,
    Path(id): Path<String>,
) -> Result<(SignedCookieJar, Html<String>), ConsoleError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::from(DomainError::NotFound))?;
    let detail = state.store.review_detail(id).await?;
    let (jar, flash) = take_flash(jar);
    Ok((jar, pages::request(&session, &detail, flash)))
}

/// Runs a console action; the result, good or bad, comes back as a flash message.
async fn act(
    State(state): State<ConsoleState>,
    session: Session,
    jar: SignedCookieJar,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<ActionForm>,
) -> Result<(SignedCookieJar, Redirect), ConsoleError> {
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::from(DomainError::NotFound))?;
    let back = Redirect::to(&format!("/reviewer/requests/{id}"));
    let secure = state.settings.secure_cookies;
    if !session.csrf_ok(form.csrf.as_deref()) {
        return Ok((
            set_flash(jar, false, "Invalid form token; please try again.", secure),
            back,
        ));
    }
    let me = &session.staff;
    let outcome = match action.as_str() {
        "claim" => state
            .store
            .claim(me, id)
            .await
            .map(|_| "You claimed this request.")
            .map_err(ApiError::from),
        "unclaim" => state
            .store
            .unclaim(me, id)
            .await
            .map(|_| "You left this request.")
            .map_err(ApiError::from),
        "approve" => match (ApproveBody { note: form.note }).parse() {
            Ok(note) => state
                .store
                .approve(me, id, note)
                .await
                .map(|_| "Approved: the release is scheduled.")
                .map_err(ApiError::from),
            Err(e) => Err(e),
        },
        "cancel" => match (CancelBody { note: form.note }).parse() {
            Ok(note) => state
                .store
                .cancel_by_staff(me, id, note)
                .await
                .map(|_| "Cancelled; the customer is emailed your note.")
                .map_err(ApiError::from),
            Err(_) => Err(ApiError::invalid(
                "note",
                "A note for the customer is required to cancel (1–1000 characters).",
            )),
        },
        _ => return Err(ApiError::RouteNotFound.into()),
    };
    let jar = match outcome {
        Ok(message) => set_flash(jar, true, message, secure),
        Err(ApiError::Internal(detail)) => return Err(ApiError::Internal(detail).into()),
        Err(error) => set_flash(jar, false, &pages::describe(&error), secure),
    };
    Ok((jar, back))
}

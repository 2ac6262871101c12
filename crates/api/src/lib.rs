//! The customer HTTP API (`/api/v1`), and the HTTP pieces every ReleaseDesk front
//! end shares: the error envelope, extractors that render their rejections in it,
//! and the fallbacks that keep axum's own answers in it too.

pub mod body;
pub mod envelope;
mod error;
pub mod extract;
pub mod guard;
mod handlers;

use std::any::Any;

use axum::{
    Router,
    body::Body,
    http::{Response, StatusCode, header},
    response::IntoResponse,
    routing::{get, post},
};
use releasedesk_store::Store;

pub use error::ApiError;
use handlers::{agents, numbers, requests};

/// The customer API's routes, under `/api/v1`.
pub fn router(store: Store) -> Router {
    let v1 = Router::new()
        .route("/phone-numbers", get(numbers::list))
        .route(
            "/phone-numbers/{id}",
            get(numbers::get).patch(numbers::patch),
        )
        .route(
            "/phone-numbers/{id}/release-preview",
            get(numbers::release_preview),
        )
        .route(
            "/phone-numbers/{id}/request-release",
            post(numbers::request_release),
        )
        .route("/phone-numbers/{id}/reclaim", post(numbers::reclaim))
        .route("/release-requests", get(requests::list))
        .route("/release-requests/{id}", get(requests::get))
        .route("/release-requests/{id}/cancel", post(requests::cancel))
        .route("/agents", get(agents::list).post(agents::create))
        .route("/agents/{id}", get(agents::get).patch(agents::patch))
        .with_state(store);
    Router::new().nest("/api/v1", v1)
}

/// Fallback for paths no router knows.
pub async fn route_not_found() -> ApiError {
    ApiError::RouteNotFound
}

/// Fallback for known paths with a method they do not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Renders a panic as a plain 500 in the envelope; the panic message is logged,
/// never sent.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let message = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "unknown panic".into());
    ApiError::Internal(format!("handler panicked: {message}")).into_response()
}

/// Last line of defence for the envelope: an error response that is not JSON
/// (axum's own 405, a timeout layer's 408, ...) is rewritten into the envelope.
pub async fn ensure_envelope(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !status.is_client_error() && !status.is_server_error() || is_json {
        return response;
    }
    let error = match status {
        StatusCode::NOT_FOUND => ApiError::RouteNotFound,
        StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed,
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::REQUEST_TIMEOUT => ApiError::Unavailable,
        other if other.is_client_error() => {
            ApiError::MalformedJson(format!("the request was rejected ({other})"))
        }
        other => ApiError::Internal(format!("unexpected {other} without a body")),
    };
    let mut rewritten = error.into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = response.headers().get(header::ALLOW)
    {
        rewritten.headers_mut().insert(header::ALLOW, allow.clone());
    }
    rewritten
}

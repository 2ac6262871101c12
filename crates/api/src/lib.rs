//! The customer HTTP API (`/api/v1`), and the HTTP pieces every ReleaseDesk front
//! end shares: the error envelope, extractors that render their rejections in it,
//! and the fallbacks that keep axum's own answers in it too.

pub mod body;
pub mod envelope;
mod error;
pub mod extract;
pub mod guard;
mod handlers;
pub mod openapi;

use std::any::Any;

use axum::{
    Router,
    body::Body,
    http::{Response, StatusCode, header},
    response::IntoResponse,
};
use releasedesk_store::Store;
use utoipa_axum::{router::OpenApiRouter, routes};

pub use error::ApiError;
use handlers::{agents, numbers, requests};

/// The customer API's routes, under `/api/v1`.
pub fn router(store: Store) -> Router {
    let (router, _) = routes().split_for_parts();
    router.with_state(store)
}

/// The customer API's part of the OpenAPI document (paths under `/api/v1`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().into_openapi()
}

/// Every route, registered through `routes!` so that it is documented by
/// construction: a handler without `#[utoipa::path]` does not compile here.
fn routes() -> OpenApiRouter<Store> {
    let v1 = OpenApiRouter::default()
        .routes(routes!(numbers::list))
        .routes(routes!(numbers::get, numbers::patch))
        .routes(routes!(numbers::release_preview))
        .routes(routes!(numbers::request_release))
        .routes(routes!(numbers::reclaim))
        .routes(routes!(requests::list))
        .routes(routes!(requests::get))
        .routes(routes!(requests::cancel))
        .routes(routes!(agents::list, agents::create))
        .routes(routes!(agents::get, agents::patch));
    OpenApiRouter::default().nest("/api/v1", v1)
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

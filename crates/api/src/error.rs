//! The one mapping from every failure to the contract's error envelope.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use releasedesk_domain::{DomainError, FieldError};
use releasedesk_store::StoreError;
use serde::Serialize;
use serde_json::{Value, json};

/// Seconds a client should wait before retrying when the database is unreachable.
const UNAVAILABLE_RETRY_AFTER_SECS: u32 = 5;

/// Everything an HTTP handler can answer with besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Domain(#[from] DomainError),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("the request body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("the request body is too large")]
    PayloadTooLarge,
    #[error("no route matches this path")]
    RouteNotFound,
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("the service is temporarily unavailable; retry shortly")]
    Unavailable,
    #[error("too many requests; retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still in progress; retry shortly")]
    IdempotencyKeyInUse,
    /// Logged with its cause; the client sees only a generic message.
    #[error("internal error")]
    Internal(String),
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Domain(e) => Self::Domain(e),
            StoreError::Unauthenticated => Self::Unauthorized,
            StoreError::Unavailable(_) => Self::Unavailable,
            other => Self::Internal(format!("{other:#?}")),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Domain(e) => match e {
                DomainError::Validation(_) | DomainError::PhoneNumberInUse(_) => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                DomainError::NotFound => StatusCode::NOT_FOUND,
                DomainError::Forbidden(_) => StatusCode::FORBIDDEN,
                DomainError::ReleaseAlreadyPending
                | DomainError::RequestNotPending
                | DomainError::NumberNotActive
                | DomainError::ReclaimWindowExpired
                | DomainError::NumberNotReleased
                | DomainError::ClaimedByOther => StatusCode::CONFLICT,
            },
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::MalformedJson(_) => StatusCode::BAD_REQUEST,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RouteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::IdempotencyKeyInUse => StatusCode::CONFLICT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::Domain(e) => e.code(),
            Self::Unauthorized => "UNAUTHORIZED",
            Self::MalformedJson(_) => "MALFORMED_JSON",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::RouteNotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::Unavailable => "UNAVAILABLE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInUse => "IDEMPOTENCY_KEY_IN_USE",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            Self::Domain(DomainError::Forbidden(why)) => (*why).to_owned(),
            other => other.to_string(),
        }
    }

    pub(crate) fn details(&self) -> Option<Value> {
        match self {
            Self::Domain(DomainError::Validation(fields)) => Some(json!(fields)),
            Self::Domain(DomainError::PhoneNumberInUse(agents)) => Some(
                agents
                    .iter()
                    .map(|agent| {
                        json!({
                            "field": "agent_ids",
                            "message": format!("assigned to active agent \"{}\"", agent.name),
                            "agent_id": agent.id,
                            "agent_name": agent.name,
                        })
                    })
                    .collect(),
            ),
            _ => None,
        }
    }

    /// A validation error on one field.
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Domain(DomainError::Validation(vec![FieldError::new(
            field, message,
        )]))
    }
}

/// `{"success": false, "message": …, "code": …, "details"?: […]}`.
#[derive(Serialize)]
struct ErrorBody {
    success: bool,
    message: String,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(detail) = &self {
            tracing::error!(error = %detail, "internal error");
        }
        let body = ErrorBody {
            success: false,
            message: self.message(),
            code: self.code(),
            details: self.details(),
        };
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        match self {
            Self::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Self::Unavailable => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(UNAVAILABLE_RETRY_AFTER_SECS),
                );
            }
            Self::RateLimited { retry_after_secs } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after_secs));
            }
            Self::IdempotencyKeyInUse => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(1u32));
            }
            _ => {}
        }
        response
    }
}

//! What stands in front of every JSON API request, before its handler: the rate
//! limit per token and `Idempotency-Key` replay for POSTs (CONTRACT §3).
//! Authentication is the handlers' extractors' (`extract`): the guard looks
//! the caller up only for a key, whose scope is the caller, and hands the
//! principal on so that it is looked up once.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::Arc,
    time::Duration,
};

use axum::{
    body::{Body, Bytes, to_bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use releasedesk_store::{KeyClaim, KeyScope, KeyTimes, Principal, Store, StoredResponse};
use sha2::{Digest, Sha256};

use crate::{ApiError, extract::bearer_token};

/// The request header carrying the client's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a response that replays a stored one.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Longest idempotency key accepted (CONTRACT §3).
const MAX_KEY_CHARS: usize = 255;
/// Largest response body kept for replay; API responses are far smaller.
const MAX_STORED_RESPONSE: usize = 1024 * 1024;

/// Requests per token: a steady rate with a burst allowance.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

/// Settings of the guard.
#[derive(Debug, Clone, Copy)]
pub struct GuardSettings {
    /// `None` turns rate limiting off.
    pub rate_limit: Option<RateLimit>,
    pub idempotency: KeyTimes,
    /// Largest request body read (the same limit the extractors apply).
    pub max_body_bytes: usize,
}

/// Who a request is counted against: its bearer token, or without one its
/// address (so guessing tokens is limited too).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Caller {
    Token(String),
    Address(IpAddr),
}

/// Shared state of the guard middleware; cheap to clone.
#[derive(Clone)]
pub struct Guard {
    store: Store,
    limiter: Option<Arc<DefaultKeyedRateLimiter<Caller>>>,
    settings: GuardSettings,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Guard {
    pub fn new(store: Store, settings: GuardSettings) -> Self {
        let limiter = settings.rate_limit.map(|limit| {
            Arc::new(RateLimiter::keyed(
                Quota::per_second(limit.per_second).allow_burst(limit.burst),
            ))
        });
        Self {
            store,
            limiter,
            settings,
        }
    }

    /// Forgets callers whose buckets are full again, so the limiter's memory
    /// tracks active callers only. Call it now and then.
    pub fn forget_idle_callers(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// `Err(seconds to wait)` when `caller` is over its limit.
    fn check_rate(&self, caller: &Caller) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(caller).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// Whether a path belongs to one of the JSON APIs the guard covers (the console,
/// the docs and the operational endpoints are not rate limited).
fn is_api(path: &str) -> bool {
    path.starts_with("/api/v1/") || path.starts_with("/reviewer/api/v1/")
}

/// The middleware: `axum::middleware::from_fn_with_state(guard, guard::run)`.
pub async fn run(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    if !is_api(request.uri().path()) {
        return next.run(request).await;
    }
    let token = bearer_token(request.headers()).map(str::to_owned);

    let caller = match (
        &token,
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
    ) {
        (Some(token), _) => Some(Caller::Token(token.clone())),
        (None, Some(ConnectInfo(peer))) => Some(Caller::Address(peer.ip())),
        (None, None) => None,
    };
    if let Some(caller) = caller
        && let Err(retry_after_secs) = guard.check_rate(&caller)
    {
        return ApiError::RateLimited { retry_after_secs }.into_response();
    }

    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(key) = request.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(request).await;
    };
    let principal = match token {
        Some(token) => match guard.store.authenticate(&token).await {
            Ok(principal) => principal,
            Err(error) => return ApiError::from(error).into_response(),
        },
        None => None,
    };
    let Some(principal) = principal else {
        // No valid token: the handler's extractor answers 401.
        return next.run(request).await;
    };
    let scope = match &principal {
        Principal::Customer(customer) => KeyScope::account(customer.account_id),
        Principal::Staff(staff) => KeyScope::staff(staff.id),
    };
    request.extensions_mut().insert(principal);
    match idempotency_key(&key) {
        Err(error) => error.into_response(),
        Ok(key) => idempotent(&guard, &scope, &key, request, next)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// A valid key: 1–255 visible ASCII characters.
fn idempotency_key(value: &HeaderValue) -> Result<String, ApiError> {
    let invalid = || {
        ApiError::invalid(
            "Idempotency-Key",
            format!("must be 1 to {MAX_KEY_CHARS} visible ASCII characters"),
        )
    };
    let key = value.to_str().map_err(|_| invalid())?;
    let valid =
        (1..=MAX_KEY_CHARS).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic());
    if valid {
        Ok(key.to_owned())
    } else {
        Err(invalid())
    }
}

/// Runs a POST under its idempotency key: replays, refuses, or runs it and keeps
/// the response.
async fn idempotent(
    guard: &Guard,
    scope: &KeyScope,
    key: &str,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, guard.settings.max_body_bytes)
        .await
        .map_err(|_| ApiError::PayloadTooLarge)?;
    let hash = request_hash(&parts.method, parts.uri.path(), &body);
    let store = &guard.store;

    match store
        .claim_idempotency_key(scope, key, &hash, guard.settings.idempotency)
        .await?
    {
        KeyClaim::Proceed => {}
        KeyClaim::Replay(stored) => return Ok(replay(stored)),
        KeyClaim::Reused => return Err(ApiError::IdempotencyKeyReused),
        KeyClaim::InFlight => return Err(ApiError::IdempotencyKeyInUse),
    }

    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    let status = response.status();
    // Failures worth retrying are not the request's answer: give the key back.
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        if let Err(error) = store.release_idempotency_key(scope, key).await {
            tracing::warn!(%error, "could not release an idempotency key; it frees itself when its lock expires");
        }
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let body = match to_bytes(body, MAX_STORED_RESPONSE).await {
        Ok(body) => body,
        Err(error) => {
            // The handler's answer is lost to us and to the client alike.
            let _ = store.release_idempotency_key(scope, key).await;
            return Err(ApiError::Internal(format!(
                "reading the response body: {error}"
            )));
        }
    };
    match std::str::from_utf8(&body) {
        Ok(text) => {
            let stored = StoredResponse {
                status: status.as_u16(),
                body: text.to_owned(),
            };
            if let Err(error) = store.complete_idempotency_key(scope, key, &stored).await {
                // The effect happened; the client still gets its answer. A retry
                // waits for the claim's lock to expire, then runs again and meets
                // the business rules (409 for a request already filed).
                tracing::warn!(%error, "could not store the response of an idempotent request");
            }
        }
        Err(_) => {
            let _ = store.release_idempotency_key(scope, key).await;
        }
    }
    Ok(Response::from_parts(parts, Body::from(body)))
}

/// SHA-256 over the method, the path and the body. A JSON body is hashed in
/// canonical form (keys sorted, no whitespace), so formatting does not matter.
fn request_hash(method: &Method, path: &str, body: &Bytes) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|value| serde_json::to_vec(&canonical_json(value)).ok());
    let mut hasher = Sha256::new();
    hasher.update(method.as_str().as_bytes());
    hasher.update(b"\n");
    hasher.update(path.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.as_deref().unwrap_or(body));
    hex::encode(hasher.finalize())
}

/// `value` with every object's keys in sorted order, whatever map serde_json
/// was built with.
fn canonical_json(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, canonical_json(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_json).collect()),
        other => other,
    }
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let mut response = (status, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// How often [`Guard::forget_idle_callers`] should run.
pub const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_to_255_visible_ascii_characters() {
        let ok = |s: &str| idempotency_key(&HeaderValue::from_str(s).unwrap()).is_ok();
        assert!(ok("a"));
        assert!(ok(&"k".repeat(255)));
        assert!(!ok(""));
        assert!(!ok(&"k".repeat(256)));
        assert!(!ok("has space"));
    }

    #[test]
    fn json_bodies_hash_alike_whatever_their_formatting() {
        let a = request_hash(&Method::POST, "/x", &Bytes::from(r#"{"a":1,"b":[1,2]}"#));
        let b = request_hash(
            &Method::POST,
            "/x",
            &Bytes::from("{ \"b\": [1, 2],\n \"a\": 1 }"),
        );
        let other_path = request_hash(&Method::POST, "/y", &Bytes::from(r#"{"a":1,"b":[1,2]}"#));
        let other_body = request_hash(&Method::POST, "/x", &Bytes::from(r#"{"a":2,"b":[1,2]}"#));
        assert_eq!(a, b);
        assert_ne!(a, other_path);
        assert_ne!(a, other_body);
    }
}

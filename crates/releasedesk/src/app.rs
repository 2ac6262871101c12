//! The HTTP application: every front end's routes, the operational endpoints, and
//! the layers that keep every answer in the contract's envelope.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware::{self, map_response},
    response::IntoResponse,
    routing::get,
};
use releasedesk_api::{
    ApiError, ensure_envelope,
    guard::{self, Guard, GuardSettings},
    method_not_allowed, panic_response, route_not_found,
};
use releasedesk_reviewer::ConsoleSettings;
use releasedesk_store::Store;
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};

use crate::{
    config::{ConfigError, Settings},
    metrics,
};

/// Request bodies larger than this are refused (413) before any parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Which parts a process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub customer_api: bool,
    pub reviewer: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        customer_api: true,
        reviewer: true,
    };
    pub const CUSTOMER_API: Parts = Parts {
        customer_api: true,
        reviewer: false,
    };
    pub const REVIEWER: Parts = Parts {
        customer_api: false,
        reviewer: true,
    };
}

/// What the router needs besides the store.
#[derive(Clone)]
pub struct AppSettings {
    pub console: ConsoleSettings,
    pub guard: GuardSettings,
    /// A request still running after this is answered 503 `UNAVAILABLE`.
    pub request_timeout: Duration,
}

impl AppSettings {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        Ok(Self {
            console: settings.console_settings()?,
            guard: settings.guard_settings(MAX_BODY_BYTES),
            request_timeout: settings.server.request_timeout,
        })
    }
}

/// The full router for a process running `parts`.
pub fn router(store: Store, parts: Parts, settings: AppSettings) -> Router {
    let guard = Guard::new(store.clone(), settings.guard);
    tokio::spawn(forget_idle_callers(guard.clone()));
    let mut app = operations(store.clone()).merge(crate::openapi::routes());
    if parts.customer_api {
        app = app.merge(releasedesk_api::router(store.clone()));
    }
    if parts.reviewer {
        app = app.merge(releasedesk_reviewer::router(store, settings.console));
    }
    app.fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(guard, guard::run))
        .layer(middleware::from_fn(metrics::track))
        .layer(map_response(ensure_envelope))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // One access-log line per request: status and latency, in the
                // request's span (so with its id); never headers or bodies.
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// `/healthz`, `/readyz` and `/metrics`: served by every process, the worker too.
pub fn operations(store: Store) -> Router {
    // Install the recorder before the first request is counted.
    let _ = metrics::handle();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .with_state(store)
}

/// The router of a process that serves only the operational endpoints (a
/// worker's health and metrics).
pub fn operations_router(store: Store) -> Router {
    operations(store)
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(metrics::track))
        .layer(map_response(ensure_envelope))
        .layer(CatchPanicLayer::custom(panic_response))
}

async fn forget_idle_callers(guard: Guard) {
    let mut tick = tokio::time::interval(guard::FORGET_IDLE_EVERY);
    loop {
        tick.tick().await;
        guard.forget_idle_callers();
    }
}

/// One span per request, named by its `x-request-id` (the caller's, or a fresh
/// UUID) and path; never the query string or headers, which may carry secrets.
fn request_span<B>(request: &axum::http::Request<B>) -> tracing::Span {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!("request", request.id = %id, method = %request.method(), path = %request.uri().path())
}

async fn healthz() -> impl IntoResponse {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({"success": true, "data": {"status": "ok"}})),
    )
}

/// How long `/readyz` waits for the database before saying it is not ready.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn readyz(State(store): State<Store>) -> Result<impl IntoResponse, ApiError> {
    let ready = tokio::time::timeout(READY_TIMEOUT, store.ready())
        .await
        .map_err(|_| ApiError::Unavailable)??;
    if ready {
        Ok(axum::Json(
            serde_json::json!({"success": true, "data": {"status": "ready"}}),
        ))
    } else {
        Err(ApiError::Unavailable)
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains in-flight
/// requests. Tests bind `127.0.0.1:0` and pass their own listener.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Listens for Ctrl-C and SIGTERM from the moment it is called (not from the
/// first poll: a signal that arrives before the process starts waiting must still
/// drain it, not kill it); the future resolves on the first of them.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind, name: &'static str| {
            signal(kind)
                .inspect_err(|error| tracing::warn!(%error, "cannot listen for {name}"))
                .ok()
        };
        (
            listen(SignalKind::interrupt(), "Ctrl-C"),
            listen(SignalKind::terminate(), "SIGTERM"),
        )
    };
    async move {
        #[cfg(unix)]
        {
            tokio::select! {
                () = received(interrupt.as_mut()) => {},
                () = received(terminate.as_mut()) => {},
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received; draining");
    }
}

/// The next delivery of `signal`, or never if it could not be listened for.
#[cfg(unix)]
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

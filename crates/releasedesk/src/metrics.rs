//! `/metrics` in Prometheus' text format: HTTP traffic by route and status,
//! the queues read from the database at scrape time, and the worker's counters
//! (`releasedesk_jobs_total`, `releasedesk_outbox_deliveries_total`) and how many
//! filings each write transaction carried (`releasedesk_filing_batch_size`).

use std::{sync::OnceLock, time::Duration};

use axum::{
    extract::{MatchedPath, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use releasedesk_store::Store;
use tokio::time::Instant;

const REQUESTS: &str = "http_requests_total";
const DURATION: &str = "http_request_duration_seconds";

/// Latency buckets (seconds): fine where our targets are (≤ 25 ms), coarse above.
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide recorder, installed on first use. `None` if another recorder
/// was installed first (then metrics are not exported, and that is logged).
pub fn handle() -> Option<PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let installed = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(DURATION.into()), BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match installed {
                Ok(handle) => {
                    describe();
                    // Histograms keep raw samples until upkeep folds them in.
                    let upkeep = handle.clone();
                    tokio::spawn(async move {
                        let mut tick = tokio::time::interval(Duration::from_secs(5));
                        loop {
                            tick.tick().await;
                            upkeep.run_upkeep();
                        }
                    });
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        REQUESTS,
        "HTTP requests answered, by method, route and status"
    );
    metrics::describe_histogram!(
        DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency, by method, route and status"
    );
    metrics::describe_gauge!(
        "releasedesk_release_requests",
        "Release requests in an open status (read at scrape time)"
    );
    metrics::describe_gauge!(
        "releasedesk_oldest_pending_request_age_seconds",
        "Age of the oldest pending release request; 0 when none is pending"
    );
    metrics::describe_gauge!(
        "releasedesk_outbox_backlog",
        "Outbox rows not yet delivered, by kind and status (dead: gave up)"
    );
    metrics::describe_gauge!(
        "releasedesk_database_up",
        "1 if the last scrape could read the database"
    );
    metrics::describe_histogram!(
        releasedesk_store::FILING_BATCH_METRIC,
        "Release requests filed per write transaction (concurrent filings commit together)"
    );
    metrics::describe_histogram!(
        releasedesk_store::RELEASE_BATCH_METRIC,
        "Releases carried out per write transaction (with the local carrier, concurrent jobs commit together)"
    );
    metrics::describe_histogram!(
        releasedesk_store::TOKEN_LOOKUP_BATCH_METRIC,
        "Customer tokens looked up per statement (concurrent requests share one)"
    );
    metrics::describe_counter!(
        releasedesk_worker::JOBS_METRIC,
        "Jobs run by this process, by job and outcome"
    );
    metrics::describe_counter!(
        releasedesk_worker::OUTBOX_METRIC,
        "Outbox deliveries by this process, by kind (email, job) and outcome (sent, failed, dead)"
    );
}

/// Middleware counting and timing every request by its route template (never
/// the concrete path, which would make a series per id).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!(REQUESTS, &labels).increment(1);
    metrics::histogram!(DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn render(State(store): State<Store>) -> Response {
    let Some(handle) = handle() else {
        return ([(header::CONTENT_TYPE, TEXT_FORMAT)], String::new()).into_response();
    };
    match store.queue_stats().await {
        Ok(stats) => {
            for (status, n) in stats.requests {
                metrics::gauge!("releasedesk_release_requests", "status" => status.as_str())
                    .set(n as f64);
            }
            let age = stats.oldest_pending.map_or(0.0, |at| {
                (releasedesk_domain::time::now() - at)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            });
            metrics::gauge!("releasedesk_oldest_pending_request_age_seconds").set(age);
            for (kind, status, n) in stats.outbox {
                metrics::gauge!("releasedesk_outbox_backlog", "kind" => kind, "status" => status.as_str())
                    .set(n as f64);
            }
            metrics::gauge!("releasedesk_database_up").set(1.0);
        }
        Err(error) => {
            // Still answer: the process's own counters matter most in an outage.
            tracing::warn!(%error, "metrics: cannot read the queues");
            metrics::gauge!("releasedesk_database_up").set(0.0);
        }
    }
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT))],
        handle.render(),
    )
        .into_response()
}

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

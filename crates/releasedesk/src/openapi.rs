//! The OpenAPI 3.1 document of both APIs and the operational endpoints, served at
//! `GET /api/openapi.json`, with an interactive reference (Swagger UI, its assets
//! compiled into the binary) at `GET /api/docs`.
//!
//! The customer and reviewer routers are built with `utoipa-axum`, so each of
//! their routes is documented by construction; this module merges their halves,
//! describes `/healthz`, `/readyz` and `/metrics`, and applies the conventions
//! every endpoint shares ([`releasedesk_api::openapi::Conventions`]).

use axum::Router;
use releasedesk_api::openapi::{Conventions, DataEnvelope};
use utoipa::{Modify, OpenApi, ToSchema, openapi::OpenApi as Document};
use utoipa_swagger_ui::{Config, SwaggerUi};

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";
/// Where the interactive reference is served.
pub const DOCS_PATH: &str = "/api/docs";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ReleaseDesk",
        description = "An approval workflow in front of releasing rented phone numbers.\n\n\
            Customers use the API under `/api/v1` with an `rd_live_…` token; support staff \
            use the API under `/reviewer/api/v1` with an `rd_staff_…` token. Every answer is \
            an envelope: `{\"success\": true, \"data\": …}` (lists add `next_cursor`) or \
            `{\"success\": false, \"message\": …, \"code\": …, \"details\"?: […]}`. Ids are \
            UUIDs, times RFC 3339 UTC, money a decimal string with a `currency`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(healthz, readyz, metrics),
    tags(
        (name = "phone numbers", description = "The account's numbers: configuration, release preview, release requests, reclaim."),
        (name = "release requests", description = "The account's release requests and their timelines."),
        (name = "agents", description = "The account's agents and the numbers they use."),
        (name = "reviewer", description = "Support staff: the review queue and decisions."),
        (name = "operations", description = "Liveness, readiness and metrics."),
    ),
)]
struct Operations;

/// The body of `/healthz` and `/readyz`.
#[derive(ToSchema)]
#[expect(dead_code, reason = "describes the JSON the handlers in app.rs build")]
struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// Whether the process is up
///
/// Does not touch the database.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "operations",
    responses((status = 200, description = "The process is up.", body = DataEnvelope<Health>,
        example = json!({"success": true, "data": {"status": "ok"}}))),
)]
#[expect(dead_code, reason = "documents the handler in app.rs")]
fn healthz() {}

/// Whether the process can serve: the database answers and is migrated
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "operations",
    responses((status = 200, description = "Ready.", body = DataEnvelope<Health>,
        example = json!({"success": true, "data": {"status": "ready"}}))),
)]
#[expect(dead_code, reason = "documents the handler in app.rs")]
fn readyz() {}

/// Prometheus metrics
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "operations",
    responses((status = 200, description = "Metrics in the Prometheus text exposition format.",
        body = String, content_type = "text/plain; version=0.0.4")),
)]
#[expect(dead_code, reason = "documents the metrics endpoint")]
fn metrics() {}

/// The whole document: both APIs and the operational endpoints.
pub fn document() -> Document {
    let mut document = Operations::openapi();
    document.merge(releasedesk_api::openapi());
    document.merge(releasedesk_reviewer::openapi());
    Conventions.modify(&mut document);
    document
}

/// `GET /api/openapi.json` and the interactive reference under `/api/docs`.
pub fn routes() -> Router {
    let config = Config::new([DOCUMENT_PATH])
        // Swagger UI would otherwise send the document to swagger.io's validator.
        .validator_url("none")
        .persist_authorization(true)
        .display_operation_id(false);
    SwaggerUi::new(DOCS_PATH)
        .url(DOCUMENT_PATH, document())
        .config(config)
        .into()
}

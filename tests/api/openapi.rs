//! The OpenAPI document: served by every process with an API, valid OpenAPI 3.1,
//! describing every route the code registers, and routing every operation it
//! describes.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

use releasedesk::openapi::{DOCS_PATH, DOCUMENT_PATH, document};
use releasedesk_tests::{
    TestApp, TestDatabase, backend_tests, postgres_required,
    process::{Environment, Role, Service},
};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(every_documented_operation_is_routed);

/// Routes that are deliberately not in the document: the reviewer console (HTML
/// forms, not an API) and the document and its reference themselves.
fn undocumented_on_purpose(path: &str) -> bool {
    let console = path == "/reviewer" || path.starts_with("/reviewer/");
    (console && !path.starts_with("/reviewer/api/"))
        || path == DOCUMENT_PATH
        || path == DOCS_PATH
        || path.starts_with(&format!("{DOCS_PATH}/"))
}

/// Operations the contract promises and the document describes, whose route is
/// being added in parallel. Once one is routed, the test below fails until it is
/// taken off this list.
const NOT_YET_ROUTED: &[(&str, &str)] = &[];

/// (method, path) of every operation in `doc`.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut all = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in ["get", "put", "post", "delete", "patch"] {
            if item.get(method).is_some() {
                all.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    all
}

fn served_document() -> Value {
    serde_json::to_value(document()).expect("the document serializes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_valid_openapi_3_1() {
    // The document does not depend on the database; one backend is enough.
    let app = TestApp::sqlite().await;
    let response = app
        .client
        .get(format!("{}{DOCUMENT_PATH}", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().contains_key("x-request-id"));
    let doc: Value = response.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc, served_document());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    if let Err(why) = validator_available() {
        assert!(
            !postgres_required(),
            "openapi-spec-validator cannot run ({why}); with CI set it must: pip install openapi-spec-validator"
        );
        eprintln!(
            "SKIPPED: openapi-spec-validator unavailable ({why}); pip install openapi-spec-validator, or set CI=true to make this fail"
        );
        return;
    }
    let output = Command::new("python3")
        .args(["-m", "openapi_spec_validator", "--schema", "3.1"])
        .arg(&file)
        .output()
        .expect("run openapi-spec-validator");
    assert!(
        output.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn validator_available() -> Result<(), String> {
    let output = Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}

/// The promises the document makes for every operation, checked on the document
/// itself so that a change to the conventions cannot drop one silently.
#[test]
fn every_operation_documents_auth_errors_idempotency_and_request_ids() {
    let doc = served_document();
    let operations = operations(&doc);
    let contract = [
        ("GET", "/api/v1/phone-numbers"),
        ("GET", "/api/v1/phone-numbers/{id}"),
        ("PATCH", "/api/v1/phone-numbers/{id}"),
        ("GET", "/api/v1/phone-numbers/{id}/release-preview"),
        ("POST", "/api/v1/phone-numbers/{id}/request-release"),
        ("POST", "/api/v1/phone-numbers/{id}/reclaim"),
        ("GET", "/api/v1/release-requests"),
        ("GET", "/api/v1/release-requests/{id}"),
        ("POST", "/api/v1/release-requests/{id}/cancel"),
        ("GET", "/api/v1/agents"),
        ("POST", "/api/v1/agents"),
        ("PATCH", "/api/v1/agents/{id}"),
        ("GET", "/reviewer/api/v1/queue"),
        ("GET", "/reviewer/api/v1/release-requests/{id}"),
        ("POST", "/reviewer/api/v1/release-requests/{id}/claim"),
        ("POST", "/reviewer/api/v1/release-requests/{id}/unclaim"),
        ("POST", "/reviewer/api/v1/release-requests/{id}/approve"),
        ("POST", "/reviewer/api/v1/release-requests/{id}/cancel"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
    ];
    for (method, path) in contract {
        assert!(
            operations.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} is not documented"
        );
    }
    let schemes = &doc["components"]["securitySchemes"];
    assert_eq!(schemes["customer_token"]["scheme"], "bearer");
    assert_eq!(schemes["staff_token"]["scheme"], "bearer");

    for (method, path) in &operations {
        let op = &doc["paths"][path][method.to_lowercase()];
        let at = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let codes = |status: &str| -> Vec<String> {
            op["responses"][status]["content"]["application/json"]["examples"]
                .as_object()
                .map(|examples| examples.keys().cloned().collect())
                .unwrap_or_default()
        };
        let security = op["security"].as_array().cloned().unwrap_or_default();
        let scheme = security
            .first()
            .and_then(|s| s.as_object())
            .and_then(|s| s.keys().next().cloned());
        match path {
            p if p.starts_with("/api/v1/") => {
                assert_eq!(scheme.as_deref(), Some("customer_token"), "{at}")
            }
            p if p.starts_with("/reviewer/api/v1/") => {
                assert_eq!(scheme.as_deref(), Some("staff_token"), "{at}")
            }
            _ => assert_eq!(scheme, None, "{at}"),
        }
        if scheme.is_some() {
            assert_eq!(codes("401"), ["UNAUTHORIZED"], "{at}");
            assert!(
                op["responses"]["401"]["headers"]["WWW-Authenticate"].is_object(),
                "{at}"
            );
            assert_eq!(codes("403"), ["FORBIDDEN"], "{at}");
            assert_eq!(codes("429"), ["RATE_LIMITED"], "{at}");
            assert!(
                op["responses"]["429"]["headers"]["Retry-After"].is_object(),
                "{at}"
            );
        }
        assert_eq!(codes("503"), ["UNAVAILABLE"], "{at}");
        assert!(
            op["responses"]["503"]["headers"]["Retry-After"].is_object(),
            "{at}"
        );
        assert_eq!(codes("500"), ["INTERNAL"], "{at}");
        if path.contains('{') {
            assert!(codes("404").contains(&"NOT_FOUND".to_owned()), "{at}");
        }
        if method == "POST" {
            let parameters = op["parameters"].as_array().unwrap();
            assert!(
                parameters
                    .iter()
                    .any(|p| p["$ref"] == "#/components/parameters/IdempotencyKey"),
                "{at}"
            );
            assert!(codes("409").contains(&"IDEMPOTENCY_KEY_IN_USE".to_owned()));
            let unprocessable = codes("422");
            assert!(unprocessable.contains(&"IDEMPOTENCY_KEY_REUSED".to_owned()));
            assert!(unprocessable.contains(&"VALIDATION_ERROR".to_owned()));
        }
        if op.get("requestBody").is_some() {
            assert_eq!(codes("400"), ["MALFORMED_JSON"], "{at}");
            assert_eq!(codes("413"), ["PAYLOAD_TOO_LARGE"], "{at}");
            assert_eq!(codes("415"), ["UNSUPPORTED_MEDIA_TYPE"], "{at}");
        }
        for (status, response) in responses {
            assert!(
                response["headers"]["x-request-id"].is_object(),
                "{at} {status}: no x-request-id"
            );
        }
        assert!(op.get("x-error-codes").is_none(), "{at}");
    }
    let key = &doc["components"]["parameters"]["IdempotencyKey"];
    assert_eq!(key["name"], "Idempotency-Key");
    assert_eq!(key["in"], "header");
    assert_eq!(key["schema"]["minLength"], 1);
    assert_eq!(key["schema"]["maxLength"], 255);
}

/// The operation-specific codes the contract names appear where it says.
#[test]
fn operations_document_their_own_error_codes() {
    let doc = served_document();
    let examples = |method: &str, path: &str, status: &str| -> Vec<String> {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["examples"]
            .as_object()
            .map(|e| e.keys().cloned().collect())
            .unwrap_or_default()
    };
    let request_release = "/api/v1/phone-numbers/{id}/request-release";
    assert!(examples("post", request_release, "409").contains(&"RELEASE_ALREADY_PENDING".into()));
    assert!(examples("post", request_release, "409").contains(&"NUMBER_NOT_ACTIVE".into()));
    assert!(examples("post", request_release, "422").contains(&"PHONE_NUMBER_IN_USE".into()));
    assert!(
        examples("post", "/api/v1/phone-numbers/{id}/reclaim", "409")
            .contains(&"RECLAIM_WINDOW_EXPIRED".into())
    );
    assert!(
        examples("post", "/api/v1/release-requests/{id}/cancel", "409")
            .contains(&"REQUEST_NOT_PENDING".into())
    );
    let approve = "/reviewer/api/v1/release-requests/{id}/approve";
    assert!(examples("post", approve, "409").contains(&"CLAIMED_BY_OTHER".into()));
    assert!(examples("post", approve, "422").contains(&"PHONE_NUMBER_IN_USE".into()));
    // The examples are the server's own rendering of each error.
    let in_use = &doc["paths"][approve]["post"]["responses"]["422"]["content"]["application/json"]
        ["examples"]["PHONE_NUMBER_IN_USE"]["value"];
    assert_eq!(in_use["success"], false);
    assert_eq!(in_use["code"], "PHONE_NUMBER_IN_USE");
    assert_eq!(in_use["details"][0]["field"], "agent_ids");
    let forbidden = |path: &str, method: &str| {
        doc["paths"][path][method]["responses"]["403"]["content"]["application/json"]["examples"]
            ["FORBIDDEN"]["value"]["message"]
            .clone()
    };
    assert_eq!(
        forbidden(approve, "post"),
        "this API is for support staff only"
    );
    assert_eq!(
        forbidden("/api/v1/agents", "get"),
        "staff tokens cannot use the customer API"
    );
}

/// Every `.route("…", get(…).post(…))` in the crates' sources is either in the
/// document or deliberately left out. The API routers register their handlers
/// through `utoipa_axum::routes!`, which documents them by construction; this
/// catches a route added with a plain `.route(...)` anywhere instead.
#[test]
fn every_route_in_the_sources_is_documented() {
    let documented = operations(&served_document());
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let mut found = Vec::new();
    for file in rust_files(&crates) {
        let relative = file
            .strip_prefix(&crates)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let source = std::fs::read_to_string(&file).unwrap();
        for (path, methods) in route_calls(&source) {
            let full = format!("{}{path}", mount_point(&relative));
            found.push((relative.clone(), full, methods));
        }
    }
    assert_eq!(
        route_calls(
            "Router::new()\n  .route(\"/x/{id}\", get(show).post(create))\n  .route(\"/y\", patch(budget))"
        ),
        [
            (
                "/x/{id}".to_owned(),
                vec!["GET".to_owned(), "POST".to_owned()]
            ),
            ("/y".to_owned(), vec!["PATCH".to_owned()]),
        ]
    );
    assert!(
        found.iter().any(|(_, path, _)| path == "/healthz")
            && found.iter().any(|(_, path, _)| path == "/reviewer/queue"),
        "the scan no longer finds the routes it should: {found:?}"
    );
    let mut missing = Vec::new();
    for (file, path, methods) in &found {
        if undocumented_on_purpose(path) {
            continue;
        }
        assert!(!methods.is_empty(), "{file}: no method found for {path}");
        for method in methods {
            if !documented.contains(&(method.clone(), path.clone())) {
                missing.push(format!("{method} {path} ({file})"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "routes missing from the OpenAPI document (register them with utoipa_axum's routes! \
         and #[utoipa::path], or describe them in crates/releasedesk/src/openapi.rs):\n{}",
        missing.join("\n")
    );
}

/// Where the routes of a source file end up: the API crates nest their routers.
fn mount_point(file: &str) -> &'static str {
    if file.starts_with("api/src/") {
        "/api/v1"
    } else if file.starts_with("reviewer/src/api") {
        "/reviewer/api/v1"
    } else {
        ""
    }
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The path and HTTP methods of each `.route("path", …)` call in `source`.
fn route_calls(source: &str) -> Vec<(String, Vec<String>)> {
    let mut calls = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find(".route(") {
        rest = &rest[at + ".route(".len()..];
        let call = balanced(rest);
        let Some(path) = call
            .trim_start()
            .strip_prefix('"')
            .and_then(|p| p.split('"').next())
        else {
            // A path built at run time (format!): only the document's own routes do this.
            calls.push((String::from("<computed>"), Vec::new()));
            continue;
        };
        let methods = ["get", "post", "put", "patch", "delete"]
            .into_iter()
            .filter(|m| {
                call.match_indices(&format!("{m}(")).any(|(i, _)| {
                    i == 0
                        || !call.as_bytes()[i - 1].is_ascii_alphanumeric()
                            && call.as_bytes()[i - 1] != b'_'
                })
            })
            .map(str::to_uppercase)
            .collect();
        calls.push((path.to_owned(), methods));
    }
    calls.retain(|(path, _)| path != "<computed>");
    calls
}

/// The text up to the parenthesis that closes the one just opened.
fn balanced(text: &str) -> &str {
    let mut depth = 1;
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[..i];
                }
            }
            _ => {}
        }
    }
    text
}

/// Each documented operation, requested with made-up ids and an empty JSON body,
/// reaches a handler: the answer is neither the route-not-found 404 nor a 405, and
/// its status is one the document lists for that operation.
async fn every_documented_operation_is_routed(app: TestApp) {
    let customer = app.customer().await;
    let staff = app.reviewer("Rhea Reviewer").await;
    let (status, unrouted) = app.get("/api/v1/no-such-route", &customer).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let doc = served_document();
    for (method, path) in operations(&doc) {
        let concrete = path.replace("{id}", &Uuid::now_v7().to_string());
        assert!(!concrete.contains('{'), "{path}: unknown path parameter");
        let token = if path.starts_with("/reviewer/") {
            Some(staff.token.as_str())
        } else if path.starts_with("/api/") {
            Some(customer.token.as_str())
        } else {
            None
        };
        let body = (method != "GET").then(|| json!({}));
        let (status, body) = app
            .call(
                Method::from_bytes(method.as_bytes()).unwrap(),
                &concrete,
                token,
                body,
            )
            .await;
        let routed = status != StatusCode::METHOD_NOT_ALLOWED
            && !(status == StatusCode::NOT_FOUND && body["message"] == unrouted["message"]);
        let pending = NOT_YET_ROUTED.contains(&(method.as_str(), path.as_str()));
        if pending {
            assert!(
                !routed,
                "{method} {path} is routed now: take it off NOT_YET_ROUTED"
            );
            continue;
        }
        assert!(
            routed,
            "{method} {path} is documented but not routed: {status} {body}"
        );
        let documented = &doc["paths"][&path][method.to_lowercase()]["responses"];
        assert!(
            documented.get(status.as_str()).is_some(),
            "{method} {path} answered {status}, which the document does not list: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_is_served_from_the_binary_without_a_cdn() {
    let app = TestApp::sqlite().await;
    let page = app
        .client
        .get(format!("{}{DOCS_PATH}", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for (at, _) in html.match_indices(attribute) {
            let value = html[at + attribute.len()..].split('"').next().unwrap();
            assets.push(value.to_owned());
        }
    }
    assert!(assets.iter().any(|a| a.ends_with(".js")), "{assets:?}");
    for asset in &assets {
        assert!(
            !asset.contains("//"),
            "{asset}: the reference must not load anything from elsewhere"
        );
        let url = format!(
            "{}{DOCS_PATH}/{}",
            app.base_url,
            asset.trim_start_matches("./")
        );
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{url}");
        let text = response.text().await.unwrap();
        assert!(!text.is_empty(), "{url}");
    }
    let initializer = app
        .client
        .get(format!(
            "{}{DOCS_PATH}/swagger-initializer.js",
            app.base_url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(initializer.contains(DOCUMENT_PATH), "{initializer}");
    assert!(!initializer.contains("https://"), "{initializer}");
}

/// `api` and `reviewer` serve the same document as `serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_processes_serve_the_document_and_the_reference() {
    let database = TestDatabase::sqlite();
    let environment = Environment::new(database.url());
    let client = reqwest::Client::new();
    for role in [Role::Api, Role::Reviewer] {
        let mut service = Service::start(role, &environment).await;
        let doc: Value = client
            .get(service.url(DOCUMENT_PATH))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc, served_document(), "{role:?}");
        let page = client.get(service.url(DOCS_PATH)).send().await.unwrap();
        assert_eq!(page.status(), StatusCode::OK, "{role:?}");
        service.terminate().await;
    }
}

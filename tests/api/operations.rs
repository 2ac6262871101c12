//! What operators rely on: `/metrics`, `/readyz`, rate limits.

use releasedesk_store::Backend;
use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::{Method, StatusCode};

backend_tests!(
    metrics_show_request_counts_queue_depth_and_outbox_backlog_after_traffic,
    readyz_is_503_while_a_migration_is_missing,
);

/// What a group-commit writer (its summary `metric`) has committed so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Committed {
    transactions: f64,
    requests: f64,
}

impl Committed {
    pub(crate) async fn now(app: &TestApp, metric: &str) -> Self {
        let text = scrape(app).await;
        let of = |suffix: &str| sample(&text, &format!("{metric}_{suffix}"), &[]).unwrap_or(0.0);
        Self {
            transactions: of("count"),
            requests: of("sum"),
        }
    }

    /// Asserts that `requests` requests were committed since `self`, in at
    /// most `transactions` transactions.
    #[track_caller]
    pub(crate) fn assert_since(self, later: Self, requests: usize, transactions: f64) {
        assert_eq!(later.requests - self.requests, requests as f64);
        let took = later.transactions - self.transactions;
        assert!(
            took <= transactions,
            "{requests} requests took {took} transactions"
        );
    }
}

/// The value of the sample of `name` whose labels include every one of `labels`.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

pub(crate) async fn scrape(app: &TestApp) -> String {
    let response = app
        .client
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    response.text().await.unwrap()
}

async fn metrics_show_request_counts_queue_depth_and_outbox_backlog_after_traffic(app: TestApp) {
    let acme = app.customer().await;
    for _ in 0..3 {
        let number = app.number(&acme).await;
        app.file_request(&acme, number).await;
    }
    let (status, _) = app.get("/api/v1/release-requests", &acme).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.get("/api/v1/no-such-thing", &acme).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let text = scrape(&app).await;
    let route = "/api/v1/phone-numbers/{id}/request-release";
    let filed = sample(
        &text,
        "http_requests_total",
        &[("method", "POST"), ("route", route), ("status", "201")],
    );
    assert_eq!(filed, Some(3.0), "{text}");
    assert!(
        sample(
            &text,
            "http_request_duration_seconds_count",
            &[("route", route), ("status", "201")]
        )
        .is_some_and(|n| n >= 3.0),
        "latency histogram by route: {text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{"),
        "{text}"
    );
    // Unknown paths are one series, not one per path.
    assert_eq!(
        sample(
            &text,
            "http_requests_total",
            &[("route", "unmatched"), ("status", "404")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "releasedesk_release_requests",
            &[("status", "pending")]
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "releasedesk_release_requests",
            &[("status", "approved")]
        ),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(&text, "releasedesk_oldest_pending_request_age_seconds", &[])
            .is_some_and(|age| age >= 0.0),
        "{text}"
    );
    // Each filing queued two emails (customer and staff); no worker runs here.
    assert_eq!(
        sample(
            &text,
            "releasedesk_outbox_backlog",
            &[("kind", "email"), ("status", "pending")]
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(sample(&text, "releasedesk_database_up", &[]), Some(1.0));

    // A worker round sends them; the process's counters say so.
    let (worker, _) = app.worker(std::sync::Arc::new(
        releasedesk_worker::carrier::LocalCarrier,
    ));
    worker.drain().await;
    let text = scrape(&app).await;
    assert_eq!(
        sample(
            &text,
            "releasedesk_outbox_deliveries_total",
            &[("kind", "email"), ("outcome", "sent")]
        ),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "releasedesk_outbox_backlog",
            &[("kind", "email"), ("status", "pending")]
        ),
        Some(0.0),
        "{text}"
    );
}

async fn readyz_is_503_while_a_migration_is_missing(app: TestApp) {
    // As if this binary were newer than the schema: its last migration is not applied.
    app.execute(
        "UPDATE seaql_migrations SET version = version || '-hidden' WHERE version = \
         (SELECT MAX(version) FROM seaql_migrations)",
    )
    .await;
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_error(
        status,
        &body,
        StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
    );

    app.execute("UPDATE seaql_migrations SET version = REPLACE(version, '-hidden', '')")
        .await;
    let (status, body) = app.call(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_limit_gets_429_with_retry_after_and_others_do_not() {
    use std::num::NonZeroU32;
    let app = TestApp::with_settings(Backend::Sqlite, |settings| {
        settings.rate_limit.enabled = true;
        settings.rate_limit.per_second = NonZeroU32::new(1).unwrap();
        settings.rate_limit.burst = NonZeroU32::new(3).unwrap();
    })
    .await
    .unwrap();
    let acme = app.customer().await;
    let globex = app.customer().await;

    for _ in 0..3 {
        let (status, body) = app.get("/api/v1/phone-numbers", &acme).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let response = app
        .client
        .get(format!("{}/api/v1/phone-numbers", app.base_url))
        .bearer_auth(&acme.token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "retry after {retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_error(
        StatusCode::TOO_MANY_REQUESTS,
        &body,
        StatusCode::TOO_MANY_REQUESTS,
        "RATE_LIMITED",
    );

    // Another token has its own allowance; operational endpoints have none.
    let (status, _) = app.get("/api/v1/phone-numbers", &globex).await;
    assert_eq!(status, StatusCode::OK);
    for _ in 0..5 {
        let (status, _) = app.call(Method::GET, "/healthz", None, None).await;
        assert_eq!(status, StatusCode::OK);
    }

    // The bucket refills at the configured rate.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _) = app.get("/api/v1/phone-numbers", &acme).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_request_id_and_never_a_token_or_an_email_body() {
    use releasedesk_tests::{
        TestDatabase, binary,
        process::{Environment, Role, Service},
    };
    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let url = database.url();
    let migrated = binary::run(dir.path(), url, &["migrate"]);
    assert!(migrated.status.success());
    let account = binary::admin(
        dir.path(),
        url,
        &[
            "account",
            "create",
            "--name",
            "Logs Ltd",
            "--email",
            "ops@logs.example",
        ],
    );
    let account_id = account["id"].as_str().unwrap();
    let token = binary::admin(
        dir.path(),
        url,
        &["token", "create", "--account", account_id],
    );
    let token = token["token"].as_str().unwrap().to_owned();
    let number = binary::admin(
        dir.path(),
        url,
        &[
            "number",
            "add",
            "--account",
            account_id,
            "--e164",
            "+15557770001",
            "--purchased-at",
            "2020-01-01T00:00:00Z",
        ],
    );
    let number = number["id"].as_str().unwrap();

    let environment = Environment::new(url).set("LOG_FORMAT", "json").set(
        "RUST_LOG",
        "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,tower_http=info",
    );
    let mut serve = Service::start(Role::Serve, &environment).await;
    let marker = "Reason-marker-7f3a: this line goes to a new carrier.";
    let response = reqwest::Client::new()
        .post(serve.url(&format!("/api/v1/phone-numbers/{number}/request-release")))
        .bearer_auth(&token)
        .header("x-request-id", "trace-me-42")
        .json(&serde_json::json!({ "reason": marker }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");

    // The emails (which quote the reason) are sent before we look at the logs.
    let outbox = environment.outbox_dir();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::fs::read_dir(&outbox).map_or(0, |d| d.count()) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "emails never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let mail = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(
        mail.contains("Reason-marker-7f3a"),
        "the emails quote the reason"
    );
    serve.terminate().await;

    let logs: Vec<serde_json::Value> = serve
        .output()
        .iter()
        .filter(|line| line.starts_with('{'))
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    assert!(logs.len() > 3, "JSON log lines: {logs:?}");
    let text = serve.output().join("\n");
    assert!(!text.contains(&token), "a token leaked into the logs");
    assert!(
        !text.contains(&token["rd_live_".len()..]),
        "part of a token leaked"
    );
    assert!(
        !text.contains("Reason-marker-7f3a"),
        "an email body leaked into the logs"
    );
    let access = logs
        .iter()
        .find(|log| log.to_string().contains("trace-me-42") && log["fields"]["status"] == 201)
        .unwrap_or_else(|| panic!("no access log line with the request id: {logs:#?}"));
    assert!(access["fields"]["latency"].is_string(), "{access}");
}

/// The binary backs its memory with small pages only (crates/releasedesk/src/memory.rs):
/// Linux reports transparent huge pages off for the running process. The
/// test process itself must show them allowed (THP `madvise` or `always`, and
/// not disabled by a parent), or a binary that never asked would pass too.
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_binary_never_gets_transparent_huge_pages() {
    use releasedesk_tests::{
        TestDatabase, binary,
        process::{Environment, Role, Service},
    };
    let thp_enabled = |status: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("THP_enabled:"))
            .map(|value| value.trim().to_owned())
            .unwrap_or_else(|| panic!("no THP_enabled line in:\n{status}"))
    };
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(
        thp_enabled(&own),
        "1",
        "this test process may get huge pages, so the check below can fail"
    );

    let database = TestDatabase::sqlite();
    let dir = tempfile::tempdir().unwrap();
    let migrated = binary::run(dir.path(), database.url(), &["migrate"]);
    assert!(migrated.status.success());
    let mut api = Service::start(Role::Api, &Environment::new(database.url())).await;
    let status = std::fs::read_to_string(format!("/proc/{}/status", api.pid())).unwrap();
    api.terminate().await;
    assert_eq!(
        thp_enabled(&status),
        "0",
        "huge pages allowed for the binary"
    );
}

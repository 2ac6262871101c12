//! PostgreSQL restarts under load: while it is down the API and `/readyz` answer
//! 503 `UNAVAILABLE` promptly; afterwards the same process serves again, and
//! nothing that was acknowledged is lost — requests, emails, or release jobs.

use std::{
    collections::HashSet,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use releasedesk::config::Settings;
use releasedesk_domain::{E164, Money};
use releasedesk_store::{NewNumber, StaffRole, Store};
use releasedesk_tests::{
    binary,
    cluster::PrivateCluster,
    eventually,
    process::{Environment, Role, Service},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

/// Filing clients, and the numbers each files for.
const CLIENTS: usize = 4;
const NUMBERS_PER_CLIENT: usize = 40;
/// No answer may take longer than this, outage or not (the pool gives up on a
/// connection after 1 s here; the request timeout is 15 s by default).
const BOUND: Duration = Duration::from_secs(8);

struct Seeded {
    token: String,
    staff_token: String,
    numbers: Vec<Uuid>,
}

async fn seed(url: &str) -> Seeded {
    let mut settings = Settings::load(None).unwrap();
    settings.database.url = url.to_owned().into();
    let store: Store = releasedesk::open_store(&settings).await.unwrap();
    let account = store
        .create_account("Outage Telecom", "ops@outage.example")
        .await
        .unwrap();
    let token = store.create_token(account.id).await.unwrap().token;
    let staff_token = store
        .create_staff("oncall@support.example", "On-call", StaffRole::Reviewer)
        .await
        .unwrap()
        .token;
    let mut numbers = Vec::new();
    for n in 0..CLIENTS * NUMBERS_PER_CLIENT {
        let new = NewNumber {
            account_id: account.id,
            e164: E164::parse(&format!("+1555{n:07}")).unwrap(),
            purchased_at: Some(chrono::Utc::now() - chrono::TimeDelta::days(365)),
            monthly_price: Money::from_minor(115),
        };
        numbers.push(store.add_number(new).await.unwrap().id);
    }
    store.close().await;
    Seeded {
        token,
        staff_token,
        numbers,
    }
}

/// Asserts a 503 in the envelope with `Retry-After`.
fn assert_unavailable(status: StatusCode, retry_after: Option<&str>, body: &Value) {
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["code"], "UNAVAILABLE", "{body}");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s > 0)),
        "Retry-After: {retry_after:?}"
    );
}

/// One request, timed: status, Retry-After, body.
async fn timed(request: reqwest::RequestBuilder) -> (StatusCode, Option<String>, Value, Duration) {
    let started = Instant::now();
    let response = request.send().await.expect("an answer, not a hang");
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body, started.elapsed())
}

/// Files for every number in `numbers`, retrying 503s under the same
/// idempotency key; returns the ids acknowledged with 201.
async fn file_all(
    http: reqwest::Client,
    base: String,
    token: String,
    numbers: Vec<Uuid>,
    approvals: mpsc::UnboundedSender<String>,
    unavailable: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut filed = Vec::new();
    for number in numbers {
        let mut was_unavailable = false;
        loop {
            let (status, retry_after, body, took) = timed(
                http.post(format!(
                    "{base}/api/v1/phone-numbers/{number}/request-release"
                ))
                .bearer_auth(&token)
                .header("Idempotency-Key", number.to_string())
                .json(&json!({"reason": "Moving this line to another carrier."})),
            )
            .await;
            assert!(took < BOUND, "answered after {took:?}: {status} {body}");
            match status {
                StatusCode::CREATED => {
                    let id = body["data"]["id"].as_str().unwrap().to_owned();
                    filed.push(id.clone());
                    let _ = approvals.send(id);
                    break;
                }
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_unavailable(status, retry_after.as_deref(), &body);
                    unavailable.fetch_add(1, Ordering::Relaxed);
                    was_unavailable = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // The connection died between the commit and its acknowledgement:
                // the 503 hid a success, which the retry now meets.
                StatusCode::CONFLICT
                    if was_unavailable && body["code"] == "RELEASE_ALREADY_PENDING" =>
                {
                    let id = pending_request_of(&http, &base, &token, number).await;
                    filed.push(id.clone());
                    let _ = approvals.send(id);
                    break;
                }
                // A retry that meets its own first attempt still in flight.
                StatusCode::CONFLICT if body["code"] == "IDEMPOTENCY_KEY_IN_USE" => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    filed
}

/// The id of the pending request filed for `number`.
async fn pending_request_of(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    number: Uuid,
) -> String {
    let list: Value = http
        .get(format!(
            "{base}/api/v1/release-requests?status=pending&limit=200"
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let found = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["phone_number_id"] == number.to_string())
        .unwrap_or_else(|| panic!("no pending request for {number}: {list}"));
    found["id"].as_str().unwrap().to_owned()
}

/// Approves every request id it receives, retrying 503s.
async fn approve_all(
    http: reqwest::Client,
    base: String,
    staff_token: String,
    mut ids: mpsc::UnboundedReceiver<String>,
) -> usize {
    let mut approved = 0;
    while let Some(id) = ids.recv().await {
        let mut was_unavailable = false;
        loop {
            let (status, retry_after, body, took) = timed(
                http.post(format!(
                    "{base}/reviewer/api/v1/release-requests/{id}/approve"
                ))
                .bearer_auth(&staff_token)
                .header("Idempotency-Key", format!("approve-{id}"))
                .json(&json!({})),
            )
            .await;
            assert!(took < BOUND, "answered after {took:?}: {status} {body}");
            match status {
                StatusCode::OK => break,
                StatusCode::SERVICE_UNAVAILABLE => {
                    assert_unavailable(status, retry_after.as_deref(), &body);
                    was_unavailable = true;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                // As for filing: a 503 that hid a committed approval.
                StatusCode::CONFLICT
                    if was_unavailable && body["code"] == "REQUEST_NOT_PENDING" =>
                {
                    break;
                }
                StatusCode::CONFLICT if body["code"] == "IDEMPOTENCY_KEY_IN_USE" => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                other => panic!("unexpected {other} approving {id}: {body}"),
            }
        }
        approved += 1;
    }
    approved
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_is_503_unavailable_then_served_again_with_nothing_lost() {
    let Some(cluster) = PrivateCluster::start() else {
        return;
    };
    let url = cluster.url();
    let dir = tempfile::tempdir().unwrap();
    let migrated = binary::run(dir.path(), &url, &["migrate"]);
    assert!(
        migrated.status.success(),
        "{}",
        String::from_utf8_lossy(&migrated.stderr)
    );
    let seeded = seed(&url).await;

    let environment = Environment::new(&url)
        .set("RELEASEDESK__DATABASE__ACQUIRE_TIMEOUT", "1s")
        .set("RELEASEDESK__RATE_LIMIT__ENABLED", "false");
    let serve = Service::start(Role::Serve, &environment).await;
    let base = serve.base_url().to_owned();
    let http = reqwest::Client::builder()
        .timeout(BOUND * 3)
        .build()
        .unwrap();

    let unavailable = Arc::new(AtomicUsize::new(0));
    let (approvals, to_approve) = mpsc::unbounded_channel();
    let clients: Vec<_> = seeded
        .numbers
        .chunks(NUMBERS_PER_CLIENT)
        .map(|numbers| {
            tokio::spawn(file_all(
                http.clone(),
                base.clone(),
                seeded.token.clone(),
                numbers.to_vec(),
                approvals.clone(),
                unavailable.clone(),
            ))
        })
        .collect();
    drop(approvals);
    let approver = tokio::spawn(approve_all(
        http.clone(),
        base.clone(),
        seeded.staff_token.clone(),
        to_approve,
    ));

    // Traffic flows; then the database goes away mid-stream.
    tokio::time::sleep(Duration::from_millis(600)).await;
    tokio::task::block_in_place(|| cluster.stop_server());

    let (status, retry_after, body, took) = timed(http.get(format!("{base}/readyz"))).await;
    assert_unavailable(status, retry_after.as_deref(), &body);
    assert!(took < BOUND, "/readyz took {took:?}");
    let (status, retry_after, body, took) = timed(
        http.get(format!("{base}/api/v1/release-requests"))
            .bearer_auth(&seeded.token),
    )
    .await;
    assert_unavailable(status, retry_after.as_deref(), &body);
    assert!(took < BOUND, "the API took {took:?}");
    let (status, _, _, _) = timed(http.get(format!("{base}/healthz"))).await;
    assert_eq!(status, StatusCode::OK, "the process itself is up");

    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| cluster.start_server());

    // The same process recovers by itself.
    eventually(
        "/readyz to answer 200 again",
        Duration::from_secs(30),
        async || {
            http.get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
                .then_some(())
        },
    )
    .await;

    let mut acknowledged = Vec::new();
    for client in clients {
        acknowledged.extend(client.await.unwrap());
    }
    let approved = approver.await.unwrap();
    assert!(
        unavailable.load(Ordering::Relaxed) > 0,
        "the clients filed through the outage"
    );
    assert_eq!(acknowledged.len(), CLIENTS * NUMBERS_PER_CLIENT);
    assert_eq!(approved, acknowledged.len());

    // Every 201 is in the database, once.
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let stored: HashSet<String> = sqlx::query_scalar::<_, Uuid>("SELECT id FROM release_requests")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .map(|id| id.to_string())
        .collect();
    let acknowledged: HashSet<String> = acknowledged.into_iter().collect();
    assert_eq!(
        stored, acknowledged,
        "exactly the acknowledged requests exist"
    );

    // Every approved release is carried out, and every email is sent, once.
    let total = i64::try_from(acknowledged.len()).unwrap();
    eventually(
        "every release carried out",
        Duration::from_secs(60),
        async || {
            (count("SELECT COUNT(*) FROM release_requests WHERE status = 'released'").await
                == total)
                .then_some(())
        },
    )
    .await;
    eventually("every email sent", Duration::from_secs(60), async || {
        (count("SELECT COUNT(*) FROM outbox WHERE status <> 'sent'").await == 0).then_some(())
    })
    .await;
    let emails = count("SELECT COUNT(*) FROM outbox WHERE kind = 'email'").await;
    // Filed (customer and staff), approved, released.
    assert_eq!(emails, 4 * total);
    let files = std::fs::read_dir(environment.outbox_dir())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "eml"))
        })
        .count();
    assert_eq!(i64::try_from(files).unwrap(), emails, "one file per email");
    pool.close().await;
    drop(serve);
}

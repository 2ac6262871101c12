//! End to end: the real `releasedesk` binary as separate processes (`serve`, or
//! `api` + `reviewer` + `worker`), a real SMTP server and the HTTP stand-in
//! carrier, on SQLite and on PostgreSQL; and what happens when a process is
//! killed, the worker is down or SMTP is down.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use chrono::{DateTime, Utc};
use releasedesk::config::Settings;
use releasedesk_domain::{E164, Money, Reason};
use releasedesk_store::{Actor, NewNumber, Pool, StaffRole, Store};
use releasedesk_tests::{
    Customer, TestDatabase, assert_error, binary,
    carrier::StandInCarrier,
    eventually,
    process::{Environment, Role, Service},
    smtp::{Delivery, SmtpServer, header},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// Runs each `async fn(World)` on a fresh SQLite file and on a fresh PostgreSQL
/// database, as `e2e::sqlite::<name>` and `e2e::postgres::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let database = releasedesk_tests::TestDatabase::sqlite();
                    super::$name(super::World::new(database).await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(database) = releasedesk_tests::TestDatabase::postgres().await {
                        super::$name(super::World::new(database).await).await
                    }
                }
            )+
        }
    };
}

on_both_backends!(
    an_approved_release_is_carried_out_with_mail_over_smtp_and_reclaimed_inside_the_window,
    reclaim_after_the_reclaim_window_is_409_reclaim_window_expired,
    a_worker_killed_after_the_carrier_call_finishes_the_release_after_restart_without_a_second_call,
    emails_queued_while_smtp_is_down_all_arrive_exactly_once_when_it_is_back,
    a_release_approved_while_the_worker_is_down_is_carried_out_when_it_starts,
    a_thousand_finished_jobs_do_not_slow_a_new_release_or_call_the_carrier_again,
);

const REASON: &str = "We no longer need this line at all.";

/// One test's world outside the processes under test: its database (seeded and
/// inspected through the store), the stand-in carrier and an HTTP client.
struct World {
    store: Store,
    http: reqwest::Client,
    carrier: StandInCarrier,
    next: AtomicU64,
    // Dropped last: removes the database after everything that uses it.
    database: TestDatabase,
}

impl World {
    async fn new(database: TestDatabase) -> World {
        let mut settings = Settings::load(None).unwrap();
        settings.database.url = database.url().to_owned().into();
        // Migrated once, as an operator would, so processes started together never
        // race to do it.
        let dir = tempfile::tempdir().unwrap();
        let migrated = binary::run(dir.path(), database.url(), &["migrate"]);
        assert!(
            migrated.status.success(),
            "releasedesk migrate: {}",
            String::from_utf8_lossy(&migrated.stderr)
        );
        let store = releasedesk::open_store(&settings).await.unwrap();
        World {
            store,
            http: reqwest::Client::new(),
            carrier: StandInCarrier::start().await,
            next: AtomicU64::new(1),
            database,
        }
    }

    /// The environment of this world's processes: its database, the stand-in
    /// carrier, and the test pacing of [`Environment::new`].
    fn environment(&self) -> Environment {
        Environment::new(self.database.url()).carrier(&self.carrier)
    }

    fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    async fn customer(&self) -> Customer {
        let n = self.next();
        let email = format!("customer{n}@example.com");
        let name = format!("Customer {n}");
        let account = self.store.create_account(&name, &email).await.unwrap();
        let token = self.store.create_token(account.id).await.unwrap().token;
        Customer {
            account_id: account.id,
            name,
            email,
            token,
        }
    }

    /// A staff token of a new reviewer.
    async fn reviewer(&self) -> String {
        let n = self.next();
        let email = format!("staff{n}@support.example");
        let staff = self
            .store
            .create_staff(&email, "Riley", StaffRole::Reviewer);
        staff.await.unwrap().token
    }

    /// A number of `owner` bought long ago (no fee): its id and E.164 form.
    async fn number(&self, owner: &Customer) -> (Uuid, String) {
        let e164 = format!("+1555{:07}", self.next());
        let new = NewNumber {
            account_id: owner.account_id,
            e164: E164::parse(&e164).unwrap(),
            purchased_at: Some(Utc::now() - chrono::TimeDelta::days(365)),
            monthly_price: Money::from_minor(115),
        };
        (self.store.add_number(new).await.unwrap().id, e164)
    }

    async fn call(
        &self,
        method: Method,
        url: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, json)
    }

    /// Files a release request of `number` over `api`'s customer API.
    async fn file(&self, api: &Service, who: &Customer, number: Uuid) -> String {
        let url = api.url(&format!("/api/v1/phone-numbers/{number}/request-release"));
        let body = json!({ "reason": REASON });
        let (status, body) = self.call(Method::POST, &url, &who.token, Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Approves over `reviewer`'s reviewer API.
    async fn approve(&self, reviewer: &Service, staff_token: &str, request: &str) {
        let url = reviewer.url(&format!(
            "/reviewer/api/v1/release-requests/{request}/approve"
        ));
        let (status, body) = self.call(Method::POST, &url, staff_token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    async fn request_status(&self, api: &Service, who: &Customer, request: &str) -> String {
        let url = api.url(&format!("/api/v1/release-requests/{request}"));
        let (status, body) = self.call(Method::GET, &url, &who.token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"]["status"].as_str().unwrap().to_owned()
    }

    async fn number_view(&self, api: &Service, who: &Customer, number: Uuid) -> Value {
        let url = api.url(&format!("/api/v1/phone-numbers/{number}"));
        let (status, body) = self.call(Method::GET, &url, &who.token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["data"].clone()
    }

    async fn wait_until_released(
        &self,
        api: &Service,
        who: &Customer,
        request: &str,
        within: Duration,
    ) {
        eventually("the request to be released", within, async || {
            let status = self.request_status(api, who, request).await;
            (status == "released").then_some(())
        })
        .await;
    }

    /// Runs a query that returns one integer (a count).
    async fn count(&self, sql: &str) -> i64 {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.store.pool() {
            Pool::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
            Pool::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await,
        }
        .unwrap()
    }

    /// Release calls the stand-in saw, per idempotency key.
    fn release_calls_per_key(&self) -> BTreeMap<String, usize> {
        let mut per_key = BTreeMap::new();
        for call in self.carrier.calls() {
            if call.kind == "releases" {
                *per_key.entry(call.idempotency_key).or_default() += 1;
            }
        }
        per_key
    }
}

fn subject(delivery: &Delivery) -> String {
    header(&delivery.raw, "Subject").unwrap_or_default()
}

fn message_id(delivery: &Delivery) -> String {
    header(&delivery.raw, "Message-ID").unwrap()
}

/// How many deliveries went to `to` with a subject containing every one of `has`.
fn delivered(deliveries: &[Delivery], to: &str, has: &[&str]) -> usize {
    deliveries
        .iter()
        .filter(|d| d.rcpt_to == [to] && has.iter().all(|h| subject(d).contains(h)))
        .count()
}

async fn an_approved_release_is_carried_out_with_mail_over_smtp_and_reclaimed_inside_the_window(
    world: World,
) {
    let Some(smtp) = SmtpServer::start() else {
        return;
    };
    let mut serve = Service::start(Role::Serve, &world.environment().smtp(&smtp.url())).await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (number, e164) = world.number(&acme).await;
    world.store.add_sms(number, 5).await.unwrap();
    let config = json!({
        "friendly_name": "Front desk",
        "config": {
            "email_to_sms": "desk@acme.example",
            "sms_webhook_url": "https://hooks.acme.example/sms",
            "voice_webhook_url": "https://hooks.acme.example/voice",
        },
    });
    let number_url = serve.url(&format!("/api/v1/phone-numbers/{number}"));
    let (status, body) = world
        .call(Method::PATCH, &number_url, &acme.token, Some(config))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["sms_message_count"], 5);

    let id = world.file(&serve, &acme, number).await;
    world.approve(&serve, &staff, &id).await;

    world
        .wait_until_released(&serve, &acme, &id, Duration::from_secs(10))
        .await;
    let released = world.number_view(&serve, &acme, number).await;
    assert_eq!(released["status"], "released", "{released}");
    assert_eq!(released["sms_message_count"], 0, "{released}");
    assert_eq!(released["friendly_name"], Value::Null, "{released}");
    assert_eq!(
        released["config"],
        json!({"email_to_sms": null, "sms_webhook_url": null, "voice_webhook_url": null})
    );
    let calls: Vec<_> = world
        .carrier
        .calls()
        .into_iter()
        .filter(|c| c.kind == "releases")
        .collect();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].idempotency_key, id);
    assert!(calls[0].signature_valid, "{calls:?}");
    assert_eq!(calls[0].body["phone_number"], e164.as_str());
    let deliveries = eventually(
        "the released and the staff emails",
        Duration::from_secs(10),
        async || {
            let deliveries = smtp.deliveries();
            let released = delivered(&deliveries, &acme.email, &[&e164, "released"]);
            let staff = delivered(
                &deliveries,
                "support@localhost",
                &[&e164, "New release request"],
            );
            (released > 0 && staff > 0).then_some(deliveries)
        },
    )
    .await;
    assert_eq!(delivered(&deliveries, &acme.email, &[&e164, "released"]), 1);
    assert_eq!(
        delivered(
            &deliveries,
            "support@localhost",
            &[&e164, "New release request"]
        ),
        1,
        "{:?}",
        deliveries.iter().map(subject).collect::<Vec<_>>()
    );
    let ids: BTreeSet<String> = deliveries.iter().map(message_id).collect();
    assert_eq!(ids.len(), deliveries.len(), "no email twice");

    let reclaim_url = serve.url(&format!("/api/v1/phone-numbers/{number}/reclaim"));
    let (status, body) = world
        .call(Method::POST, &reclaim_url, &acme.token, None)
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "active", "{body}");
    assert_eq!(body["data"]["sms_message_count"], 0, "history stays wiped");
    eventually(
        "the carrier to hear of the reclaim",
        Duration::from_secs(10),
        async || {
            let reclaims = world
                .carrier
                .calls()
                .into_iter()
                .filter(|c| c.kind == "reclaims");
            (reclaims.filter(|c| c.signature_valid).count() == 1).then_some(())
        },
    )
    .await;
    eventually("the reclaimed email", Duration::from_secs(10), async || {
        let deliveries = smtp.deliveries();
        (delivered(
            &deliveries,
            &acme.email,
            &[&e164, "is back on your account"],
        ) == 1)
            .then_some(())
    })
    .await;
    serve.terminate().await;
}

async fn reclaim_after_the_reclaim_window_is_409_reclaim_window_expired(world: World) {
    let environment = world
        .environment()
        .set("RELEASEDESK__RELEASE__RECLAIM_WINDOW", "2s");
    let mut serve = Service::start(Role::Serve, &environment).await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (number, _) = world.number(&acme).await;
    let id = world.file(&serve, &acme, number).await;
    world.approve(&serve, &staff, &id).await;
    world
        .wait_until_released(&serve, &acme, &id, Duration::from_secs(10))
        .await;
    let released = world.number_view(&serve, &acme, number).await;
    let at = |field: &str| -> DateTime<Utc> { released[field].as_str().unwrap().parse().unwrap() };
    assert_eq!(
        at("reclaimable_until") - at("released_at"),
        chrono::TimeDelta::seconds(2),
        "{released}"
    );
    let past_the_window =
        at("reclaimable_until") + chrono::TimeDelta::milliseconds(500) - Utc::now();
    if let Ok(wait) = past_the_window.to_std() {
        tokio::time::sleep(wait).await;
    }

    let reclaim_url = serve.url(&format!("/api/v1/phone-numbers/{number}/reclaim"));
    let (status, body) = world
        .call(Method::POST, &reclaim_url, &acme.token, None)
        .await;

    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "RECLAIM_WINDOW_EXPIRED",
    );
    assert_eq!(
        world.number_view(&serve, &acme, number).await["status"],
        "released"
    );
    serve.terminate().await;
}

async fn a_worker_killed_after_the_carrier_call_finishes_the_release_after_restart_without_a_second_call(
    world: World,
) {
    let environment = world.environment();
    let failing = environment
        .clone()
        .set("RELEASEDESK_FAILPOINT", "after_carrier_release");
    let mut serve = Service::start(Role::Serve, &failing).await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (number, _) = world.number(&acme).await;
    let id = world.file(&serve, &acme, number).await;
    world.approve(&serve, &staff, &id).await;
    eventually("the carrier call", Duration::from_secs(10), async || {
        (world.carrier.calls_for("releases", &id) == 1).then_some(())
    })
    .await;
    assert!(
        serve
            .wait_for_output("fail point reached", Duration::from_secs(5))
            .await,
        "the worker stopped at the fail point"
    );
    assert_eq!(world.request_status(&serve, &acme, &id).await, "releasing");

    serve.kill().await;
    serve.restart_with(environment).await;

    world
        .wait_until_released(&serve, &acme, &id, Duration::from_secs(20))
        .await;
    assert_eq!(
        world.carrier.calls_for("releases", &id),
        1,
        "the re-run skipped the carrier"
    );
    assert_eq!(
        world.number_view(&serve, &acme, number).await["status"],
        "released"
    );
    let released_events = "SELECT COUNT(*) FROM release_events WHERE kind = 'released'";
    assert_eq!(
        world.count(released_events).await,
        1,
        "one request, released once"
    );
    eventually("the released email", Duration::from_secs(10), async || {
        let sql =
            "SELECT COUNT(*) FROM outbox WHERE topic = 'request_released' AND status = 'sent'";
        (world.count(sql).await == 1).then_some(())
    })
    .await;
    serve.terminate().await;
}

async fn emails_queued_while_smtp_is_down_all_arrive_exactly_once_when_it_is_back(world: World) {
    let Some(gone) = SmtpServer::start() else {
        return;
    };
    let port = gone.port();
    gone.stop();
    let environment = world
        .environment()
        .smtp(&format!("smtp://127.0.0.1:{port}"))
        .set("RELEASEDESK__WORKER__MAX_ATTEMPTS", "50");
    let mut serve = Service::start(Role::Serve, &environment).await;
    let acme = world.customer().await;
    let down_since = tokio::time::Instant::now();
    let mut filed = Vec::new();
    for _ in 0..50 {
        let (number, e164) = world.number(&acme).await;
        world.file(&serve, &acme, number).await;
        filed.push(e164);
    }

    // Every email fails a few times, backing off, and none is given up on.
    eventually(
        "every email to fail twice",
        Duration::from_secs(20),
        async || {
            let sql = "SELECT COUNT(*) FROM outbox WHERE kind = 'email' AND status = 'pending' \
                   AND attempts >= 2 AND last_error IS NOT NULL";
            (world.count(sql).await == 100).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        world
            .count(
                "SELECT COUNT(*) FROM outbox WHERE kind = 'email' AND status IN ('sent', 'dead')"
            )
            .await,
        0,
        "nothing sent, nothing given up on"
    );
    // Backoff from 100 ms doubling up to 1 s allows about 4 tries in the first
    // 1.5 s and one a second after that; retrying at every 20 ms poll would be ~50.
    let most_tries = world
        .count("SELECT CAST(MAX(attempts) AS BIGINT) FROM outbox WHERE kind = 'email'")
        .await;
    let bound = 6 + i64::try_from(down_since.elapsed().as_secs()).unwrap();
    assert!(
        most_tries <= bound,
        "{most_tries} tries in {:?}: no backoff",
        down_since.elapsed()
    );
    let smtp = SmtpServer::start_on(port).expect("an SMTP server back on its port");

    eventually(
        "every email to arrive",
        Duration::from_secs(30),
        async || (smtp.deliveries().len() >= 100).then_some(()),
    )
    .await;
    eventually(
        "every email to count as sent",
        Duration::from_secs(10),
        async || {
            let sql = "SELECT COUNT(*) FROM outbox WHERE kind = 'email' AND status = 'sent'";
            (world.count(sql).await == 100).then_some(())
        },
    )
    .await;
    // Long enough for a duplicate (a retry of a delivered email) to show up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let deliveries = smtp.deliveries();
    assert_eq!(deliveries.len(), 100, "each email exactly once");
    let ids: BTreeSet<String> = deliveries.iter().map(message_id).collect();
    assert_eq!(ids.len(), 100, "100 distinct Message-IDs");
    let letters: BTreeSet<(Vec<String>, String)> = deliveries
        .iter()
        .map(|d| (d.rcpt_to.clone(), subject(d)))
        .collect();
    assert_eq!(letters.len(), 100, "100 distinct (recipient, subject)");
    for e164 in &filed {
        assert_eq!(
            delivered(&deliveries, &acme.email, &[e164, "received"]),
            1,
            "{e164}"
        );
        assert_eq!(
            delivered(
                &deliveries,
                "support@localhost",
                &[e164, "New release request"]
            ),
            1,
            "{e164}"
        );
    }
    serve.terminate().await;
}

async fn a_release_approved_while_the_worker_is_down_is_carried_out_when_it_starts(world: World) {
    let environment = world.environment();
    let mut api = Service::start(Role::Api, &environment).await;
    let mut reviewer = Service::start(Role::Reviewer, &environment).await;
    let mut worker = Service::start(Role::Worker, &environment).await;
    worker.terminate().await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (number, _) = world.number(&acme).await;
    let id = world.file(&api, &acme, number).await;

    world.approve(&reviewer, &staff, &id).await;
    // Longer than a sweep interval and many polls: nobody is there to execute it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(world.request_status(&api, &acme, &id).await, "approved");
    assert_eq!(
        world.number_view(&api, &acme, number).await["status"],
        "releasing"
    );
    assert!(world.carrier.calls().is_empty());
    worker.restart().await;

    world
        .wait_until_released(&api, &acme, &id, Duration::from_secs(10))
        .await;
    assert_eq!(world.carrier.calls_for("releases", &id), 1);
    assert_eq!(
        world.number_view(&api, &acme, number).await["status"],
        "released"
    );
    worker.terminate().await;
    reviewer.terminate().await;
    api.terminate().await;
}

/// On PostgreSQL a worker process learns of an approval made in another process
/// from the database's notification, not from its poll: with the poll at a
/// minute, filing and approval in `api` and `reviewer` still end `released`
/// within seconds, and the round that wakes also sends the emails waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_postgres_is_woken_by_other_processes_commits_not_its_poll() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let world = World::new(database).await;
    let environment = world
        .environment()
        .set("RELEASEDESK__WORKER__POLL_INTERVAL", "60s")
        .set("RELEASEDESK__WORKER__SWEEP_INTERVAL", "60s");
    let mut api = Service::start(Role::Api, &environment).await;
    let mut reviewer = Service::start(Role::Reviewer, &environment).await;
    let mut worker = Service::start(Role::Worker, &environment).await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (number, _) = world.number(&acme).await;

    let id = world.file(&api, &acme, number).await;
    world.approve(&reviewer, &staff, &id).await;

    world
        .wait_until_released(&api, &acme, &id, Duration::from_secs(10))
        .await;
    assert_eq!(world.carrier.calls_for("releases", &id), 1);
    let unsent = "SELECT COUNT(*) FROM outbox WHERE status <> 'sent'";
    eventually("every email sent", Duration::from_secs(10), async || {
        (world.count(unsent).await == 0).then_some(())
    })
    .await;
    worker.terminate().await;
    reviewer.terminate().await;
    api.terminate().await;
}

/// Two `worker` processes and an `api` on one PostgreSQL database: every release
/// exactly once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_drain_200_approved_releases_with_one_carrier_call_each() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let world = World::new(database).await;
    let staff_token = world.reviewer().await;
    let staff = world
        .store
        .authenticate_staff(&staff_token)
        .await
        .unwrap()
        .unwrap();
    let mut customers = Vec::new();
    let mut approved = BTreeSet::new();
    for _ in 0..4 {
        let customer = world.customer().await;
        for _ in 0..50 {
            let (number, _) = world.number(&customer).await;
            let reason = Reason::parse(REASON).unwrap();
            let actor = Actor::Customer(customer.account_id);
            let filed = world
                .store
                .file_request(customer.account_id, number, reason, actor)
                .await
                .unwrap();
            world.store.approve(&staff, filed.id, None).await.unwrap();
            approved.insert(filed.id.to_string());
        }
        customers.push(customer);
    }
    let environment = world.environment();
    let mut api = Service::start(Role::Api, &environment).await;

    let (first, second) = tokio::join!(
        Service::start(Role::Worker, &environment),
        Service::start(Role::Worker, &environment),
    );
    let mut workers = [first, second];

    eventually("200 releases", Duration::from_secs(60), async || {
        let sql = "SELECT COUNT(*) FROM release_requests WHERE status = 'released'";
        (world.count(sql).await == 200).then_some(())
    })
    .await;
    let per_key = world.release_calls_per_key();
    assert_eq!(per_key.values().sum::<usize>(), 200, "200 release calls");
    let twice: Vec<_> = per_key.iter().filter(|(_, calls)| **calls > 1).collect();
    assert!(
        twice.is_empty(),
        "idempotency keys called more than once: {twice:?}"
    );
    assert_eq!(
        per_key.keys().cloned().collect::<BTreeSet<_>>(),
        approved,
        "one release call per approved request"
    );
    assert_eq!(
        world
            .count("SELECT COUNT(*) FROM release_events WHERE kind = 'released'")
            .await,
        200
    );
    for customer in &customers {
        let url = api.url("/api/v1/release-requests?status=released&limit=100");
        let (status, body) = world.call(Method::GET, &url, &customer.token, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 50, "{body}");
    }
    for worker in &workers {
        let carried_out = worker
            .output()
            .iter()
            .filter(|line| line.contains("release carried out"))
            .count();
        eprintln!("worker {} carried out {carried_out} releases", worker.pid());
    }
    for worker in &mut workers {
        worker.terminate().await;
    }
    api.terminate().await;
}

/// History in the queue's tables must not make a new release wait (no stall until
/// a heartbeat; acks that stay fast), and re-running a finished release (here 1,000
/// times) never calls the carrier again.
async fn a_thousand_finished_jobs_do_not_slow_a_new_release_or_call_the_carrier_again(
    world: World,
) {
    use releasedesk_worker::queue::{ExecuteRelease, QueueConfig, ReleaseQueue};
    // A stall until the next heartbeat would take 30 s; the bounds below are far less.
    let environment = world
        .environment()
        .set("RELEASEDESK__WORKER__HEARTBEAT_INTERVAL", "30s");
    let mut serve = Service::start(Role::Serve, &environment).await;
    let acme = world.customer().await;
    let staff = world.reviewer().await;
    let (first, _) = world.number(&acme).await;
    let first_id = world.file(&serve, &acme, first).await;
    world.approve(&serve, &staff, &first_id).await;
    world
        .wait_until_released(&serve, &acme, &first_id, Duration::from_secs(10))
        .await;

    let config = QueueConfig {
        batch_size: 100,
        poll_interval: Duration::from_millis(20),
        heartbeat_interval: Duration::from_secs(30),
        missed_heartbeats: 3,
        queue: "releasedesk.execute_release".into(),
    };
    let mut queue = ReleaseQueue::new(world.store.pool(), &config);
    let request_id = Uuid::parse_str(&first_id).unwrap();
    queue
        .push_all(vec![ExecuteRelease { request_id }; 1000])
        .await
        .unwrap();
    let done_sql = match world.store.pool() {
        Pool::Sqlite(_) => "SELECT COUNT(*) FROM Jobs WHERE status = 'Done'",
        Pool::Postgres(_) => "SELECT COUNT(*) FROM apalis.jobs WHERE status = 'Done'",
    };
    let done = eventually("1,001 finished jobs", Duration::from_secs(90), async || {
        let n: i64 = match world.store.pool() {
            Pool::Sqlite(pool) => sqlx::query_scalar(done_sql).fetch_one(pool).await.unwrap(),
            Pool::Postgres(pool) => sqlx::query_scalar(done_sql).fetch_one(pool).await.unwrap(),
        };
        (n >= 1001).then_some(n)
    })
    .await;
    assert!(done >= 1001);

    let (second, _) = world.number(&acme).await;
    let second_id = world.file(&serve, &acme, second).await;
    world.approve(&serve, &staff, &second_id).await;
    world
        .wait_until_released(&serve, &acme, &second_id, Duration::from_secs(10))
        .await;

    assert_eq!(
        world.carrier.calls_for("releases", &first_id),
        1,
        "1,000 re-runs, no second call"
    );
    assert_eq!(world.carrier.calls_for("releases", &second_id), 1);
    serve.terminate().await;
}

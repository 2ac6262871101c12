//! Test harness: [`TestApp`] runs the real router on `127.0.0.1:0` against a fresh
//! database — an SQLite file in a temporary directory, or a PostgreSQL database
//! created for the test and dropped after it — and [`backend_tests!`] runs each
//! test on both.

pub mod binary;
pub mod browser;
pub mod carrier;
pub mod cluster;
mod database;
pub mod process;
pub mod smtp;

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use releasedesk::{app, config::Settings};
use releasedesk_domain::{AgentName, E164, Money};
use releasedesk_store::{Backend, NewAgent, NewNumber, Store};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;
use uuid::Uuid;

pub use database::{TestDatabase, postgres_required};

/// Runs each named `async fn(TestApp)` once on SQLite and once on PostgreSQL, as
/// `sqlite::<name>` and `postgres::<name>`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::TestApp::sqlite().await).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(app) = $crate::TestApp::postgres().await {
                        super::$name(app).await
                    }
                }
            )+
        }
    };
}

/// A customer account with a live API token.
#[derive(Debug, Clone)]
pub struct Customer {
    pub account_id: Uuid,
    pub name: String,
    pub email: String,
    pub token: String,
}

/// A support staff member with a live staff token.
#[derive(Debug, Clone)]
pub struct StaffUser {
    pub id: Uuid,
    pub name: String,
    pub token: String,
}

/// The real application on a fresh database, served on an ephemeral port.
pub struct TestApp {
    pub base_url: String,
    pub store: Store,
    pub client: reqwest::Client,
    pub settings: Settings,
    next_number: AtomicU64,
    shutdown: Option<oneshot::Sender<()>>,
    // Dropped last: removes the database after the server and pool are gone.
    _database: TestDatabase,
}

impl TestApp {
    pub async fn sqlite() -> TestApp {
        Self::start(TestDatabase::sqlite(), |_| {}).await
    }

    /// `None` (the test is skipped, loudly) only when PostgreSQL is unreachable and
    /// `CI` is not set; under `CI=true` an unreachable server fails the test.
    pub async fn postgres() -> Option<TestApp> {
        Some(Self::start(TestDatabase::postgres().await?, |_| {}).await)
    }

    /// The app on `backend` with settings adjusted by `configure` (rate limiting
    /// is off in the other constructors: tests fire bursts on purpose).
    pub async fn with_settings(
        backend: Backend,
        configure: impl FnOnce(&mut Settings),
    ) -> Option<TestApp> {
        let database = match backend {
            Backend::Sqlite => TestDatabase::sqlite(),
            Backend::Postgres => TestDatabase::postgres().await?,
        };
        Some(Self::start(database, configure).await)
    }

    async fn start(database: TestDatabase, configure: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = Settings::load(None).expect("default settings load");
        settings.database.url = database.url().to_owned().into();
        settings.rate_limit.enabled = false;
        configure(&mut settings);
        let store = releasedesk::open_store(&settings)
            .await
            .expect("connect to test database");
        store.migrate().await.expect("migrate test database");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base_url = format!("http://{}", listener.local_addr().expect("local addr"));
        let (tx, rx) = oneshot::channel();
        let app_settings = app::AppSettings::from_settings(&settings).expect("app settings");
        let router = app::router(store.clone(), app::Parts::ALL, app_settings);
        tokio::spawn(app::serve(listener, router, async {
            let _ = rx.await;
        }));
        TestApp {
            base_url,
            store,
            client: reqwest::Client::new(),
            settings,
            next_number: AtomicU64::new(1),
            shutdown: Some(tx),
            _database: database,
        }
    }

    pub fn backend(&self) -> Backend {
        self.store.backend()
    }

    /// A new account with a token.
    pub async fn customer(&self) -> Customer {
        let n = self.next_number.fetch_add(1, Ordering::Relaxed);
        let email = format!("customer{n}@example.com");
        let name = format!("Customer {n}");
        let account = self
            .store
            .create_account(&name, &email)
            .await
            .expect("account");
        let token = self
            .store
            .create_token(account.id)
            .await
            .expect("token")
            .token;
        Customer {
            account_id: account.id,
            name,
            email,
            token,
        }
    }

    /// A new reviewer with a staff token.
    pub async fn reviewer(&self, name: &str) -> StaffUser {
        self.staff_member(name, releasedesk_store::StaffRole::Reviewer)
            .await
    }

    pub async fn staff_member(&self, name: &str, role: releasedesk_store::StaffRole) -> StaffUser {
        let n = self.next_number.fetch_add(1, Ordering::Relaxed);
        let email = format!("staff{n}@support.example");
        let created = self
            .store
            .create_staff(&email, name, role)
            .await
            .expect("staff");
        StaffUser {
            id: created.id,
            name: name.to_owned(),
            token: created.token,
        }
    }

    /// A reviewer API call (`/reviewer/api/v1` + `path`).
    pub async fn review(
        &self,
        method: Method,
        path: &str,
        who: &StaffUser,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call(
            method,
            &format!("/reviewer/api/v1{path}"),
            Some(&who.token),
            body,
        )
        .await
    }

    /// Approves as `who`, with an optional note.
    pub async fn approve(
        &self,
        who: &StaffUser,
        request: &str,
        note: Option<&str>,
    ) -> (StatusCode, Value) {
        let body = note.map(|n| serde_json::json!({ "note": n }));
        self.review(
            Method::POST,
            &format!("/release-requests/{request}/approve"),
            who,
            body,
        )
        .await
    }

    /// A worker on this app's database with an in-memory mailer and `carrier`,
    /// paced for tests (short polls and backoff).
    pub fn worker(
        &self,
        carrier: std::sync::Arc<dyn releasedesk_worker::carrier::Carrier>,
    ) -> (
        releasedesk_worker::Worker,
        releasedesk_worker::mail::MemoryOutbox,
    ) {
        let (mailer, outbox) = releasedesk_worker::mail::Mailer::memory();
        (self.worker_with_mailer(carrier, mailer), outbox)
    }

    /// A worker as [`TestApp::worker`], sending through `mailer`.
    pub fn worker_with_mailer(
        &self,
        carrier: std::sync::Arc<dyn releasedesk_worker::carrier::Carrier>,
        mailer: releasedesk_worker::mail::Mailer,
    ) -> releasedesk_worker::Worker {
        releasedesk_worker::Worker::new(self.store.clone(), mailer, carrier, self.worker_config())
    }

    /// The configuration of [`TestApp::worker`]: quick polls and retries.
    pub fn worker_config(&self) -> releasedesk_worker::WorkerConfig {
        use std::time::Duration;
        releasedesk_worker::WorkerConfig {
            poll_interval: Duration::from_millis(10),
            email_linger: releasedesk_worker::EMAIL_LINGER,
            email_burst_wait: releasedesk_worker::EMAIL_BURST_WAIT,
            requests_pause: releasedesk_worker::REQUESTS_PAUSE,
            sweep_interval: Duration::from_secs(3600),
            batch_size: 100,
            lease: Duration::from_secs(30),
            retry: releasedesk_store::RetryPolicy {
                max_attempts: 5,
                base_delay: Duration::from_millis(10),
                max_delay: Duration::from_millis(100),
            },
            mail: releasedesk_worker::mail::MailContext {
                public_url: self.base_url.clone(),
            },
        }
    }

    /// Files and approves a release of a fresh number; returns (number, request id).
    pub async fn approved_release(&self, owner: &Customer, reviewer: &StaffUser) -> (Uuid, String) {
        let number = self.number(owner).await;
        let filed = self.file_request(owner, number).await;
        let id = filed["id"].as_str().expect("request id").to_owned();
        let (status, body) = self.approve(reviewer, &id, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (number, id)
    }

    /// A fresh active number of the customer, bought long ago (no fee).
    pub async fn number(&self, owner: &Customer) -> Uuid {
        let long_ago = Utc::now() - chrono::TimeDelta::days(365);
        self.number_bought_at(owner, long_ago).await
    }

    pub async fn number_bought_at(&self, owner: &Customer, purchased_at: DateTime<Utc>) -> Uuid {
        let n = self.next_number.fetch_add(1, Ordering::Relaxed);
        let e164 = E164::parse(&format!("+1555{n:07}")).expect("test number");
        let new = NewNumber {
            account_id: owner.account_id,
            e164,
            purchased_at: Some(purchased_at),
            monthly_price: Money::from_minor(115),
        };
        self.store.add_number(new).await.expect("number").id
    }

    /// An agent of the customer using `numbers`.
    pub async fn agent(
        &self,
        owner: &Customer,
        name: &str,
        active: bool,
        numbers: &[Uuid],
    ) -> Uuid {
        let new = NewAgent {
            name: AgentName::parse(name).expect("agent name"),
            active,
            phone_number_ids: numbers.to_vec(),
        };
        self.store
            .create_agent(owner.account_id, new)
            .await
            .expect("agent")
            .id
    }

    /// Sends a request; returns the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let text = response.text().await.expect("body read");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn get(&self, path: &str, who: &Customer) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(&who.token), None).await
    }

    pub async fn post(&self, path: &str, who: &Customer, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&who.token), Some(body))
            .await
    }

    pub async fn patch(&self, path: &str, who: &Customer, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(&who.token), Some(body))
            .await
    }

    /// POST without a body.
    pub async fn post_empty(&self, path: &str, who: &Customer) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(&who.token), None).await
    }

    /// Files a release request that must succeed; returns its data.
    pub async fn file_request(&self, who: &Customer, number: Uuid) -> Value {
        let (status, body) = self
            .request_release(who, number, "We no longer need this line at all.")
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body["data"].clone()
    }

    pub async fn request_release(
        &self,
        who: &Customer,
        number: Uuid,
        reason: &str,
    ) -> (StatusCode, Value) {
        let path = format!("/api/v1/phone-numbers/{number}/request-release");
        self.post(&path, who, serde_json::json!({ "reason": reason }))
            .await
    }

    /// Runs a statement (test set-up that no operation offers, such as bulk history).
    pub async fn execute(&self, sql: &str) {
        use releasedesk_store::Pool;
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.store.pool() {
            Pool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .expect("statement");
    }

    /// PostgreSQL only: `count` active numbers of `account_id` in one statement,
    /// `+1666` and seven digits from 1 up, for tests that need a realistic table.
    pub async fn bulk_numbers_postgres(&self, account_id: Uuid, count: u32) {
        self.execute(&format!(
            "INSERT INTO phone_numbers (id, e164, account_id, status, purchased_at, billing_cycle_started_at, \
             monthly_price_minor, currency, created_at, updated_at) \
             SELECT gen_random_uuid(), '+1666' || lpad(i::text, 7, '0'), '{account_id}', 'active', now(), now(), 115, 'USD', now(), now() \
             FROM generate_series(1, {count}) AS i"
        ))
        .await;
    }

    /// Runs a query that returns one integer (a count), for assertions about rows.
    pub async fn count(&self, sql: &str) -> i64 {
        use releasedesk_store::Pool;
        match self.store.pool() {
            Pool::Sqlite(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                    .fetch_one(pool)
                    .await
            }
        }
        .expect("count query")
    }

    /// Holds back every other writer of `table` (on SQLite, of the whole
    /// database) from another connection until [`HeldWrites::release`], so
    /// that the writes issued meanwhile queue up.
    pub async fn hold_writes_to(&self, table: &str) -> HeldWrites {
        use releasedesk_store::Pool;
        match self.store.pool() {
            Pool::Sqlite(pool) => {
                let mut conn = pool.acquire().await.expect("connection");
                sqlx::raw_sql("BEGIN IMMEDIATE")
                    .execute(&mut *conn)
                    .await
                    .expect("write lock");
                HeldWrites::Sqlite(conn)
            }
            Pool::Postgres(pool) => {
                let mut conn = pool.acquire().await.expect("connection");
                let lock = format!("BEGIN; LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
                    .execute(&mut *conn)
                    .await
                    .expect("table lock");
                HeldWrites::Postgres(conn)
            }
        }
    }
}

/// Writes held back by [`TestApp::hold_writes_to`].
pub enum HeldWrites {
    Sqlite(sqlx::pool::PoolConnection<sqlx::Sqlite>),
    Postgres(sqlx::pool::PoolConnection<sqlx::Postgres>),
}

impl HeldWrites {
    /// Lets the held writes go.
    pub async fn release(self) {
        match self {
            Self::Sqlite(mut conn) => sqlx::raw_sql("COMMIT").execute(&mut *conn).await.map(drop),
            Self::Postgres(mut conn) => sqlx::raw_sql("COMMIT").execute(&mut *conn).await.map(drop),
        }
        .expect("commit");
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts the error envelope with `code` and returns its body.
#[track_caller]
pub fn assert_error(status: StatusCode, body: &Value, expected_status: StatusCode, code: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["success"], Value::Bool(false), "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

/// Polls `probe` every 50 ms until it gives a value; fails after `within`.
pub async fn eventually<T>(
    what: &str,
    within: std::time::Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited {within:?} for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

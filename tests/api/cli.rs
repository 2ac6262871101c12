//! The real binary: admin commands, the demo, and `serve --demo` on both backends.

use std::{collections::HashSet, path::Path, process::Stdio, time::Duration};

use releasedesk_domain::{E164, Money};
use releasedesk_store::{ImportOutcome, ImportRow, NewNumber};
use releasedesk_tests::{Customer, TestApp, TestDatabase, assert_error, backend_tests, binary};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

async fn each_backend(test: impl AsyncFn(&TestDatabase)) {
    test(&TestDatabase::sqlite()).await;
    if let Some(pg) = TestDatabase::postgres().await {
        test(&pg).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_commands_print_one_json_object_each() {
    each_backend(async |db: &TestDatabase| {
        let dir = tempfile::tempdir().unwrap();
        let url = db.url();
        let account = binary::admin(
            dir.path(),
            url,
            &[
                "account",
                "create",
                "--name",
                "Acme",
                "--email",
                "ops@acme.example",
            ],
        );
        assert_eq!(account["name"], "Acme");
        let account_id = account["id"].as_str().unwrap();
        let token = binary::admin(
            dir.path(),
            url,
            &["token", "create", "--account", account_id],
        );
        assert!(token["token"].as_str().unwrap().starts_with("rd_live_"));
        let number = binary::admin(
            dir.path(),
            url,
            &[
                "number",
                "add",
                "--account",
                account_id,
                "--e164",
                "+15557654321",
                "--purchased-at",
                "2026-01-01T00:00:00Z",
                "--monthly-price",
                "2.50",
            ],
        );
        assert_eq!(number["phone_number"], "+15557654321");
        let number_id = number["id"].as_str().unwrap();
        let sms = binary::admin(
            dir.path(),
            url,
            &["sms", "add", "--number", number_id, "--count", "12"],
        );
        assert_eq!(
            sms,
            json!({"number_id": number_id, "sms_message_count": 12})
        );
        let agent = binary::admin(
            dir.path(),
            url,
            &[
                "agent",
                "create",
                "--account",
                account_id,
                "--name",
                "Bot",
                "--number",
                number_id,
            ],
        );
        assert!(agent["id"].is_string());
        let staff = binary::admin(
            dir.path(),
            url,
            &[
                "staff",
                "create",
                "--email",
                "sam@support.example",
                "--name",
                "Sam",
            ],
        );
        assert!(staff["token"].as_str().unwrap().starts_with("rd_staff_"));

        let duplicate = binary::run(
            dir.path(),
            url,
            &[
                "admin",
                "number",
                "add",
                "--account",
                account_id,
                "--e164",
                "+15557654321",
            ],
        );
        assert!(!duplicate.status.success());
        let error: Value = serde_json::from_slice(&duplicate.stderr).unwrap();
        assert_eq!(error["code"], "VALIDATION_ERROR");
        assert!(duplicate.stdout.is_empty(), "errors go to stderr");
    })
    .await;
}

/// Processes that start together on a new database (replicas, or `api` and
/// `worker` side by side) all come up: they take turns to migrate. Before the
/// migration lock, all but one of them failed on tables the first had made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_migrating_one_new_database_together_all_succeed() {
    each_backend(async |db: &TestDatabase| {
        let dir = tempfile::tempdir().unwrap();
        let started: Vec<_> = (0..6)
            .map(|_| {
                binary::command(dir.path(), db.url(), &["migrate"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .expect("start releasedesk migrate")
            })
            .collect();
        for process in started {
            let output = process.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "a migrate beside five others failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout).trim(),
                r#"{"migrated":true}"#
            );
        }
        // The schema they left is whole: the demo seeds into it.
        let demo = binary::run(dir.path(), db.url(), &["demo"]);
        assert!(
            demo.status.success(),
            "{}",
            String::from_utf8_lossy(&demo.stderr)
        );
    })
    .await;
}

/// An admin command on a database where the job queue's tables cannot be set
/// up (here a foreign `Workers` table in the way) fails with one JSON object
/// that says so, not labelled a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_command_whose_queue_setup_fails_says_why() {
    use sqlx::{Connection, SqliteConnection};

    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("releasedesk.db").display()
    );
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE Workers (x TEXT)")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();

    let output = binary::run(
        dir.path(),
        &url,
        &[
            "admin",
            "sms",
            "add",
            "--number",
            &uuid::Uuid::nil().to_string(),
            "--count",
            "1",
        ],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let body: Value =
        serde_json::from_str(stderr.trim()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(body["success"], false);
    assert_eq!(body["code"], "INTERNAL");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("no such column"), "{message}");
    assert!(!message.contains("configuration"), "{message}");
}

/// A command that cannot start says why, in the database's own words: the
/// operator at the terminal has nothing else to go on.
#[test]
fn a_failed_start_names_the_database_s_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-directory").join("releasedesk.db");
    let url = format!("sqlite://{}?mode=rwc", missing.display());
    let output = binary::run(dir.path(), &url, &["migrate"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("error: database") && stderr.contains("unable to open database file"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_is_idempotent() {
    each_backend(async |db: &TestDatabase| {
        let dir = tempfile::tempdir().unwrap();
        let first = binary::run(dir.path(), db.url(), &["demo"]);
        let second = binary::run(dir.path(), db.url(), &["demo"]);
        assert!(first.status.success() && second.status.success());
        let numbers = |out: &[u8]| -> Vec<String> {
            String::from_utf8_lossy(out)
                .lines()
                .filter(|l| l.trim_start().starts_with("number"))
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(numbers(&first.stdout).len(), 4);
        assert_eq!(
            numbers(&first.stdout),
            numbers(&second.stdout),
            "same numbers, same ids"
        );
        assert_ne!(first.stdout, second.stdout, "fresh tokens each run");
    })
    .await;
}

/// `serve --demo` prints tokens; the printed token files a request (201); SIGTERM
/// stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_demo_prints_tokens_that_file_a_request() {
    each_backend(async |db: &TestDatabase| {
        let dir = tempfile::tempdir().unwrap();
        let mut child = tokio::process::Command::new(binary::path())
            .args(["serve", "--demo", "--addr", "127.0.0.1:0"])
            .current_dir(dir.path())
            .env("DATABASE_URL", db.url())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut token, mut number, mut base) = (None, None, None);
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["token", t] if token.is_none() && t.starts_with("rd_live_") => {
                        token = Some(t.to_string())
                    }
                    ["number", "+15550100001", id] => number = Some(id.to_string()),
                    ["ReleaseDesk", "listening", "on", url] => {
                        base = Some(url.to_string());
                        break;
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(60), read)
            .await
            .expect("serve starts");
        let (token, number, base) = (token.unwrap(), number.unwrap(), base.unwrap());

        let response = reqwest::Client::new()
            .post(format!(
                "{base}/api/v1/phone-numbers/{number}/request-release"
            ))
            .bearer_auth(&token)
            .json(&json!({"reason": "We moved this line to a toll-free number."}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["phone_number"], "+15550100001");
        assert_eq!(body["data"]["status"], "pending");

        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("exits on SIGTERM")
            .unwrap();
        assert!(status.success(), "{status}");
    })
    .await;
}

backend_tests!(
    import_of_5000_rows_is_listed_by_the_api,
    a_file_with_two_bad_rows_imports_nothing_and_reports_both,
    a_row_repeating_a_number_in_the_inventory_imports_nothing,
    an_import_into_an_unknown_account_is_not_found,
    a_unique_violation_while_inserting_rolls_the_whole_import_back,
    a_revoked_token_gets_401_and_other_tokens_of_the_account_still_work,
    migrate_waits_while_another_process_holds_the_migration_lock,
);

/// The database URL of `app`, for the binary.
fn url(app: &TestApp) -> &str {
    app.settings.database.url.expose()
}

/// `migrate` waits while another process holds the migration lock, says so,
/// and finishes once the lock is let go.
async fn migrate_waits_while_another_process_holds_the_migration_lock(app: TestApp) {
    let lock = app.store.lock_migrations().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut migrate = binary::command(dir.path(), url(&app), &["migrate"]);
    migrate.env("RUST_LOG", "info").env("NO_COLOR", "1");
    let mut child = tokio::process::Command::from(migrate)
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let said_it_waits = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("another process is migrating the database; waiting for it") {
                return true;
            }
        }
        false
    };
    let said = tokio::time::timeout(Duration::from_secs(30), said_it_waits).await;
    assert!(matches!(said, Ok(true)), "no word of waiting: {said:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "migrate finished while the lock was held"
    );

    lock.release().await;
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("migrate still waiting after the lock was let go")
        .unwrap();
    assert!(status.success());
}

/// On PostgreSQL the migration lock's holder is named while it is held (the
/// lock's own connection, not one of the pool's), and nobody once it is let go.
#[tokio::test]
async fn postgres_names_the_migration_lock_s_holder() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    assert_eq!(app.store.migration_lock_holder().await.unwrap(), None);
    let lock = app.store.lock_migrations().await.unwrap();
    let holder = app.store.migration_lock_holder().await.unwrap();
    let releasedesk_store::Pool::Postgres(pool) = app.store.pool() else {
        unreachable!("a PostgreSQL app")
    };
    let pool_backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap();
    let holder = holder.expect("no holder named while the lock is held");
    assert_ne!(holder, pool_backend, "a pooled connection holds the lock");
    lock.release().await;
    assert_eq!(app.store.migration_lock_holder().await.unwrap(), None);
}

/// `+1444` and seven digits: never one of `TestApp::number`'s `+1555…` numbers.
fn e164(i: usize) -> String {
    format!("+1444{i:07}")
}

/// A CSV file with a header and `rows` (already joined by commas).
fn csv_file(dir: &Path, rows: impl IntoIterator<Item = String>) -> String {
    let mut text = String::from("e164,friendly_name,purchased_at,monthly_price\n");
    for row in rows {
        text.push_str(&row);
        text.push('\n');
    }
    let path = dir.join("numbers.csv");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

fn good_row(i: usize) -> String {
    format!("{},Line {i},2026-01-02T03:04:05Z,2.50", e164(i))
}

/// Runs `admin number import` that must fail; returns its stderr JSON.
fn failed_import(dir: &Path, app: &TestApp, account: &str, csv: &str) -> Value {
    let output = binary::run(
        dir,
        url(app),
        &[
            "admin",
            "number",
            "import",
            "--account",
            account,
            "--csv",
            csv,
        ],
    );
    assert!(!output.status.success(), "the import must fail");
    assert!(output.stdout.is_empty(), "errors go to stderr only");
    serde_json::from_slice(&output.stderr).unwrap_or_else(|e| {
        panic!(
            "stderr is not one JSON object ({e}): {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Every number the customer sees through the API, page by page.
async fn listed_numbers(app: &TestApp, who: &Customer) -> Vec<Value> {
    let mut numbers = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1000 {
        let path = match &cursor {
            Some(c) => format!("/api/v1/phone-numbers?limit=200&cursor={c}"),
            None => "/api/v1/phone-numbers?limit=200".to_owned(),
        };
        let (status, body) = app.get(&path, who).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        numbers.extend(body["data"].as_array().unwrap().iter().cloned());
        match &body["next_cursor"] {
            Value::String(next) => cursor = Some(next.clone()),
            _ => return numbers,
        }
    }
    panic!("paging did not end");
}

async fn import_of_5000_rows_is_listed_by_the_api(app: TestApp) {
    let acme = app.customer().await;
    let dir = tempfile::tempdir().unwrap();
    let csv = csv_file(dir.path(), (0..5000).map(good_row));
    let account = acme.account_id.to_string();
    let started = std::time::Instant::now();
    let printed = binary::admin(
        dir.path(),
        url(&app),
        &["number", "import", "--account", &account, "--csv", &csv],
    );
    eprintln!("imported 5000 rows in {:?}", started.elapsed());
    assert_eq!(printed, json!({"account_id": account, "imported": 5000}));

    let listed = listed_numbers(&app, &acme).await;
    let phone_numbers: HashSet<&str> = listed
        .iter()
        .map(|n| n["phone_number"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..5000).map(e164).collect();
    assert_eq!(listed.len(), 5000);
    assert_eq!(
        phone_numbers,
        expected.iter().map(String::as_str).collect::<HashSet<_>>()
    );
    let one = listed
        .iter()
        .find(|n| n["phone_number"] == e164(1234))
        .unwrap();
    assert_eq!(one["status"], "active");
    assert_eq!(one["friendly_name"], "Line 1234");
    assert_eq!(one["monthly_price"], "2.50");
    assert_eq!(one["purchased_at"], "2026-01-02T03:04:05Z");
    assert_eq!(one["billing_cycle_started_at"], "2026-01-02T03:04:05Z");
}

async fn a_file_with_two_bad_rows_imports_nothing_and_reports_both(app: TestApp) {
    let acme = app.customer().await;
    let dir = tempfile::tempdir().unwrap();
    // Line 1 is the header, so row i is on line i + 2.
    let rows = (0..200).map(|i| match i {
        8 => "555-0100,Bad number,,".to_owned(),
        148 => format!("{},,,abc", e164(i)),
        _ => good_row(i),
    });
    let csv = csv_file(dir.path(), rows);
    let error = failed_import(dir.path(), &app, &acme.account_id.to_string(), &csv);

    assert_eq!(error["success"], false);
    assert_eq!(error["code"], "VALIDATION_ERROR");
    let details = error["details"].as_array().unwrap();
    let at: Vec<(u64, &str)> = details
        .iter()
        .map(|d| {
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()), "{d}");
            (d["line"].as_u64().unwrap(), d["column"].as_str().unwrap())
        })
        .collect();
    assert_eq!(at, [(10, "e164"), (150, "monthly_price")], "{error}");
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 0);
}

async fn a_row_repeating_a_number_in_the_inventory_imports_nothing(app: TestApp) {
    let acme = app.customer().await;
    let other = app.customer().await;
    app.store
        .add_number(NewNumber {
            account_id: other.account_id,
            e164: E164::parse(&e164(30)).unwrap(),
            purchased_at: None,
            monthly_price: Money::from_minor(115),
        })
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let account = acme.account_id.to_string();

    // Valid in itself, but the number on line 32 belongs to another account.
    let csv = csv_file(dir.path(), (0..100).map(good_row));
    let error = failed_import(dir.path(), &app, &account, &csv);
    assert_eq!(error["code"], "VALIDATION_ERROR");
    assert_eq!(
        error["details"],
        json!([{"line": 32, "column": "e164", "message": "this number is already in the inventory"}])
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 1);

    // A number listed twice in the file is reported on its second line.
    let rows = (100..150).chain([120]).map(good_row);
    let csv = csv_file(dir.path(), rows);
    let error = failed_import(dir.path(), &app, &account, &csv);
    let details = error["details"].as_array().unwrap();
    assert_eq!(details.len(), 1, "{error}");
    assert_eq!(details[0]["line"], 52);
    assert!(
        details[0]["message"].as_str().unwrap().contains("line 22"),
        "{error}"
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 1);
    assert!(listed_numbers(&app, &acme).await.is_empty());
}

async fn an_import_into_an_unknown_account_is_not_found(app: TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let csv = csv_file(dir.path(), (0..3).map(good_row));
    let error = failed_import(dir.path(), &app, &uuid::Uuid::now_v7().to_string(), &csv);
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 0);
}

/// The CLI rejects repeats before it writes; the store must still hold when the
/// database is the one to notice (a concurrent insert, or a caller without the
/// check): the unique violation in the second batch undoes the first batch too.
async fn a_unique_violation_while_inserting_rolls_the_whole_import_back(app: TestApp) {
    let acme = app.customer().await;
    let row = |i: usize| ImportRow {
        e164: E164::parse(&e164(i)).unwrap(),
        friendly_name: None,
        purchased_at: None,
        monthly_price: Money::from_minor(115),
    };
    let rows: Vec<ImportRow> = (0..1200).map(row).chain([row(3)]).collect();
    let outcome = app
        .store
        .import_numbers(acme.account_id, &rows, &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome, ImportOutcome::DuplicateInImport(vec![1200]));
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 0);

    // And the same rows without the repeat go in whole.
    let outcome = app
        .store
        .import_numbers(acme.account_id, &rows[..1200], &|_| {})
        .await
        .unwrap();
    assert_eq!(outcome, ImportOutcome::Imported(1200));
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers").await, 1200);
}

async fn a_revoked_token_gets_401_and_other_tokens_of_the_account_still_work(app: TestApp) {
    let acme = app.customer().await;
    let dir = tempfile::tempdir().unwrap();
    let account = acme.account_id.to_string();
    let issue = || {
        binary::admin(
            dir.path(),
            url(&app),
            &["token", "create", "--account", &account],
        )
    };
    let (by_id, by_secret) = (issue(), issue());
    let list = async |token: &str| {
        app.call(Method::GET, "/api/v1/phone-numbers", Some(token), None)
            .await
    };
    for token in [&by_id, &by_secret] {
        assert_eq!(
            list(token["token"].as_str().unwrap()).await.0,
            StatusCode::OK
        );
    }

    let id = by_id["id"].as_str().unwrap();
    let revoked = binary::admin(dir.path(), url(&app), &["token", "revoke", "--token", id]);
    assert_eq!(revoked["id"], id);
    let revoked_at = revoked["revoked_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(revoked_at).is_ok(),
        "{revoked}"
    );
    let (status, body) = list(by_id["token"].as_str().unwrap()).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(list(&acme.token).await.0, StatusCode::OK);
    assert_eq!(
        list(by_secret["token"].as_str().unwrap()).await.0,
        StatusCode::OK
    );

    // Revoking again changes nothing.
    let again = binary::admin(dir.path(), url(&app), &["token", "revoke", "--token", id]);
    assert_eq!(again, revoked);

    // By the token itself.
    let secret = by_secret["token"].as_str().unwrap();
    let revoked = binary::admin(
        dir.path(),
        url(&app),
        &["token", "revoke", "--secret", secret],
    );
    assert_eq!(revoked["id"], by_secret["id"]);
    let (status, body) = list(secret).await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    assert_eq!(list(&acme.token).await.0, StatusCode::OK);

    let unknown = uuid::Uuid::now_v7().to_string();
    let output = binary::run(
        dir.path(),
        url(&app),
        &["admin", "token", "revoke", "--token", &unknown],
    );
    assert!(!output.status.success());
    let error: Value = serde_json::from_slice(&output.stderr).unwrap();
    assert_eq!(error["code"], "NOT_FOUND", "{error}");
}

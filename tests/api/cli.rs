//! The real binary: admin commands, the demo, and `serve --demo` on both backends.

use std::{process::Stdio, time::Duration};

use releasedesk_tests::{TestDatabase, binary};
use reqwest::StatusCode;
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

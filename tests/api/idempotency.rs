//! `Idempotency-Key` on POSTs (CONTRACT §3), on SQLite and PostgreSQL.

use releasedesk_tests::{Customer, TestApp, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

backend_tests!(
    same_key_and_body_replays_the_first_response_without_a_second_effect,
    same_key_with_another_body_or_path_is_422_reused,
    keys_belong_to_one_account,
    concurrent_requests_with_one_key_run_once,
    an_error_answer_is_replayed_too,
    malformed_keys_are_422,
    reviewer_posts_take_keys_too,
    expired_keys_are_purged_by_the_sweep_and_free_again,
    an_abandoned_claim_is_taken_over_by_the_same_request,
);

/// A POST with an optional idempotency key: status, replay header, JSON body.
async fn post_with_key(
    app: &TestApp,
    path: &str,
    token: &str,
    key: Option<&str>,
    body: Value,
) -> (StatusCode, bool, Value) {
    let mut request = app
        .client
        .post(format!("{}{path}", app.base_url))
        .bearer_auth(token)
        .json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    (status, replayed, response.json().await.unwrap())
}

fn release_path(number: Uuid) -> String {
    format!("/api/v1/phone-numbers/{number}/request-release")
}

const REASON: &str = "Consolidating our lines onto one number.";

/// How many release requests `who` has for `number`, through the API.
async fn requests_for(app: &TestApp, who: &Customer, number: Uuid) -> usize {
    let (status, body) = app.get("/api/v1/release-requests?limit=200", who).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["phone_number_id"] == number.to_string())
        .count()
}

async fn same_key_and_body_replays_the_first_response_without_a_second_effect(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);

    let (first, replayed, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("k-1"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(first, StatusCode::CREATED, "{body}");
    assert!(!replayed);

    // The same body, formatted differently, is the same request.
    let again = json!({ "reason": REASON });
    let (second, replayed, replay) =
        post_with_key(&app, &path, &acme.token, Some("k-1"), again).await;
    assert_eq!(second, StatusCode::CREATED, "{replay}");
    assert!(replayed, "the second answer is marked as a replay");
    assert_eq!(
        replay, body,
        "the replay is the first response, byte for byte"
    );
    assert_eq!(requests_for(&app, &acme, number).await, 1);

    // Without the key the same POST really runs, and meets the business rule.
    let (status, _, conflict) =
        post_with_key(&app, &path, &acme.token, None, json!({"reason": REASON})).await;
    assert_error(
        status,
        &conflict,
        StatusCode::CONFLICT,
        "RELEASE_ALREADY_PENDING",
    );
}

async fn same_key_with_another_body_or_path_is_422_reused(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let other = app.number(&acme).await;
    let (status, _, body) = post_with_key(
        &app,
        &release_path(number),
        &acme.token,
        Some("k-2"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");

    let (status, _, body) = post_with_key(
        &app,
        &release_path(number),
        &acme.token,
        Some("k-2"),
        json!({"reason": "A different reason entirely, same key."}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );

    let (status, _, body) = post_with_key(
        &app,
        &release_path(other),
        &acme.token,
        Some("k-2"),
        json!({"reason": REASON}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "IDEMPOTENCY_KEY_REUSED",
    );
    assert_eq!(
        requests_for(&app, &acme, other).await,
        0,
        "the reused key ran nothing"
    );
}

async fn keys_belong_to_one_account(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let acme_number = app.number(&acme).await;
    let globex_number = app.number(&globex).await;
    for (who, number) in [(&acme, acme_number), (&globex, globex_number)] {
        let (status, replayed, body) = post_with_key(
            &app,
            &release_path(number),
            &who.token,
            Some("shared-key"),
            json!({"reason": REASON}),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert!(!replayed, "another account's key is not ours to replay");
    }
}

async fn concurrent_requests_with_one_key_run_once(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);

    let answers = futures::future::join_all((0..12).map(|_| {
        post_with_key(
            &app,
            &path,
            &acme.token,
            Some("race"),
            json!({"reason": REASON}),
        )
    }))
    .await;

    let mut created_ids = Vec::new();
    for (status, _, body) in &answers {
        match *status {
            StatusCode::CREATED => created_ids.push(body["data"]["id"].clone()),
            StatusCode::CONFLICT => assert_eq!(body["code"], "IDEMPOTENCY_KEY_IN_USE", "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(!created_ids.is_empty(), "one of them ran");
    assert!(
        created_ids.iter().all(|id| *id == created_ids[0]),
        "every 201 is the same request: {created_ids:?}"
    );
    assert_eq!(
        requests_for(&app, &acme, number).await,
        1,
        "the request ran once"
    );

    // Once the first has finished, a retry replays it.
    let (status, replayed, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("race"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(replayed);
    assert_eq!(body["data"]["id"], created_ids[0]);
}

async fn an_error_answer_is_replayed_too(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);
    let short = json!({"reason": "too short"});
    let (status, _, first) =
        post_with_key(&app, &path, &acme.token, Some("bad"), short.clone()).await;
    assert_error(
        status,
        &first,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    let (status, replayed, second) =
        post_with_key(&app, &path, &acme.token, Some("bad"), short).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(replayed);
    assert_eq!(second, first);
}

/// Whether the OpenAPI document's schema of `Idempotency-Key` admits `key`:
/// clients (and schemathesis) generate keys from it.
fn documented_as_valid(key: &str) -> bool {
    let doc = serde_json::to_value(releasedesk::openapi::document()).unwrap();
    let schema = &doc["components"]["parameters"]["IdempotencyKey"]["schema"];
    let pattern = regex::Regex::new(schema["pattern"].as_str().expect("a pattern")).unwrap();
    let length = key.chars().count() as u64;
    schema["minLength"].as_u64().is_none_or(|min| length >= min)
        && schema["maxLength"].as_u64().is_none_or(|max| length <= max)
        && pattern.is_match(key)
}

async fn malformed_keys_are_422(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);
    let malformed = [
        String::new(),
        "k".repeat(256),
        "with space".into(),
        "with\ttab".into(),
    ];
    for key in malformed {
        assert!(!documented_as_valid(&key), "documented as valid: {key:?}");
        let (status, _, body) = post_with_key(
            &app,
            &path,
            &acme.token,
            Some(&key),
            json!({"reason": REASON}),
        )
        .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], "Idempotency-Key", "{body}");
    }
    let longest = "k".repeat(255);
    for key in [&longest, "!", "~", "order-42:retry/1"] {
        assert!(documented_as_valid(key), "documented as invalid: {key:?}");
    }
    let (status, _, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some(&longest),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(requests_for(&app, &acme, number).await, 1);
}

async fn reviewer_posts_take_keys_too(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let request = app.file_request(&acme, number).await;
    let id = request["id"].as_str().unwrap();
    let reviewer = app.reviewer("Rita").await;
    let path = format!("/reviewer/api/v1/release-requests/{id}/approve");

    let (first, _, body) =
        post_with_key(&app, &path, &reviewer.token, Some("approve-1"), json!({})).await;
    assert_eq!(first, StatusCode::OK, "{body}");
    let (second, replayed, replay) =
        post_with_key(&app, &path, &reviewer.token, Some("approve-1"), json!({})).await;
    assert_eq!(second, StatusCode::OK, "{replay}");
    assert!(replayed);
    assert_eq!(replay, body);
    let (status, detail) = app
        .call(
            reqwest::Method::GET,
            &format!("/reviewer/api/v1/release-requests/{id}"),
            Some(&reviewer.token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let approvals = detail["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approved")
        .count();
    assert_eq!(approvals, 1, "{detail}");
}

async fn expired_keys_are_purged_by_the_sweep_and_free_again(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);
    let (status, _, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("old"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let keys = "SELECT COUNT(*) FROM idempotency_keys";
    assert_eq!(app.count(keys).await, 1);

    // A day later (moved back rather than waited for).
    app.execute("UPDATE idempotency_keys SET expires_at = created_at")
        .await;
    let (worker, _) = app.worker(std::sync::Arc::new(
        releasedesk_worker::carrier::LocalCarrier,
    ));
    worker.sweep().await;
    assert_eq!(
        app.count(keys).await,
        0,
        "the sweep removed the expired key"
    );

    // The key is free: a different request under it runs.
    let id = body["data"]["id"].as_str().unwrap();
    let (status, replayed, body) = post_with_key(
        &app,
        &format!("/api/v1/release-requests/{id}/cancel"),
        &acme.token,
        Some("old"),
        json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(!replayed);
}

async fn an_abandoned_claim_is_taken_over_by_the_same_request(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = release_path(number);
    // Claim the key as a process would, then "die" holding it.
    let (status, _, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("crash"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    app.execute(&format!(
        "DELETE FROM release_events; DELETE FROM outbox; DELETE FROM release_requests; \
         UPDATE phone_numbers SET status = 'active' WHERE id = '{number}'; \
         UPDATE idempotency_keys SET state = 'in_flight', response_status = NULL, response_body = NULL"
    ))
    .await;

    let (status, _, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("crash"),
        json!({"reason": REASON}),
    )
    .await;
    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "IDEMPOTENCY_KEY_IN_USE",
    );

    // Its lock runs out (moved back rather than waited for); the retry runs.
    app.execute("UPDATE idempotency_keys SET locked_until = created_at")
        .await;
    let (status, replayed, body) = post_with_key(
        &app,
        &path,
        &acme.token,
        Some("crash"),
        json!({"reason": REASON}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!replayed);
    assert_eq!(requests_for(&app, &acme, number).await, 1);
}

use chrono::{TimeDelta, Utc};
use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    number_detail_has_the_contract_fields,
    patch_sets_and_clears_name_and_config,
    patch_with_invalid_values_names_every_bad_field,
    preview_shows_fee_consequences_and_blockers,
    preview_names_the_agents_that_block,
);

async fn number_detail_has_the_contract_fields(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    app.store.add_sms(number, 7).await.unwrap();
    let agent = app.agent(&acme, "Bot", true, &[number]).await;

    let (status, body) = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    for field in [
        "id",
        "phone_number",
        "status",
        "friendly_name",
        "config",
        "sms_message_count",
        "agent_ids",
        "purchased_at",
        "billing_cycle_started_at",
        "released_at",
        "reclaimable_until",
        "available_after",
    ] {
        assert!(data.get(field).is_some(), "missing {field}: {data}");
    }
    assert_eq!(data["status"], "active");
    assert_eq!(data["sms_message_count"], 7);
    assert_eq!(data["agent_ids"], json!([agent]));
    assert_eq!(
        data["config"],
        json!({"email_to_sms": null, "sms_webhook_url": null, "voice_webhook_url": null})
    );
}

async fn patch_sets_and_clears_name_and_config(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = format!("/api/v1/phone-numbers/{number}");

    let (status, body) = app
        .patch(&path, &acme, json!({
            "friendly_name": "Front desk",
            "config": {"email_to_sms": "desk@acme.example", "sms_webhook_url": "https://hooks.acme.example/sms"}
        }))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["friendly_name"], "Front desk");
    assert_eq!(body["data"]["config"]["email_to_sms"], "desk@acme.example");
    assert_eq!(
        body["data"]["config"]["sms_webhook_url"],
        "https://hooks.acme.example/sms"
    );

    let (_, body) = app
        .patch(&path, &acme, json!({"config": {"email_to_sms": null}}))
        .await;
    assert_eq!(
        body["data"]["config"]["email_to_sms"],
        json!(null),
        "null clears"
    );
    assert_eq!(
        body["data"]["friendly_name"], "Front desk",
        "absent fields stay"
    );
    assert_eq!(
        app.get(&path, &acme).await.1["data"]["config"]["sms_webhook_url"],
        "https://hooks.acme.example/sms"
    );
}

async fn patch_with_invalid_values_names_every_bad_field(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;

    let (status, body) = app
        .patch(
            &format!("/api/v1/phone-numbers/{number}"),
            &acme,
            json!({
                "friendly_name": "",
                "config": {"email_to_sms": "not-an-email", "voice_webhook_url": "ftp://x"}
            }),
        )
        .await;

    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    let fields: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "friendly_name",
            "config.email_to_sms",
            "config.voice_webhook_url"
        ]
    );
}

async fn preview_shows_fee_consequences_and_blockers(app: TestApp) {
    let acme = app.customer().await;
    let number = app
        .number_bought_at(&acme, Utc::now() - TimeDelta::days(10))
        .await;
    app.store.add_sms(number, 3).await.unwrap();
    let path = format!("/api/v1/phone-numbers/{number}/release-preview");

    let (status, body) = app.get(&path, &acme).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["can_release"], true);
    assert_eq!(data["blockers"], json!([]));
    assert_eq!(data["early_termination_fee"], "25.00");
    assert_eq!(data["currency"], "USD");
    assert_eq!(data["cooling_off_period_days"], 30);
    assert_eq!(data["reclaim_window_days"], 10);
    assert!(
        data["consequences"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.as_str().unwrap().contains("(3 messages) is deleted"))
    );
    assert!(
        data["warnings"][0]
            .as_str()
            .unwrap()
            .contains("25.00 USD early termination fee"),
        "{data}"
    );

    app.file_request(&acme, number).await;
    let (_, body) = app.get(&path, &acme).await;
    assert_eq!(body["data"]["can_release"], false);
    assert_eq!(
        body["data"]["blockers"][0]["code"],
        "RELEASE_ALREADY_PENDING"
    );
}

async fn preview_names_the_agents_that_block(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let agent = app.agent(&acme, "Night shift", true, &[number]).await;

    let (_, body) = app
        .get(
            &format!("/api/v1/phone-numbers/{number}/release-preview"),
            &acme,
        )
        .await;

    let blocker = &body["data"]["blockers"][0];
    assert_eq!(body["data"]["can_release"], false);
    assert_eq!(blocker["code"], "PHONE_NUMBER_IN_USE");
    assert_eq!(blocker["agent_ids"], json!([agent]));
    assert!(blocker["message"].as_str().unwrap().contains("Night shift"));
}

/// An account's numbers are found through the indexes by account, which hold
/// only numbers that have one (migration 7): those it owns through
/// `idx_phone_numbers_assigned`, those it released through
/// `idx_phone_numbers_released_by`; never by walking every number. SQLite
/// only: its plan here does not depend on statistics, PostgreSQL's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accounts_numbers_are_found_through_the_indexes_by_account() {
    let app = TestApp::sqlite().await;
    let acme = app.customer().await;
    app.number(&acme).await;

    let plan = app
        .store
        .numbers_plan(acme.account_id)
        .await
        .unwrap()
        .join("\n");

    assert!(plan.contains("idx_phone_numbers_assigned"), "{plan}");
    assert!(plan.contains("idx_phone_numbers_released_by"), "{plan}");
    assert!(!plan.contains("SCAN phone_numbers"), "{plan}");
}

//! Another account's objects do not exist for you (DESIGN invariant 6).

use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

backend_tests!(
    every_customer_endpoint_with_another_accounts_token_is_404,
    lists_show_only_your_own_objects
);

async fn every_customer_endpoint_with_another_accounts_token_is_404(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let number = app.number(&acme).await;
    let spare = app.number(&acme).await;
    let agent = app.agent(&acme, "Acme bot", true, &[]).await;
    let request = app.file_request(&acme, spare).await;
    let request = request["id"].as_str().unwrap();

    let calls: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/phone-numbers/{number}"), None),
        (
            Method::PATCH,
            format!("/api/v1/phone-numbers/{number}"),
            Some(json!({"friendly_name": "mine now"})),
        ),
        (
            Method::GET,
            format!("/api/v1/phone-numbers/{number}/release-preview"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/phone-numbers/{number}/request-release"),
            Some(json!({"reason": "not my number but let me try"})),
        ),
        (
            Method::GET,
            format!("/api/v1/release-requests/{request}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/v1/release-requests/{request}/cancel"),
            None,
        ),
        (Method::GET, format!("/api/v1/agents/{agent}"), None),
        (
            Method::PATCH,
            format!("/api/v1/agents/{agent}"),
            Some(json!({"active": false})),
        ),
    ];
    for (method, path, body) in calls {
        let (status, answer) = app
            .call(method.clone(), &path, Some(&globex.token), body)
            .await;
        assert_error(status, &answer, StatusCode::NOT_FOUND, "NOT_FOUND");
        assert!(
            !answer.to_string().contains(&acme.account_id.to_string()),
            "{method} {path} leaked: {answer}"
        );
    }

    // Using another account's number in your own agent reveals nothing either.
    let (status, answer) = app
        .post(
            "/api/v1/agents",
            &globex,
            json!({"name": "Globex bot", "phone_number_ids": [number]}),
        )
        .await;
    assert_error(
        status,
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );

    // Nothing changed for the owner.
    let (_, mine) = app
        .get(&format!("/api/v1/release-requests/{request}"), &acme)
        .await;
    assert_eq!(mine["data"]["status"], "pending");
    let (_, agent_now) = app.get(&format!("/api/v1/agents/{agent}"), &acme).await;
    assert_eq!(agent_now["data"]["active"], true);
}

async fn lists_show_only_your_own_objects(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let acme_number = app.number(&acme).await;
    app.file_request(&acme, acme_number).await;
    app.agent(&acme, "Acme bot", true, &[]).await;

    for path in [
        "/api/v1/phone-numbers",
        "/api/v1/release-requests",
        "/api/v1/agents",
    ] {
        let (status, body) = app.get(path, &globex).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"], json!([]), "{path}: {body}");
        let (_, own) = app.get(path, &acme).await;
        assert_eq!(own["data"].as_array().unwrap().len(), 1, "{path}: {own}");
    }
}

//! Every error the server can answer uses the envelope, including axum's own.

use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::{Method, StatusCode, header};

backend_tests!(
    malformed_json_is_400,
    missing_content_type_is_415,
    unknown_route_is_404_in_the_envelope,
    wrong_method_is_405_in_the_envelope,
    missing_token_is_401_with_www_authenticate,
    unknown_or_malformed_token_is_401,
    a_filing_by_an_unknown_caller_is_401_whatever_else_is_wrong,
    non_uuid_id_in_the_path_is_404,
    bad_limit_status_or_cursor_is_422,
    oversized_body_is_413,
    unknown_fields_in_a_patch_are_422,
    every_response_carries_a_request_id,
);

async fn malformed_json_is_400(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let response = app
        .client
        .post(format!(
            "{}/api/v1/phone-numbers/{number}/request-release",
            app.base_url
        ))
        .bearer_auth(&acme.token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(r#"{"reason": "unterminated"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.json().await.unwrap();
    assert_error(status, &body, StatusCode::BAD_REQUEST, "MALFORMED_JSON");
}

async fn missing_content_type_is_415(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let response = app
        .client
        .post(format!(
            "{}/api/v1/phone-numbers/{number}/request-release",
            app.base_url
        ))
        .bearer_auth(&acme.token)
        .body(r#"{"reason": "a perfectly fine reason"}"#)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = response.json().await.unwrap();
    assert_error(
        status,
        &body,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
    );
}

async fn unknown_route_is_404_in_the_envelope(app: TestApp) {
    let acme = app.customer().await;
    for path in ["/api/v1/nothing-here", "/", "/api/v2/phone-numbers"] {
        let (status, body) = app.get(path, &acme).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

async fn wrong_method_is_405_in_the_envelope(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/phone-numbers/{number}"),
            Some(&acme.token),
            None,
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
    let (status, body) = app
        .call(
            Method::GET,
            &format!("/api/v1/phone-numbers/{number}/request-release"),
            Some(&acme.token),
            None,
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
    );
}

async fn missing_token_is_401_with_www_authenticate(app: TestApp) {
    let response = app
        .client
        .get(format!("{}/api/v1/phone-numbers", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE).unwrap(),
        "Bearer"
    );
    let status = response.status();
    let body = response.json().await.unwrap();
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

async fn unknown_or_malformed_token_is_401(app: TestApp) {
    for token in ["rd_live_not-a-real-token", "garbage", ""] {
        let (status, body) = app
            .call(Method::GET, "/api/v1/phone-numbers", Some(token), None)
            .await;
        assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    }
    let response = app
        .client
        .get(format!("{}/api/v1/phone-numbers", app.base_url))
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

/// A filing checks its token only in the filing's own read, yet an unknown or
/// revoked token is told 401 before anything about its request (a number of
/// another account, a path that is no id, a body that would not do), and a
/// staff token 403; the account's own token gets the request's own answer.
async fn a_filing_by_an_unknown_caller_is_401_whatever_else_is_wrong(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let ours = app.number(&acme).await;
    let theirs = app.number(&globex).await;
    let revoked = app.store.create_token(acme.account_id).await.unwrap();
    app.store
        .revoke_token(releasedesk_store::TokenRef::Id(revoked.id))
        .await
        .unwrap();
    let staff = app.reviewer("Rita Reviewer").await;
    let file = |number: String, body: serde_json::Value| {
        (
            format!("/api/v1/phone-numbers/{number}/request-release"),
            body,
        )
    };
    let fine = serde_json::json!({ "reason": "We no longer need this line." });
    let requests = [
        file(ours.to_string(), fine.clone()),
        file(theirs.to_string(), fine.clone()),
        file("not-a-uuid".into(), fine.clone()),
        file(ours.to_string(), serde_json::json!({ "reason": "short" })),
        file(ours.to_string(), serde_json::json!({})),
    ];
    let unknown = format!("rd_live_{}", "x".repeat(43));
    for token in [
        Some(unknown.as_str()),
        Some(&revoked.token),
        Some("garbage"),
        None,
    ] {
        for (path, body) in &requests {
            let (status, answer) = app
                .call(Method::POST, path, token, Some(body.clone()))
                .await;
            assert_error(status, &answer, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
        }
    }
    for (path, body) in &requests {
        let (status, answer) = app
            .call(Method::POST, path, Some(&staff.token), Some(body.clone()))
            .await;
        assert_error(status, &answer, StatusCode::FORBIDDEN, "FORBIDDEN");
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_requests").await,
        0,
        "nothing filed by an unknown caller or staff"
    );

    let expected = [
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        (StatusCode::NOT_FOUND, "NOT_FOUND"),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
        (StatusCode::UNPROCESSABLE_ENTITY, "VALIDATION_ERROR"),
    ];
    for ((path, body), (code, error)) in requests[1..].iter().zip(expected) {
        let (status, answer) = app.post(path, &acme, body.clone()).await;
        assert_error(status, &answer, code, error);
    }
    let (path, body) = &requests[0];
    let (status, answer) = app.post(path, &acme, body.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    assert_eq!(answer["data"]["phone_number_id"], ours.to_string());
}

async fn non_uuid_id_in_the_path_is_404(app: TestApp) {
    let acme = app.customer().await;
    for path in [
        "/api/v1/phone-numbers/not-a-uuid",
        "/api/v1/release-requests/42",
        "/api/v1/agents/x",
    ] {
        let (status, body) = app.get(path, &acme).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

async fn bad_limit_status_or_cursor_is_422(app: TestApp) {
    let acme = app.customer().await;
    for (query, field) in [
        ("limit=0", "limit"),
        ("limit=201", "limit"),
        ("limit=ten", "limit"),
        ("status=gone", "status"),
        ("cursor=!!!", "cursor"),
    ] {
        let (status, body) = app
            .get(&format!("/api/v1/phone-numbers?{query}"), &acme)
            .await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], field, "{query}: {body}");
    }
}

async fn oversized_body_is_413(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let huge = "x".repeat(200 * 1024);
    let (status, body) = app.request_release(&acme, number, &huge).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["success"], false);
}

async fn unknown_fields_in_a_patch_are_422(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let (status, body) = app
        .patch(
            &format!("/api/v1/phone-numbers/{number}"),
            &acme,
            serde_json::json!({"status": "available"}),
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
}

async fn every_response_carries_a_request_id(app: TestApp) {
    let url = format!("{}/api/v1/phone-numbers", app.base_url);
    let fresh = app.client.get(&url).send().await.unwrap();
    let id = fresh.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert!(
        uuid::Uuid::parse_str(&id).is_ok(),
        "a fresh UUID when none was sent: {id}"
    );
    let echoed = app
        .client
        .get(&url)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(echoed.headers()["x-request-id"], "trace-me-42");
    assert_eq!(
        echoed.status(),
        StatusCode::UNAUTHORIZED,
        "errors carry it too"
    );
}

use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    agents_are_created_listed_and_their_numbers_replaced,
    detaching_a_number_unblocks_its_release,
    agent_name_is_required,
);

async fn agents_are_created_listed_and_their_numbers_replaced(app: TestApp) {
    let acme = app.customer().await;
    let a = app.number(&acme).await;
    let b = app.number(&acme).await;

    let (status, created) = app
        .post(
            "/api/v1/agents",
            &acme,
            json!({"name": "Sales", "phone_number_ids": [a, a]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["data"]["active"], true);
    assert_eq!(
        created["data"]["phone_number_ids"],
        json!([a]),
        "duplicates collapse"
    );
    let id = created["data"]["id"].as_str().unwrap();

    let (status, patched) = app
        .patch(
            &format!("/api/v1/agents/{id}"),
            &acme,
            json!({"phone_number_ids": [b], "name": "Sales EU"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["data"]["phone_number_ids"], json!([b]));
    assert_eq!(patched["data"]["name"], "Sales EU");

    let (_, list) = app.get("/api/v1/agents", &acme).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    let (_, number_a) = app.get(&format!("/api/v1/phone-numbers/{a}"), &acme).await;
    assert_eq!(number_a["data"]["agent_ids"], json!([]));
}

async fn detaching_a_number_unblocks_its_release(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let agent = app.agent(&acme, "Bot", true, &[number]).await;
    let (status, _) = app
        .request_release(&acme, number, "We want this number gone.")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let (status, _) = app
        .patch(
            &format!("/api/v1/agents/{agent}"),
            &acme,
            json!({"phone_number_ids": []}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    app.file_request(&acme, number).await;
}

async fn agent_name_is_required(app: TestApp) {
    let acme = app.customer().await;
    let (status, body) = app
        .post("/api/v1/agents", &acme, json!({"active": true}))
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"][0]["field"], "name");
}

//! Races resolve in the database: exactly one winner, no "database is locked".

use futures::future::join_all;
use releasedesk_tests::{TestApp, backend_tests};
use reqwest::StatusCode;

backend_tests!(
    thirty_concurrent_duplicate_requests_give_exactly_one_201,
    thirty_two_concurrent_writers_all_succeed,
);

async fn thirty_concurrent_duplicate_requests_give_exactly_one_201(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;

    let answers = join_all((0..30).map(|i| {
        let (app, acme) = (&app, &acme);
        async move {
            app.request_release(acme, number, &format!("Concurrent duplicate number {i:02}"))
                .await
        }
    }))
    .await;

    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["code"] == "RELEASE_ALREADY_PENDING")
        .count();
    assert_eq!((created, conflicts), (1, 29), "{answers:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox").await,
        2,
        "only the winner queued email"
    );
}

async fn thirty_two_concurrent_writers_all_succeed(app: TestApp) {
    let mut work = Vec::new();
    for _ in 0..32 {
        let customer = app.customer().await;
        let number = app.number(&customer).await;
        work.push((customer, number));
    }

    let answers = join_all(work.iter().map(|(customer, number)| {
        let app = &app;
        async move {
            let filed = app
                .request_release(customer, *number, "Thirty-two writers at once.")
                .await;
            let agent = app
                .post(
                    "/api/v1/agents",
                    customer,
                    serde_json::json!({"name": "Concurrent bot"}),
                )
                .await;
            (filed, agent)
        }
    }))
    .await;

    for ((filed, filed_body), (agent, agent_body)) in &answers {
        assert_eq!(*filed, StatusCode::CREATED, "{filed_body}");
        assert_eq!(*agent, StatusCode::CREATED, "{agent_body}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 32);
}

//! Keyset paging: every row exactly once, in order, across pages.

use std::collections::HashSet;

use releasedesk_tests::{Customer, TestApp, backend_tests};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    numbers_page_without_duplicates_or_gaps,
    requests_page_newest_first_without_duplicates_or_gaps
);

/// Follows `next_cursor` to the end; returns every id in order.
async fn walk(app: &TestApp, who: &Customer, path: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let url = match &cursor {
            Some(c) => format!("{path}?limit={limit}&cursor={c}"),
            None => format!("{path}?limit={limit}"),
        };
        let (status, body) = app.get(&url, who).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let page = body["data"].as_array().unwrap();
        assert!(page.len() <= limit);
        ids.extend(
            page.iter()
                .map(|row| row["id"].as_str().unwrap().to_owned()),
        );
        match &body["next_cursor"] {
            Value::String(next) => {
                assert_eq!(page.len(), limit, "only full pages have a next cursor");
                cursor = Some(next.clone());
            }
            Value::Null => return ids,
            other => panic!("next_cursor must be string or null, got {other}"),
        }
    }
    panic!("paging did not end");
}

async fn numbers_page_without_duplicates_or_gaps(app: TestApp) {
    let acme = app.customer().await;
    let mut created = Vec::new();
    for _ in 0..23 {
        created.push(app.number(&acme).await.to_string());
    }
    let other = app.customer().await;
    app.number(&other).await;

    let seen = walk(&app, &acme, "/api/v1/phone-numbers", 5).await;

    assert_eq!(seen, created, "creation order, no duplicates, no gaps");
    let exact = walk(&app, &acme, "/api/v1/phone-numbers", 23).await;
    assert_eq!(exact.len(), 23);
}

async fn requests_page_newest_first_without_duplicates_or_gaps(app: TestApp) {
    let acme = app.customer().await;
    let mut filed = Vec::new();
    for _ in 0..12 {
        let number = app.number(&acme).await;
        filed.push(
            app.file_request(&acme, number).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }

    let seen = walk(&app, &acme, "/api/v1/release-requests", 5).await;

    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no duplicates");
    filed.reverse();
    assert_eq!(seen, filed, "newest first, no gaps");

    let (_, pending) = app
        .get("/api/v1/release-requests?status=pending&limit=200", &acme)
        .await;
    assert_eq!(pending["data"].as_array().unwrap().len(), 12);
    let (_, cancelled) = app
        .get("/api/v1/release-requests?status=cancelled", &acme)
        .await;
    assert_eq!(cancelled["data"].as_array().unwrap().len(), 0);
}

//! The reviewer API: staff authentication, the queue, claims and decisions.

use futures::future::join;
use releasedesk_store::{ClaimFilter, PageRequest, QueueFilter, StaffRole};
use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    reviewer_api_needs_a_staff_token_and_customer_api_refuses_one,
    queue_lists_pending_requests_oldest_first_with_context,
    queue_filters_by_claim_search_and_order_and_pages_with_a_cursor,
    claim_by_one_reviewer_locks_out_the_others,
    approval_marks_the_number_releasing_and_schedules_execution_durably,
    approval_rechecks_in_use_and_rolls_back_completely,
    approve_or_cancel_of_a_decided_request_is_409_request_not_pending,
    two_reviewers_racing_to_approve_produce_one_winner,
    cancel_needs_a_note_which_the_customer_is_emailed,
    the_filer_of_an_on_behalf_request_cannot_approve_it,
    unknown_requests_are_404,
    queue_is_served_by_the_status_index,
);

async fn reviewer_api_needs_a_staff_token_and_customer_api_refuses_one(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;

    let (status, body) = app
        .call(Method::GET, "/reviewer/api/v1/queue", None, None)
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, body) = app
        .call(
            Method::GET,
            "/reviewer/api/v1/queue",
            Some("rd_staff_forged"),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let (status, body) = app
        .call(
            Method::GET,
            "/reviewer/api/v1/queue",
            Some(&acme.token),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = app
        .call(
            Method::GET,
            "/api/v1/phone-numbers",
            Some(&riley.token),
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, _) = app.review(Method::GET, "/queue", &riley, None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn queue_lists_pending_requests_oldest_first_with_context(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let first = app
        .number_bought_at(&acme, chrono::Utc::now() - chrono::TimeDelta::days(5))
        .await;
    let second = app.number(&acme).await;
    let first_request = app.file_request(&acme, first).await;
    let second_request = app.file_request(&acme, second).await;
    app.agent(&acme, "Late bot", true, &[second]).await;
    let cancelled = app.number(&acme).await;
    let cancelled_request = app.file_request(&acme, cancelled).await;
    app.post_empty(
        &format!(
            "/api/v1/release-requests/{}/cancel",
            cancelled_request["id"].as_str().unwrap()
        ),
        &acme,
    )
    .await;

    let (status, body) = app.review(Method::GET, "/queue", &riley, None).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["data"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            first_request["id"].as_str().unwrap(),
            second_request["id"].as_str().unwrap()
        ]
    );
    let item = &items[0];
    assert_eq!(item["account"]["id"], acme.account_id.to_string());
    assert!(
        item["account"]["name"]
            .as_str()
            .unwrap()
            .starts_with("Customer")
    );
    assert!(item["age_seconds"].as_i64().unwrap() >= 0);
    assert_eq!(item["claimed_by"], json!(null));
    assert_eq!(item["early_termination_fee"], "25.00");
    assert_eq!(item["in_use"], false);
    assert_eq!(
        items[1]["in_use"], true,
        "in_use is live: the agent came after the filing"
    );
    assert_eq!(body["next_cursor"], json!(null));

    let (_, cancelled) = app
        .review(Method::GET, "/queue?status=cancelled", &riley, None)
        .await;
    assert_eq!(cancelled["data"].as_array().unwrap().len(), 1);
}

async fn queue_filters_by_claim_search_and_order_and_pages_with_a_cursor(app: TestApp) {
    let riley = app.reviewer("Riley").await;
    let sam = app.reviewer("Sam").await;
    let mut filed = Vec::new();
    for _ in 0..5 {
        let customer = app.customer().await;
        let number = app.number(&customer).await;
        filed.push(app.file_request(&customer, number).await);
    }
    let id = |i: usize| filed[i]["id"].as_str().unwrap().to_owned();
    app.review(
        Method::POST,
        &format!("/release-requests/{}/claim", id(1)),
        &riley,
        None,
    )
    .await;
    app.review(
        Method::POST,
        &format!("/release-requests/{}/claim", id(2)),
        &sam,
        None,
    )
    .await;

    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, mine) = app
        .review(Method::GET, "/queue?claimed=mine", &riley, None)
        .await;
    assert_eq!(ids(&mine), [id(1)]);
    assert_eq!(mine["data"][0]["claimed_by"]["name"], "Riley");
    let (_, unclaimed) = app
        .review(Method::GET, "/queue?claimed=unclaimed", &riley, None)
        .await;
    assert_eq!(ids(&unclaimed), [id(0), id(3), id(4)]);
    let (_, newest) = app
        .review(Method::GET, "/queue?order=newest", &riley, None)
        .await;
    assert_eq!(ids(&newest), [id(4), id(3), id(2), id(1), id(0)]);

    let number = filed[3]["phone_number"].as_str().unwrap();
    let (_, by_number) = app
        .review(
            Method::GET,
            &format!("/queue?q={}", &number[5..]),
            &riley,
            None,
        )
        .await;
    assert_eq!(ids(&by_number), [id(3)]);
    let name = by_number["data"][0]["account"]["name"]
        .as_str()
        .unwrap()
        .to_uppercase();
    let (_, by_name) = app
        .review(
            Method::GET,
            &format!("/queue?q={}", name.replace(' ', "%20")),
            &riley,
            None,
        )
        .await;
    assert_eq!(ids(&by_name), [id(3)], "account search is case-insensitive");
    let (_, wildcard) = app.review(Method::GET, "/queue?q=%25", &riley, None).await;
    assert_eq!(
        ids(&wildcard),
        Vec::<String>::new(),
        "LIKE wildcards are literal"
    );

    let (_, page1) = app
        .review(Method::GET, "/queue?limit=2", &riley, None)
        .await;
    let cursor = page1["next_cursor"].as_str().unwrap();
    let (_, page2) = app
        .review(
            Method::GET,
            &format!("/queue?limit=2&cursor={cursor}"),
            &riley,
            None,
        )
        .await;
    let cursor = page2["next_cursor"].as_str().unwrap();
    let (_, page3) = app
        .review(
            Method::GET,
            &format!("/queue?limit=2&cursor={cursor}"),
            &riley,
            None,
        )
        .await;
    let all: Vec<String> = [ids(&page1), ids(&page2), ids(&page3)].concat();
    assert_eq!(all, (0..5).map(id).collect::<Vec<_>>());
    assert_eq!(page3["next_cursor"], json!(null));

    let (status, body) = app
        .review(
            Method::GET,
            "/queue?claimed=everyone&order=random",
            &riley,
            None,
        )
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
    assert_eq!(body["details"].as_array().unwrap().len(), 2, "{body}");
}

async fn claim_by_one_reviewer_locks_out_the_others(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let sam = app.reviewer("Sam").await;
    let number = app.number(&acme).await;
    let request = app.file_request(&acme, number).await;
    let id = request["id"].as_str().unwrap();

    let (status, body) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/claim"),
            &riley,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["claimed_by"]["id"], riley.id.to_string());
    let (status, _) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/claim"),
            &riley,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "claiming again is harmless");

    let (status, body) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/claim"),
            &sam,
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "CLAIMED_BY_OTHER");
    let (status, body) = app.approve(&sam, id, None).await;
    assert_error(status, &body, StatusCode::CONFLICT, "CLAIMED_BY_OTHER");
    let (status, body) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/cancel"),
            &sam,
            Some(json!({"note": "no"})),
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "CLAIMED_BY_OTHER");
    let (status, body) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/unclaim"),
            &sam,
            None,
        )
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "CLAIMED_BY_OTHER");

    let (status, body) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/unclaim"),
            &riley,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["claimed_by"], json!(null));
    let (status, _) = app
        .review(
            Method::POST,
            &format!("/release-requests/{id}/claim"),
            &sam,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, detail) = app
        .review(
            Method::GET,
            &format!("/release-requests/{id}"),
            &riley,
            None,
        )
        .await;
    let kinds: Vec<&str> = detail["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["requested", "claimed", "unclaimed", "claimed"]);
}

async fn approval_marks_the_number_releasing_and_schedules_execution_durably(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let number = app.number(&acme).await;
    let request = app.file_request(&acme, number).await;
    let id = request["id"].as_str().unwrap();

    let (status, body) = app
        .approve(&riley, id, Some("Verified with the customer by phone."))
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "approved");
    assert_eq!(
        body["data"]["decision_note"],
        "Verified with the customer by phone."
    );
    let (_, number_now) = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await;
    assert_eq!(number_now["data"]["status"], "releasing");
    let job = format!(
        "SELECT COUNT(*) FROM outbox WHERE kind = 'job' AND topic = 'execute_release' AND dedup_key = 'execute_release:{id}' AND status = 'pending'"
    );
    assert_eq!(
        app.count(&job).await,
        1,
        "the execution is scheduled in the approval's transaction"
    );
    let email = format!(
        "SELECT COUNT(*) FROM outbox WHERE topic = 'request_approved' AND recipient = '{}'",
        acme.email
    );
    assert_eq!(app.count(&email).await, 1);
    let events = body["data"]["events"].as_array().unwrap();
    let approved = events.iter().find(|e| e["kind"] == "approved").unwrap();
    assert_eq!(approved["actor"], format!("staff:{}", riley.id));
    assert_eq!(approved["note"], "Verified with the customer by phone.");
    assert!(approved["at"].is_string());

    let (_, customer_view) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;
    assert_eq!(customer_view["data"]["status"], "approved");
    let (status, body) = app
        .post_empty(&format!("/api/v1/release-requests/{id}/cancel"), &acme)
        .await;
    assert_error(status, &body, StatusCode::CONFLICT, "REQUEST_NOT_PENDING");
}

async fn approval_rechecks_in_use_and_rolls_back_completely(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let number = app.number(&acme).await;
    let request = app.file_request(&acme, number).await;
    let id = request["id"].as_str().unwrap();
    app.agent(&acme, "Sneaky bot", true, &[number]).await;

    let (status, body) = app.approve(&riley, id, None).await;

    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "PHONE_NUMBER_IN_USE",
    );
    assert_eq!(body["details"][0]["agent_name"], "Sneaky bot");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'job'")
            .await,
        0,
        "no schedule survives the rollback"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'approved'")
            .await,
        0
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM phone_numbers WHERE status = 'releasing'")
            .await,
        0
    );
    let (_, detail) = app
        .review(
            Method::GET,
            &format!("/release-requests/{id}"),
            &riley,
            None,
        )
        .await;
    assert_eq!(detail["data"]["status"], "pending");
    assert_eq!(detail["data"]["in_use"], true);
}

async fn approve_or_cancel_of_a_decided_request_is_409_request_not_pending(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let approved = app.file_request(&acme, app.number(&acme).await).await;
    let approved = approved["id"].as_str().unwrap();
    assert_eq!(app.approve(&riley, approved, None).await.0, StatusCode::OK);
    let cancelled = app.file_request(&acme, app.number(&acme).await).await;
    let cancelled = cancelled["id"].as_str().unwrap();
    app.post_empty(
        &format!("/api/v1/release-requests/{cancelled}/cancel"),
        &acme,
    )
    .await;

    for id in [approved, cancelled] {
        let (status, body) = app.approve(&riley, id, None).await;
        assert_error(status, &body, StatusCode::CONFLICT, "REQUEST_NOT_PENDING");
        let (status, body) = app
            .review(
                Method::POST,
                &format!("/release-requests/{id}/cancel"),
                &riley,
                Some(json!({"note": "too late"})),
            )
            .await;
        assert_error(status, &body, StatusCode::CONFLICT, "REQUEST_NOT_PENDING");
        let (status, body) = app
            .review(
                Method::POST,
                &format!("/release-requests/{id}/claim"),
                &riley,
                None,
            )
            .await;
        assert_error(status, &body, StatusCode::CONFLICT, "REQUEST_NOT_PENDING");
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'job'")
            .await,
        1
    );
}

async fn two_reviewers_racing_to_approve_produce_one_winner(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let sam = app.reviewer("Sam").await;
    for round in 0..8 {
        let request = app.file_request(&acme, app.number(&acme).await).await;
        let id = request["id"].as_str().unwrap();

        let ((a, a_body), (b, b_body)) =
            join(app.approve(&riley, id, None), app.approve(&sam, id, None)).await;

        let mut statuses = [a, b];
        statuses.sort();
        assert_eq!(
            statuses,
            [StatusCode::OK, StatusCode::CONFLICT],
            "round {round}: {a_body} / {b_body}"
        );
        let loser = if a == StatusCode::CONFLICT {
            &a_body
        } else {
            &b_body
        };
        assert!(
            ["CLAIMED_BY_OTHER", "REQUEST_NOT_PENDING"].contains(&loser["code"].as_str().unwrap()),
            "{loser}"
        );
        let jobs = format!("SELECT COUNT(*) FROM outbox WHERE dedup_key = 'execute_release:{id}'");
        assert_eq!(app.count(&jobs).await, 1);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'approved'")
            .await,
        8
    );
}

async fn cancel_needs_a_note_which_the_customer_is_emailed(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let request = app.file_request(&acme, app.number(&acme).await).await;
    let id = request["id"].as_str().unwrap();
    let path = format!("/release-requests/{id}/cancel");

    for body in [
        None,
        Some(json!({})),
        Some(json!({"note": "   "})),
        Some(json!({"note": "n".repeat(1001)})),
    ] {
        let (status, answer) = app.review(Method::POST, &path, &riley, body.clone()).await;
        let expected = if body.is_none() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(status, expected, "{body:?}: {answer}");
    }
    let note = "This number still has an active porting order; please contact support.";
    let (status, body) = app
        .review(Method::POST, &path, &riley, Some(json!({ "note": note })))
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(body["data"]["cancelled_by"], "staff");
    assert_eq!(body["data"]["decision_note"], note);
    let email = format!(
        "SELECT COUNT(*) FROM outbox WHERE topic = 'request_cancelled' AND recipient = '{}'",
        acme.email
    );
    assert_eq!(app.count(&email).await, 1);
    let (_, mine) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;
    let cancelled = mine["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "cancelled")
        .unwrap()
        .clone();
    assert_eq!(cancelled["note"], note);
    assert_eq!(cancelled["actor"], format!("staff:{}", riley.id));
}

async fn the_filer_of_an_on_behalf_request_cannot_approve_it(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let sam = app.staff_member("Sam", StaffRole::Admin).await;
    let number = app.number(&acme).await;

    let (status, filed) = app
        .review(
            Method::POST,
            &format!("/phone-numbers/{number}/request-release"),
            &riley,
            Some(json!({"reason": "Customer asked by phone to release it."})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{filed}");
    let id = filed["data"]["id"].as_str().unwrap();

    let (status, body) = app.approve(&riley, id, None).await;
    assert_error(status, &body, StatusCode::FORBIDDEN, "FORBIDDEN");
    let (status, body) = app.approve(&sam, id, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let kinds: Vec<(String, String)> = body["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_owned(),
                e["actor"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("requested".into(), format!("staff:{}", riley.id)),
            ("approved".into(), format!("staff:{}", sam.id))
        ]
    );
}

async fn unknown_requests_are_404(app: TestApp) {
    let riley = app.reviewer("Riley").await;
    let unknown = uuid::Uuid::now_v7();
    for (method, path) in [
        (Method::GET, format!("/release-requests/{unknown}")),
        (Method::POST, format!("/release-requests/{unknown}/claim")),
        (Method::POST, format!("/release-requests/{unknown}/approve")),
        (Method::GET, "/release-requests/not-a-uuid".to_owned()),
    ] {
        let (status, body) = app.review(method, &path, &riley, None).await;
        assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    }
}

/// With a large history of decided requests and few pending ones, the queue reads
/// through `idx_release_requests_status`, never a scan of the table.
async fn queue_is_served_by_the_status_index(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let riley = app.reviewer("Riley").await;
    let me = app
        .store
        .authenticate_staff(&riley.token)
        .await
        .unwrap()
        .unwrap();
    if app.backend() == releasedesk_store::Backend::Postgres {
        // PostgreSQL plans by statistics: give it a realistic mix first, many
        // decided requests and thousands pending (one per number).
        let account = acme.account_id;
        app.bulk_numbers_postgres(account, 5000).await;
        let columns = "id, account_id, phone_number_id, phone_number, reason, status, requested_at, requested_by, \
                       early_termination_fee_minor, currency, version, updated_at";
        app.execute(&format!(
            "INSERT INTO release_requests ({columns}) \
             SELECT gen_random_uuid(), '{account}', '{number}', '+15550000000', 'history', 'cancelled', \
             now() - i * interval '1 second', 'system', 0, 'USD', 1, now() FROM generate_series(1, 20000) AS i"
        ))
        .await;
        app.execute(&format!(
            "INSERT INTO release_requests ({columns}) \
             SELECT gen_random_uuid(), account_id, id, e164, 'pending history', 'pending', now(), 'system', 0, 'USD', 1, now() \
             FROM phone_numbers WHERE e164 LIKE '+1666%'"
        ))
        .await;
        app.execute("ANALYZE").await;
    }
    for filter in [
        QueueFilter::default(),
        QueueFilter {
            claimed: ClaimFilter::Mine,
            ..QueueFilter::default()
        },
        QueueFilter {
            claimed: ClaimFilter::Unclaimed,
            ..QueueFilter::default()
        },
        QueueFilter {
            order: releasedesk_store::QueueOrder::Newest,
            ..QueueFilter::default()
        },
    ] {
        let plan = app
            .store
            .queue_plan(&me, &filter, PageRequest::first(50))
            .await
            .unwrap()
            .join("\n");
        let indexed = plan.contains("idx_release_requests_status")
            || plan.contains("idx_release_requests_claimer");
        assert!(
            indexed && !plan.contains("Seq Scan") && !plan.contains("SCAN release_requests"),
            "{filter:?}:\n{plan}"
        );
    }
    // A deep page walks the index from the cursor in order: no gathering of
    // every row past it into a bitmap, no sort.
    let cursor =
        releasedesk_store::Cursor::after(chrono::Utc::now(), uuid::Uuid::now_v7()).encode();
    for order in [
        releasedesk_store::QueueOrder::Oldest,
        releasedesk_store::QueueOrder::Newest,
    ] {
        let filter = QueueFilter {
            order,
            ..QueueFilter::default()
        };
        let page = PageRequest::parse(Some(50), Some(&cursor)).unwrap();
        let plan = app
            .store
            .queue_plan(&me, &filter, page)
            .await
            .unwrap()
            .join("\n");
        assert!(
            plan.contains("idx_release_requests_status")
                && !plan.contains("Bitmap")
                && !plan.contains("Sort")
                && !plan.contains("TEMP B-TREE"),
            "{order:?} after a cursor:\n{plan}"
        );
    }
}

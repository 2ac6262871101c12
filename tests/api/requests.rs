use chrono::{TimeDelta, Utc};
use releasedesk_store::Actor;
use releasedesk_tests::{TestApp, assert_error, backend_tests};
use reqwest::StatusCode;
use serde_json::json;

backend_tests!(
    filing_answers_201_with_talkovers_fields,
    second_request_for_same_number_is_409,
    reason_of_10_and_500_unicode_characters_is_accepted,
    reason_of_9_or_501_characters_or_only_whitespace_is_422,
    missing_or_non_string_reason_is_422,
    number_used_by_an_active_agent_is_422_naming_the_agents,
    inactive_agents_do_not_block_a_release,
    cancel_then_request_again_is_201,
    cancelling_twice_is_409_request_not_pending,
    filing_writes_the_timeline_and_queues_both_emails_in_one_go,
    a_filings_rows_hold_what_its_answer_says_for_a_customer_and_for_staff,
    request_detail_shows_the_timeline,
    early_termination_fee_applies_inside_the_minimum_term,
    unknown_number_is_404,
);

async fn filing_answers_201_with_talkovers_fields(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let reason = "We migrated outbound calling to a new toll-free number.";

    let (status, body) = app.request_release(&acme, number, reason).await;

    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["success"], true);
    let data = &body["data"];
    for field in [
        "id",
        "phone_number_id",
        "phone_number",
        "reason",
        "status",
        "requested_at",
        "early_termination_fee",
        "currency",
    ] {
        assert!(data.get(field).is_some(), "missing {field}: {data}");
    }
    assert_eq!(data["phone_number_id"], number.to_string());
    assert!(data["phone_number"].as_str().unwrap().starts_with("+1555"));
    assert_eq!(data["reason"], reason);
    assert_eq!(data["status"], "pending");
    assert_eq!(data["early_termination_fee"], "0.00");
    assert_eq!(data["currency"], "USD");
    let id = data["id"].as_str().unwrap();
    assert_eq!(
        uuid::Uuid::parse_str(id).unwrap().get_version_num(),
        7,
        "ids are UUID v7"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(data["requested_at"].as_str().unwrap()).is_ok());
}

async fn second_request_for_same_number_is_409(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    app.file_request(&acme, number).await;

    let (status, body) = app
        .request_release(&acme, number, "Asking a second time, just in case.")
        .await;

    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "RELEASE_ALREADY_PENDING",
    );
}

async fn reason_of_10_and_500_unicode_characters_is_accepted(app: TestApp) {
    let acme = app.customer().await;
    for reason in [
        "é".repeat(10),
        "号".repeat(500),
        format!("  {}  ", "📞".repeat(10)),
    ] {
        let number = app.number(&acme).await;
        let (status, body) = app.request_release(&acme, number, &reason).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "{} chars: {body}",
            reason.chars().count()
        );
        assert_eq!(body["data"]["reason"], reason.trim(), "stored trimmed");
    }
}

async fn reason_of_9_or_501_characters_or_only_whitespace_is_422(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    for reason in [
        "é".repeat(9),
        "号".repeat(501),
        " ".repeat(30),
        format!(" {} ", "x".repeat(9)),
    ] {
        let (status, body) = app.request_release(&acme, number, &reason).await;
        assert_error(
            status,
            &body,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(body["details"][0]["field"], "reason", "{body}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 0);
}

async fn missing_or_non_string_reason_is_422(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let path = format!("/api/v1/phone-numbers/{number}/request-release");
    for body in [
        json!({}),
        json!({"reason": 1234567890123_i64}),
        json!({"reason": null}),
        json!({"reason": ["a long enough reason"]}),
    ] {
        let (status, answer) = app.post(&path, &acme, body.clone()).await;
        assert_error(
            status,
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_ERROR",
        );
        assert_eq!(
            answer["details"][0]["field"], "reason",
            "{body} -> {answer}"
        );
    }
}

async fn number_used_by_an_active_agent_is_422_naming_the_agents(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let sales = app.agent(&acme, "Sales bot", true, &[number]).await;
    let support = app.agent(&acme, "Support bot", true, &[number]).await;

    let (status, body) = app
        .request_release(&acme, number, "This line is no longer needed.")
        .await;

    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "PHONE_NUMBER_IN_USE",
    );
    let named: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["agent_name"].as_str().unwrap())
        .collect();
    assert_eq!(named, ["Sales bot", "Support bot"]);
    let ids: Vec<&str> = body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["agent_id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&sales.to_string().as_str()) && ids.contains(&support.to_string().as_str())
    );
}

async fn inactive_agents_do_not_block_a_release(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    app.agent(&acme, "Retired bot", false, &[number]).await;

    app.file_request(&acme, number).await;
}

async fn cancel_then_request_again_is_201(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let first = app.file_request(&acme, number).await;

    let (status, body) = app
        .post_empty(
            &format!(
                "/api/v1/release-requests/{}/cancel",
                first["id"].as_str().unwrap()
            ),
            &acme,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["status"], "cancelled");
    assert_eq!(body["data"]["cancelled_by"], "customer");

    let second = app.file_request(&acme, number).await;
    assert_ne!(first["id"], second["id"]);
}

async fn cancelling_twice_is_409_request_not_pending(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let filed = app.file_request(&acme, number).await;
    let path = format!(
        "/api/v1/release-requests/{}/cancel",
        filed["id"].as_str().unwrap()
    );
    assert_eq!(app.post_empty(&path, &acme).await.0, StatusCode::OK);

    let (status, body) = app.post_empty(&path, &acme).await;

    assert_error(status, &body, StatusCode::CONFLICT, "REQUEST_NOT_PENDING");
}

async fn filing_writes_the_timeline_and_queues_both_emails_in_one_go(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    app.file_request(&acme, number).await;

    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'requested'")
            .await,
        1
    );
    let to_customer = format!(
        "SELECT COUNT(*) FROM outbox WHERE topic = 'request_filed' AND recipient = '{}' AND status = 'pending'",
        acme.email
    );
    assert_eq!(app.count(&to_customer).await, 1);
    let to_staff = "SELECT COUNT(*) FROM outbox WHERE topic = 'staff_new_request' AND recipient = 'support@localhost'";
    assert_eq!(app.count(to_staff).await, 1);

    // A refused filing leaves nothing behind.
    let (status, _) = app
        .request_release(&acme, number, "A duplicate that must not queue email.")
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2);
    assert_eq!(app.count("SELECT COUNT(*) FROM release_events").await, 1);
}

/// PostgreSQL makes a filing's fee, emails and actor in SQL, SQLite in Rust:
/// on both, the rows hold what the answer says, byte for byte where the
/// emails render them.
async fn a_filings_rows_hold_what_its_answer_says_for_a_customer_and_for_staff(app: TestApp) {
    let acme = app.customer().await;
    let staff = app.reviewer("Robin").await;
    let bought_lately = app
        .number_bought_at(&acme, Utc::now() - TimeDelta::days(30))
        .await;
    let bought_long_ago = app
        .number_bought_at(&acme, Utc::now() - TimeDelta::days(91))
        .await;
    let by_customer = app.file_request(&acme, bought_lately).await;
    let reason = releasedesk_domain::Reason::parse("Filed by support for the customer.").unwrap();
    let by_staff = app
        .store
        .file_request(
            acme.account_id,
            bought_long_ago,
            reason,
            Actor::Staff(staff.id),
        )
        .await
        .unwrap();
    let by_staff = serde_json::to_value(by_staff).unwrap();
    assert_eq!(by_customer["early_termination_fee"], "25.00");
    assert_eq!(by_staff["early_termination_fee"], "0.00");

    let emails = app
        .store
        .claim_outbox("email", 10, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(emails.len(), 4, "{emails:?}");
    for (filed, actor) in [
        (&by_customer, format!("customer:{}", acme.account_id)),
        (&by_staff, format!("staff:{}", staff.id)),
    ] {
        let id = filed["id"].as_str().unwrap();
        let payload = json!({
            "account_name": acme.name,
            "currency": "USD",
            "early_termination_fee": filed["early_termination_fee"],
            "phone_number": filed["phone_number"],
            "reason": filed["reason"],
            "request_id": id,
            "requested_at": filed["requested_at"],
        });
        let mine: Vec<_> = emails
            .iter()
            .filter(|email| email.payload["request_id"] == id)
            .collect();
        let recipients: Vec<_> = mine
            .iter()
            .map(|email| (email.topic.as_str(), email.recipient.as_deref()))
            .collect();
        assert_eq!(recipients.len(), 2, "{emails:?}");
        assert!(recipients.contains(&("request_filed", Some(acme.email.as_str()))));
        assert!(recipients.contains(&("staff_new_request", Some("support@localhost"))));
        let event = mine[0].dedup_key.split(':').next().unwrap();
        for email in &mine {
            assert_eq!(email.payload, payload);
            let recipient = email.recipient.as_deref().unwrap();
            assert_eq!(
                email.dedup_key,
                format!("{event}:{}:{recipient}", email.topic)
            );
        }
        let requested = format!(
            "SELECT COUNT(*) FROM release_requests r JOIN release_events e ON e.request_id = r.id \
             WHERE r.phone_number = '{}' AND r.requested_by = '{actor}' AND e.actor = '{actor}' \
             AND e.kind = 'requested' AND r.early_termination_fee_minor = {}",
            filed["phone_number"].as_str().unwrap(),
            if filed["early_termination_fee"] == "25.00" {
                2500
            } else {
                0
            }
        );
        assert_eq!(app.count(&requested).await, 1, "{requested}");
        assert_eq!(uuid::Uuid::parse_str(event).unwrap().get_version_num(), 7);
    }
}

async fn request_detail_shows_the_timeline(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let filed = app.file_request(&acme, number).await;
    let id = filed["id"].as_str().unwrap();
    app.post_empty(&format!("/api/v1/release-requests/{id}/cancel"), &acme)
        .await;

    let (status, body) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let events = body["data"]["events"].as_array().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["requested", "cancelled"]);
    let actor = format!("customer:{}", acme.account_id);
    assert!(
        events
            .iter()
            .all(|e| e["actor"] == actor.as_str() && e["at"].is_string()),
        "{body}"
    );
}

async fn early_termination_fee_applies_inside_the_minimum_term(app: TestApp) {
    let acme = app.customer().await;
    let fresh = app
        .number_bought_at(&acme, Utc::now() - TimeDelta::days(30))
        .await;
    let old = app
        .number_bought_at(&acme, Utc::now() - TimeDelta::days(91))
        .await;

    let fresh_request = app.file_request(&acme, fresh).await;
    let old_request = app.file_request(&acme, old).await;

    assert_eq!(fresh_request["early_termination_fee"], "25.00");
    assert_eq!(old_request["early_termination_fee"], "0.00");
}

async fn unknown_number_is_404(app: TestApp) {
    let acme = app.customer().await;
    let (status, body) = app
        .request_release(&acme, uuid::Uuid::now_v7(), "This number does not exist.")
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
}

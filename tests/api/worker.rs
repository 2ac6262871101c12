//! The worker: exactly-once releases against an HTTP stand-in carrier, email via
//! the outbox, reclaim and cooling-off.

use std::{sync::Arc, time::Duration};

use releasedesk_tests::{TestApp, assert_error, backend_tests, carrier::StandInCarrier};
use reqwest::{Method, StatusCode};
use serde_json::json;

backend_tests!(
    an_approved_release_is_carried_out_once_with_history_and_config_wiped,
    a_second_execution_finds_the_work_done,
    a_crash_after_the_carrier_call_is_finished_without_a_second_call,
    a_permanent_carrier_refusal_fails_the_request_and_tells_staff,
    transient_carrier_failures_are_retried_until_the_release_succeeds,
    reclaim_inside_the_window_restores_the_number_with_a_new_billing_cycle,
    reclaim_after_the_window_is_409,
    cooling_off_returns_the_number_to_inventory_and_hides_it,
    emails_that_keep_failing_go_dead_and_are_listed_for_staff,
    with_the_local_carrier_concurrent_executions_release_once_in_one_commit,
    with_the_local_carrier_a_lapsed_lease_is_taken_over_and_finished,
    a_batch_of_emails_larger_than_one_flush_is_sent_once_and_all_marked,
    a_dispatcher_keeps_several_smtp_sends_in_flight,
    with_the_local_carrier_releases_that_wait_together_commit_together_each_with_its_own_answer,
    a_running_worker_lets_a_stream_of_filed_emails_gather_but_not_a_job,
    a_running_worker_sends_a_bursts_emails_once_its_filings_pause,
    a_process_with_a_dispatcher_writes_its_emails_claimed_and_hands_them_over,
    emails_claimed_by_a_process_that_died_go_out_from_another_after_the_lease,
);

const PAST: &str = "2000-01-01T00:00:00+00:00";

async fn request_status(app: &TestApp, who: &releasedesk_tests::Customer, id: &str) -> String {
    let (_, body) = app
        .get(&format!("/api/v1/release-requests/{id}"), who)
        .await;
    body["data"]["status"].as_str().unwrap().to_owned()
}

async fn an_approved_release_is_carried_out_once_with_history_and_config_wiped(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let number = app.number(&acme).await;
    app.store.add_sms(number, 5).await.unwrap();
    let path = format!("/api/v1/phone-numbers/{number}");
    app.patch(
        &path,
        &acme,
        json!({"friendly_name": "Desk", "config": {"email_to_sms": "desk@acme.example"}}),
    )
    .await;
    let retired = app.agent(&acme, "Retired bot", false, &[number]).await;
    let request = app.file_request(&acme, number).await;
    let id = request["id"].as_str().unwrap();
    app.approve(&riley, id, None).await;
    let carrier = StandInCarrier::start().await;
    let (worker, mail) = app.worker(Arc::new(carrier.adapter()));

    worker.drain().await;

    assert_eq!(request_status(&app, &acme, id).await, "released");
    let (status, body) = app.get(&path, &acme).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the former owner still sees it: {body}"
    );
    let n = &body["data"];
    assert_eq!(n["status"], "released");
    assert_eq!(n["sms_message_count"], 0);
    assert_eq!(n["friendly_name"], json!(null));
    assert_eq!(
        n["config"],
        json!({"email_to_sms": null, "sms_webhook_url": null, "voice_webhook_url": null})
    );
    assert_eq!(n["agent_ids"], json!([]));
    let released: chrono::DateTime<chrono::Utc> =
        n["released_at"].as_str().unwrap().parse().unwrap();
    let reclaimable: chrono::DateTime<chrono::Utc> =
        n["reclaimable_until"].as_str().unwrap().parse().unwrap();
    let available: chrono::DateTime<chrono::Utc> =
        n["available_after"].as_str().unwrap().parse().unwrap();
    assert_eq!(reclaimable - released, chrono::TimeDelta::days(10));
    assert_eq!(available - released, chrono::TimeDelta::days(30));
    let (_, agent) = app.get(&format!("/api/v1/agents/{retired}"), &acme).await;
    assert_eq!(agent["data"]["phone_number_ids"], json!([]));

    let calls = carrier.calls();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].kind, "releases");
    assert_eq!(calls[0].idempotency_key, id);
    assert!(calls[0].signature_valid);

    let sent = mail.sent();
    let e164 = request["phone_number"].as_str().unwrap();
    for (to, subject_has) in [
        (acme.email.as_str(), "received"),
        ("support@localhost", "queue"),
        (acme.email.as_str(), "approved"),
        (acme.email.as_str(), "released"),
    ] {
        let matching = sent
            .iter()
            .filter(|m| m.to == to && m.subject.to_lowercase().contains(subject_has))
            .count();
        assert_eq!(
            matching,
            1,
            "one {subject_has:?} email to {to}: {:?}",
            sent.iter().map(|m| (&m.to, &m.subject)).collect::<Vec<_>>()
        );
    }
    assert!(
        sent.iter().all(|m| m.subject.contains(e164)),
        "every subject names the number"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE status <> 'sent'")
            .await,
        0
    );
    let events = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await
        .1;
    let kinds: Vec<&str> = events["data"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["requested", "approved", "execution_started", "released"]
    );
}

async fn a_second_execution_finds_the_work_done(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (_, id) = app.approved_release(&acme, &riley).await;
    let carrier = StandInCarrier::start().await;
    let adapter = carrier.adapter();
    let request_id = uuid::Uuid::parse_str(&id).unwrap();
    let run = || {
        releasedesk_worker::jobs::execute_release::execute_release(
            &app.store,
            &adapter,
            request_id,
            Duration::from_secs(30),
            Duration::from_millis(10),
        )
    };

    let first = run().await.unwrap();
    let second = run().await.unwrap();

    use releasedesk_worker::jobs::execute_release::Executed;
    assert_eq!(
        (first, second),
        (Executed::Released, Executed::AlreadyFinished)
    );
    assert_eq!(carrier.calls_for("releases", &id), 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'released'")
            .await,
        1
    );
}

async fn a_crash_after_the_carrier_call_is_finished_without_a_second_call(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (_, id) = app.approved_release(&acme, &riley).await;
    let request_id = uuid::Uuid::parse_str(&id).unwrap();
    let carrier = StandInCarrier::start().await;
    // A worker takes a lease that runs out at once, calls the carrier, records it…
    let begun = app
        .store
        .begin_release(request_id, Duration::ZERO)
        .await
        .unwrap();
    let releasedesk_store::Begin::Execute(work) = begun else {
        panic!("{begun:?}")
    };
    use releasedesk_worker::carrier::Carrier as _;
    let release = releasedesk_worker::carrier::CarrierRelease {
        request_id,
        phone_number_id: work.phone_number_id,
        phone_number: work.phone_number,
    };
    carrier.adapter().release(&release).await.unwrap();
    app.store.record_carrier_release(request_id).await.unwrap();
    // …and dies before the final commit.
    assert_eq!(request_status(&app, &acme, &id).await, "releasing");

    let (worker, _) = app.worker(Arc::new(carrier.adapter()));
    worker.drain().await;

    assert_eq!(request_status(&app, &acme, &id).await, "released");
    assert_eq!(
        carrier.calls_for("releases", &id),
        1,
        "the re-run skipped the carrier"
    );
}

async fn a_permanent_carrier_refusal_fails_the_request_and_tells_staff(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (number, id) = app.approved_release(&acme, &riley).await;
    let carrier = StandInCarrier::start().await;
    carrier.script(&[StatusCode::UNPROCESSABLE_ENTITY]);
    let (worker, mail) = app.worker(Arc::new(carrier.adapter()));

    worker.drain().await;

    let (_, request) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;
    assert_eq!(request["data"]["status"], "failed");
    assert!(
        request["data"]["failure_reason"]
            .as_str()
            .unwrap()
            .contains("422")
    );
    let (_, number_now) = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await;
    assert_eq!(
        number_now["data"]["status"], "active",
        "nothing was released"
    );
    let to_staff = mail
        .sent()
        .into_iter()
        .filter(|m| m.to == "support@localhost" && m.subject.to_lowercase().contains("fail"))
        .count();
    assert_eq!(to_staff, 1);
    app.file_request(&acme, number).await;
}

async fn transient_carrier_failures_are_retried_until_the_release_succeeds(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (_, id) = app.approved_release(&acme, &riley).await;
    let carrier = StandInCarrier::start().await;
    carrier.script(&[StatusCode::SERVICE_UNAVAILABLE, StatusCode::BAD_GATEWAY]);
    let (worker, _) = app.worker(Arc::new(carrier.adapter()));

    for _ in 0..100 {
        worker.drain().await;
        if request_status(&app, &acme, &id).await == "released" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(request_status(&app, &acme, &id).await, "released");
    assert_eq!(
        carrier.calls_for("releases", &id),
        3,
        "two failures, one success"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'released'")
            .await,
        1
    );
}

async fn reclaim_inside_the_window_restores_the_number_with_a_new_billing_cycle(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (number, id) = app.approved_release(&acme, &riley).await;
    let before = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await
        .1;
    let carrier = StandInCarrier::start().await;
    let (worker, mail) = app.worker(Arc::new(carrier.adapter()));
    worker.drain().await;
    let path = format!("/api/v1/phone-numbers/{number}/reclaim");

    let (status, body) = app
        .call(Method::POST, &path, Some(&globex.token), None)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    let (status, body) = app.post_empty(&path, &acme).await;

    assert_eq!(status, StatusCode::OK, "{body}");
    let n = &body["data"];
    assert_eq!(n["status"], "active");
    assert_eq!(n["sms_message_count"], 0, "history stays wiped");
    assert!(
        n["billing_cycle_started_at"].as_str().unwrap()
            > before["data"]["billing_cycle_started_at"].as_str().unwrap()
    );
    assert_eq!(n["reclaimable_until"], json!(null));
    worker.drain().await;
    assert_eq!(
        carrier
            .calls()
            .iter()
            .filter(|c| c.kind == "reclaims")
            .count(),
        1
    );
    assert!(
        mail.sent()
            .iter()
            .any(|m| m.to == acme.email && m.subject.contains("is back on your account"))
    );
    let (_, request) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;
    assert!(
        request["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "reclaimed")
    );

    let (status, body) = app.post_empty(&path, &acme).await;
    assert_error(status, &body, StatusCode::CONFLICT, "NUMBER_NOT_RELEASED");
}

async fn reclaim_after_the_window_is_409(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (number, _) = app.approved_release(&acme, &riley).await;
    let carrier = StandInCarrier::start().await;
    let (worker, _) = app.worker(Arc::new(carrier.adapter()));
    worker.drain().await;
    app.execute(&format!(
        "UPDATE phone_numbers SET reclaimable_until = '{PAST}' WHERE status = 'released'"
    ))
    .await;

    let (status, body) = app
        .post_empty(&format!("/api/v1/phone-numbers/{number}/reclaim"), &acme)
        .await;

    assert_error(
        status,
        &body,
        StatusCode::CONFLICT,
        "RECLAIM_WINDOW_EXPIRED",
    );
}

async fn cooling_off_returns_the_number_to_inventory_and_hides_it(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (number, id) = app.approved_release(&acme, &riley).await;
    let carrier = StandInCarrier::start().await;
    let (worker, _) = app.worker(Arc::new(carrier.adapter()));
    worker.drain().await;
    app.execute(&format!(
        "UPDATE phone_numbers SET available_after = '{PAST}' WHERE status = 'released'"
    ))
    .await;

    worker.sweep().await;

    let (status, body) = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await;
    assert_error(status, &body, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_eq!(app.count("SELECT COUNT(*) FROM phone_numbers WHERE status = 'available' AND account_id IS NULL AND released_from_account IS NULL").await, 1);
    let (_, request) = app
        .get(&format!("/api/v1/release-requests/{id}"), &acme)
        .await;
    assert!(
        request["data"]["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "available")
    );
}

async fn emails_that_keep_failing_go_dead_and_are_listed_for_staff(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    app.file_request(&acme, app.number(&acme).await).await;
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens on port 1: every delivery fails as "connection refused".
    let mailer = releasedesk_worker::mail::Mailer::from_settings(
        Some("smtp://127.0.0.1:1"),
        dir.path(),
        "ReleaseDesk <no-reply@localhost>",
    )
    .unwrap();
    let carrier = StandInCarrier::start().await;
    let worker = app.worker_with_mailer(Arc::new(carrier.adapter()), mailer);

    for _ in 0..200 {
        worker.drain().await;
        if app
            .count("SELECT COUNT(*) FROM outbox WHERE status = 'dead'")
            .await
            == 2
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (status, body) = app.review(Method::GET, "/outbox", &riley, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let dead = body["data"].as_array().unwrap();
    assert_eq!(dead.len(), 2, "both emails of the filing gave up: {body}");
    for row in dead {
        assert_eq!(row["status"], "dead");
        assert_eq!(row["attempts"], 5, "the bounded number of attempts");
        assert!(row["last_error"].as_str().unwrap().len() > 5);
        assert!(
            row.get("payload").is_none(),
            "no personal data in the listing"
        );
    }
    let (_, pending) = app
        .review(Method::GET, "/outbox?status=pending", &riley, None)
        .await;
    assert_eq!(pending["data"], json!([]));
    let (status, body) = app
        .review(Method::GET, "/outbox?status=lost", &riley, None)
        .await;
    assert_error(
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_ERROR",
    );
}

async fn with_the_local_carrier_concurrent_executions_release_once_in_one_commit(app: TestApp) {
    use releasedesk_worker::{carrier::LocalCarrier, jobs::execute_release::Executed};
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (number, id) = app.approved_release(&acme, &riley).await;
    let request_id = uuid::Uuid::parse_str(&id).unwrap();

    let runs = (0..6).map(|_| {
        let store = app.store.clone();
        tokio::spawn(async move {
            releasedesk_worker::jobs::execute_release::execute_release(
                &store,
                &LocalCarrier,
                request_id,
                Duration::from_secs(30),
                Duration::from_millis(10),
            )
            .await
            .unwrap()
        })
    });
    let mut outcomes = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        outcomes.push(run.await.unwrap());
    }

    let released = outcomes
        .iter()
        .filter(|o| **o == Executed::Released)
        .count();
    assert_eq!(released, 1, "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Executed::Released | Executed::AlreadyFinished)),
        "{outcomes:?}"
    );
    assert_eq!(request_status(&app, &acme, &id).await, "released");
    let (_, view) = app
        .get(&format!("/api/v1/phone-numbers/{number}"), &acme)
        .await;
    assert_eq!(view["data"]["status"], "released");
    for (kind, expected) in [("execution_started", 1), ("released", 1)] {
        let sql = format!("SELECT COUNT(*) FROM release_events WHERE kind = '{kind}'");
        assert_eq!(app.count(&sql).await, expected, "{kind} events");
    }
    assert_eq!(
        app.count(
            "SELECT COUNT(*) FROM release_requests \
             WHERE carrier_released_at IS NOT NULL AND carrier_released_at = released_at"
        )
        .await,
        1,
        "the confirmation commits with the release"
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE topic = 'request_released'")
            .await,
        1
    );
}

async fn with_the_local_carrier_a_lapsed_lease_is_taken_over_and_finished(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let (_, id) = app.approved_release(&acme, &riley).await;
    let request_id = uuid::Uuid::parse_str(&id).unwrap();
    // A worker took a lease that has already run out, and died.
    let begun = app
        .store
        .begin_release(request_id, Duration::ZERO)
        .await
        .unwrap();
    assert!(matches!(begun, releasedesk_store::Begin::Execute(_)));
    assert_eq!(request_status(&app, &acme, &id).await, "releasing");

    let (worker, mail) = app.worker(Arc::new(releasedesk_worker::carrier::LocalCarrier));
    worker.drain().await;

    assert_eq!(request_status(&app, &acme, &id).await, "released");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events WHERE kind = 'execution_started'")
            .await,
        2,
        "two attempts on the timeline"
    );
    let released = mail
        .sent()
        .iter()
        .filter(|m| m.to == acme.email && m.subject.to_lowercase().contains("released"))
        .count();
    assert_eq!(released, 1);
}

async fn a_batch_of_emails_larger_than_one_flush_is_sent_once_and_all_marked(app: TestApp) {
    let acme = app.customer().await;
    // 25 filings queue 50 emails: more than one flush of marks in one batch.
    for _ in 0..25 {
        let number = app.number(&acme).await;
        app.file_request(&acme, number).await;
    }
    let (worker, mail) = app.worker(Arc::new(releasedesk_worker::carrier::LocalCarrier));

    let round = worker.round().await;

    assert_eq!(round.emails, 50);
    let sent = mail.sent();
    assert_eq!(sent.len(), 50);
    let distinct: std::collections::BTreeSet<_> =
        sent.iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(distinct.len(), 50, "each email once");
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND sent_at IS NOT NULL")
            .await,
        50
    );
    assert!(worker.round().await.is_idle(), "nothing left to send");
    assert_eq!(mail.sent().len(), 50);
}

/// A relay that takes its time per message (here 300 ms) does not make a batch
/// take that time per email: the dispatcher has several sends in flight, and
/// still sends each once and marks each sent.
async fn a_dispatcher_keeps_several_smtp_sends_in_flight(app: TestApp) {
    use releasedesk_tests::smtp::SmtpServer;
    let Some(smtp) = SmtpServer::start_slow(Duration::from_millis(300)) else {
        return;
    };
    let acme = app.customer().await;
    for _ in 0..4 {
        let number = app.number(&acme).await;
        app.file_request(&acme, number).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let mailer = releasedesk_worker::mail::Mailer::from_settings(
        Some(&smtp.url()),
        dir.path(),
        "ReleaseDesk <no-reply@localhost>",
    )
    .unwrap();
    let worker =
        app.worker_with_mailer(Arc::new(releasedesk_worker::carrier::LocalCarrier), mailer);

    let round = worker.round().await;

    assert_eq!(round.emails, 8);
    let deliveries = smtp.deliveries();
    assert_eq!(deliveries.len(), 8, "each email once");
    assert!(
        smtp.most_at_once() >= 2,
        "sends overlap: at most {} message(s) were waiting for a reply at once",
        smtp.most_at_once()
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND sent_at IS NOT NULL")
            .await,
        8
    );
}

/// Releases that queue while the database is busy are carried out in one
/// transaction, each number leaving its own account, and each release still
/// gets the answer it would have got alone: one given twice, one already
/// released, one another worker holds and one that does not exist change
/// nothing for the others.
async fn with_the_local_carrier_releases_that_wait_together_commit_together_each_with_its_own_answer(
    app: TestApp,
) {
    use releasedesk_domain::DomainError;
    use releasedesk_store::{Begin, RELEASE_BATCH_METRIC, StoreError};

    use crate::operations::Committed;
    let acme = app.customer().await;
    let globex = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let mut approved = Vec::new();
    for owner in [
        &acme, &globex, &acme, &globex, &acme, &globex, &acme, &globex,
    ] {
        let (number, id) = app.approved_release(owner, &riley).await;
        app.store.add_sms(number, 2).await.unwrap();
        approved.push((owner, number, uuid::Uuid::parse_str(&id).unwrap()));
    }
    let (_, done) = app.approved_release(&acme, &riley).await;
    let done = uuid::Uuid::parse_str(&done).unwrap();
    assert!(matches!(
        app.store.release_at_once(done).await.unwrap(),
        Begin::Execute(_)
    ));
    let (_, leased) = app.approved_release(&globex, &riley).await;
    let leased = uuid::Uuid::parse_str(&leased).unwrap();
    assert!(matches!(
        app.store
            .begin_release(leased, Duration::from_secs(600))
            .await
            .unwrap(),
        Begin::Execute(_)
    ));
    let unknown = uuid::Uuid::now_v7();
    let before = Committed::now(&app, RELEASE_BATCH_METRIC).await;

    let hold = app.hold_writes_to("release_requests").await;
    let mut targets: Vec<uuid::Uuid> = approved.iter().map(|(_, _, id)| *id).collect();
    targets.extend([approved[0].2, done, leased, unknown]);
    let burst = futures::future::join_all(targets.iter().map(|id| app.store.release_at_once(*id)));
    let release = async {
        // Long enough for every release to reach the writer's queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.release().await;
    };
    let (answers, ()) = tokio::join!(burst, release);

    let (ours, others) = answers.split_at(approved.len());
    for (answer, (_, number, id)) in ours.iter().zip(&approved) {
        match answer {
            Ok(Begin::Execute(work)) => {
                assert_eq!((work.request_id, work.phone_number_id), (*id, *number));
                assert!(work.carrier_done, "{work:?}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(
        matches!(
            others,
            [
                Ok(Begin::Finished),
                Ok(Begin::Finished),
                Ok(Begin::Busy),
                Err(StoreError::Domain(DomainError::NotFound)),
            ]
        ),
        "{others:?}"
    );
    before.assert_since(
        Committed::now(&app, RELEASE_BATCH_METRIC).await,
        targets.len(),
        3.0,
    );

    // Each number left its own account, which still sees it as released; the
    // other account does not see it at all.
    for (owner, number, id) in &approved {
        assert_eq!(
            request_status(&app, owner, &id.to_string()).await,
            "released"
        );
        let path = format!("/api/v1/phone-numbers/{number}");
        let (status, view) = app.get(&path, owner).await;
        assert_eq!(status, StatusCode::OK, "{view}");
        assert_eq!(view["data"]["status"], "released", "{view}");
        let stranger = if std::ptr::eq(*owner, &acme) {
            &globex
        } else {
            &acme
        };
        assert_eq!(app.get(&path, stranger).await.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM sms_messages").await, 0);
    for (kind, expected) in [("execution_started", 10), ("released", 9)] {
        let sql = format!("SELECT COUNT(*) FROM release_events WHERE kind = '{kind}'");
        assert_eq!(app.count(&sql).await, expected, "{kind} events");
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE topic = 'request_released'")
            .await,
        9,
        "one email per release"
    );
    for owner in [&acme, &globex] {
        let sql = format!(
            "SELECT COUNT(*) FROM outbox WHERE topic = 'request_released' AND recipient = '{}'",
            owner.email
        );
        let expected = approved
            .iter()
            .filter(|(o, _, _)| std::ptr::eq(*o, owner))
            .count()
            + usize::from(std::ptr::eq(owner, &acme));
        assert_eq!(
            app.count(&sql).await,
            expected as i64,
            "emails to {}",
            owner.email
        );
    }
}

/// A running worker sends the emails of a stream of filings (each its own
/// commit) together after its linger, not a round per commit; a job written
/// meanwhile ends the linger at once. Polls and the linger are set far beyond
/// the test's waits, so only the job can have woken the worker. (On
/// PostgreSQL the worker also looks once when its LISTEN is in place, for rows
/// committed before it: the filings start after that.)
async fn a_running_worker_lets_a_stream_of_filed_emails_gather_but_not_a_job(app: TestApp) {
    let acme = app.customer().await;
    let riley = app.reviewer("Riley").await;
    let mut config = app.worker_config();
    config.poll_interval = Duration::from_secs(600);
    config.email_linger = Duration::from_secs(600);
    let running = RunningWorker::start(&app, config).await;

    let mut filed = Vec::new();
    for _ in 0..10 {
        let number = app.number(&acme).await;
        filed.push(app.file_request(&acme, number).await);
    }
    let id = filed[0]["id"].as_str().unwrap();
    app.approve(&riley, id, None).await;

    releasedesk_tests::eventually("the release", Duration::from_secs(20), async || {
        (request_status(&app, &acme, id).await == "released").then_some(())
    })
    .await;
    const FILED: &str = "topic IN ('request_filed', 'staff_new_request')";
    releasedesk_tests::eventually("the filed emails", Duration::from_secs(20), async || {
        let unsent = app
            .count(&format!(
                "SELECT COUNT(*) FROM outbox WHERE {FILED} AND status <> 'sent'"
            ))
            .await;
        (unsent == 0).then_some(())
    })
    .await;
    // Each settlement stamps its batch with one `sent_at`.
    let batches = app
        .count(&format!(
            "SELECT COUNT(DISTINCT sent_at) FROM outbox WHERE {FILED}"
        ))
        .await;
    assert!(
        batches <= 2,
        "20 emails of 10 filings went out in {batches} batches (at most the first filing's alone, then the rest)"
    );
    running.stop().await;
}

/// A running worker sends the emails of a burst of filings once the filings
/// pause, not beside them: none goes out while filings keep coming (each
/// sooner after the last than the pause), all of them once they stop. The
/// linger alone would have sent the first filing's emails during the burst.
/// (A first filing goes alone: on PostgreSQL the worker's look for rows
/// committed before its LISTEN may come late and end one linger.)
async fn a_running_worker_sends_a_bursts_emails_once_its_filings_pause(app: TestApp) {
    let acme = app.customer().await;
    let mut numbers = Vec::new();
    for _ in 0..8 {
        numbers.push(app.number(&acme).await);
    }
    let mut config = app.worker_config();
    config.poll_interval = Duration::from_secs(600);
    config.requests_pause = Duration::from_secs(1);
    config.email_burst_wait = Duration::from_secs(600);
    let running = RunningWorker::start(&app, config).await;
    let (first, burst) = numbers.split_first().unwrap();
    app.file_request(&acme, *first).await;
    releasedesk_tests::eventually(
        "the first filing's emails",
        Duration::from_secs(20),
        async || (running.outbox.sent().len() == 2).then_some(()),
    )
    .await;

    for &number in burst {
        app.file_request(&acme, number).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        running.outbox.sent().len(),
        2,
        "emails went out while filings kept coming"
    );
    // An email is marked sent after it went out (settled in batches), so the
    // marks are waited for too; then nothing went out twice.
    releasedesk_tests::eventually(
        "the burst's emails, sent and marked",
        Duration::from_secs(20),
        async || {
            let marked = app
                .count("SELECT COUNT(*) FROM outbox WHERE status = 'sent'")
                .await;
            (marked == 16).then_some(())
        },
    )
    .await;
    assert_eq!(running.outbox.sent().len(), 16, "each sent once");
    running.stop().await;
}

/// A worker running in the app's process, its emails kept in memory.
struct RunningWorker {
    outbox: releasedesk_worker::mail::MemoryOutbox,
    stop: tokio::sync::watch::Sender<bool>,
    running: tokio::task::JoinHandle<()>,
}

impl RunningWorker {
    /// Starts it; on PostgreSQL returns once its LISTEN is in place (it looks
    /// once then, for rows committed before).
    async fn start(app: &TestApp, config: releasedesk_worker::WorkerConfig) -> Self {
        let (mailer, outbox) = releasedesk_worker::mail::Mailer::memory();
        let carrier = Arc::new(releasedesk_worker::carrier::LocalCarrier);
        let worker = releasedesk_worker::Worker::new(app.store.clone(), mailer, carrier, config);
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let running = tokio::spawn(worker.run(stopped));
        if app.store.backend() == releasedesk_store::Backend::Postgres {
            const LISTENING: &str = "SELECT COUNT(*) FROM pg_stat_activity \
                WHERE datname = current_database() AND query LIKE 'LISTEN %'";
            releasedesk_tests::eventually(
                "the worker's LISTEN",
                Duration::from_secs(20),
                async || (app.count(LISTENING).await > 0).then_some(()),
            )
            .await;
        }
        Self {
            outbox,
            stop,
            running,
        }
    }

    async fn stop(self) {
        self.stop.send(true).unwrap();
        self.running.await.unwrap();
    }
}

/// A worker on a store of its own over the app's database, as another process
/// would run it.
async fn worker_of_another_process(
    app: &TestApp,
) -> (
    releasedesk_worker::Worker,
    releasedesk_worker::mail::MemoryOutbox,
) {
    let store = releasedesk::open_store(&app.settings).await.unwrap();
    let (mailer, outbox) = releasedesk_worker::mail::Mailer::memory();
    let carrier = Arc::new(releasedesk_worker::carrier::LocalCarrier);
    let worker = releasedesk_worker::Worker::new(store, mailer, carrier, app.worker_config());
    (worker, outbox)
}

const FILED_EMAILS: &str = "topic IN ('request_filed', 'staff_new_request')";

/// Once this process runs a dispatcher, a filing's emails are written claimed
/// for it (`sending`, first attempt, under its lease) and handed to it: it sends
/// them without claiming, and no other process's dispatcher can take them.
async fn a_process_with_a_dispatcher_writes_its_emails_claimed_and_hands_them_over(app: TestApp) {
    let acme = app.customer().await;
    let lease = Duration::from_secs(60);
    app.store.adopt_new_emails(lease);
    let number = app.number(&acme).await;
    app.file_request(&acme, number).await;

    let claimed = app
        .count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE {FILED_EMAILS} AND status = 'sending' AND attempts = 1"
        ))
        .await;
    assert_eq!(claimed, 2, "both emails are written claimed");
    let (other_worker, elsewhere) = worker_of_another_process(&app).await;
    assert!(
        other_worker.drain().await.is_idle(),
        "another process's dispatcher finds them leased"
    );
    assert!(elsewhere.sent().is_empty());

    let (worker, mail) = app.worker(Arc::new(releasedesk_worker::carrier::LocalCarrier));
    assert_eq!(worker.drain().await.emails, 2, "handed over, not claimed");
    assert_eq!(mail.sent().len(), 2);
    let sent = app
        .count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE {FILED_EMAILS} AND status = 'sent' AND attempts = 1"
        ))
        .await;
    assert_eq!(sent, 2);
    assert!(app.store.take_adopted_emails(10).is_empty());
}

/// A process that wrote emails claimed and died before sending them leaves
/// rows under its lease; when it runs out another process claims and sends them.
async fn emails_claimed_by_a_process_that_died_go_out_from_another_after_the_lease(app: TestApp) {
    let acme = app.customer().await;
    // A lease that runs out at once: the process is as good as gone.
    app.store.adopt_new_emails(Duration::ZERO);
    let number = app.number(&acme).await;
    app.file_request(&acme, number).await;
    let claimed = app
        .count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE {FILED_EMAILS} AND status = 'sending'"
        ))
        .await;
    assert_eq!(claimed, 2);

    let (worker, mail) = worker_of_another_process(&app).await;
    assert_eq!(worker.drain().await.emails, 2);
    assert_eq!(mail.sent().len(), 2);
    let resent = app
        .count(&format!(
            "SELECT COUNT(*) FROM outbox WHERE {FILED_EMAILS} AND status = 'sent' AND attempts = 2"
        ))
        .await;
    assert_eq!(resent, 2, "sent on the second attempt");
}

/// On SQLite the queue keeps only the indexes on `status` that pay for
/// themselves (a job's status changes three times, each change moving its
/// entry in every such index): `queue::setup` drops apalis's wide ones, the
/// two look-ups by status we run still read an index, never every job, and
/// the purge, rewritten for its index, still takes just the finished jobs.
#[tokio::test]
async fn on_sqlite_the_queues_look_ups_by_status_read_partial_indexes() {
    use releasedesk_store::{Pool, SQLITE_PURGE};

    /// apalis's look-up of the jobs of dead workers (`reenqueue_orphaned`,
    /// run by every worker's heartbeat), as apalis-sqlite 1.0 writes it.
    const ORPHANED: &str = r#"SELECT Jobs.id FROM Jobs INNER JOIN Workers ON lock_by = Workers.id
        WHERE (status = "Running" OR status = "Queued")
        AND strftime('%s', 'now') - Workers.last_seen >= ?1 AND Workers.worker_type = ?2
        AND (?3 IS NULL OR Workers.id != ?3) AND (?4 IS NULL OR Workers.id = ?4)"#;

    let app = TestApp::sqlite().await;
    releasedesk_worker::queue::setup(app.store.pool(), app.settings.database.url.expose())
        .await
        .unwrap();
    let Pool::Sqlite(pool) = app.store.pool() else {
        unreachable!("a SQLite app");
    };
    let mut conn = pool.acquire().await.unwrap();
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'Jobs'",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    for dropped in [
        "LIdx",
        "idx_jobs_job_type_status_run_at",
        "idx_jobs_status_run_at",
    ] {
        assert!(
            !indexes.iter().any(|i| i == dropped),
            "{dropped} in {indexes:?}"
        );
    }
    // The purge still takes exactly the jobs finished before its cutoff.
    let hours_ago = |hours: i64| (chrono::Utc::now() - chrono::TimeDelta::hours(hours)).timestamp();
    for (id, status, done_at) in [
        ("done-old", "Done", Some(hours_ago(2))),
        ("killed-old", "Killed", Some(hours_ago(2))),
        ("done-new", "Done", Some(hours_ago(0))),
        ("failed-old", "Failed", Some(hours_ago(2))),
        ("running", "Running", None),
        ("pending", "Pending", None),
    ] {
        sqlx::query(
            "INSERT INTO Jobs (job, id, job_type, status, done_at) VALUES (x'00', ?, 'q', ?, ?)",
        )
        .bind(id)
        .bind(status)
        .bind(done_at)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let purged = app
        .store
        .purge_finished_jobs(Duration::from_secs(3600), 100)
        .await
        .unwrap();
    let left: Vec<String> = sqlx::query_scalar("SELECT id FROM Jobs ORDER BY id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        (purged, left),
        (
            2,
            ["done-new", "failed-old", "pending", "running"]
                .map(String::from)
                .to_vec()
        )
    );

    for (statement, index) in [
        (SQLITE_PURGE, "idx_jobs_completed_done_at"),
        (ORPHANED, "releasedesk_jobs_in_hand"),
    ] {
        let plan = app.store.plan_of_sql(statement).await.unwrap().join("\n");
        assert!(
            plan.contains(index) && !plan.contains("SCAN Jobs"),
            "{statement}:\n{plan}"
        );
    }
}

//! Email over a real SMTP server (`aiosmtpd`).

use releasedesk_tests::smtp::{SmtpServer, header};
use releasedesk_worker::mail::{MailContext, Mailer, TEMPLATES, render};
use serde_json::{Value, json};

const FROM: &str = "ReleaseDesk <no-reply@localhost>";

/// Every key any template needs; each template reads the ones it names.
fn payload(phone_number: &str) -> Value {
    json!({
        "request_id": "0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6a10",
        "phone_number_id": "0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6b20",
        "phone_number": phone_number,
        "account_name": "Acme & Co",
        "reason": "We are moving our support line to a toll-free number.",
        "early_termination_fee": "25.00",
        "currency": "USD",
        "requested_at": "2026-11-23T14:00:00Z",
        "note": "Thanks for the notice.",
        "released_at": "2026-11-23T15:04:05Z",
        "reclaimable_until": "2026-12-03T15:04:05Z",
        "available_after": "2026-12-23T15:04:05Z",
        "reclaimed_at": "2026-11-25T09:30:00Z",
        "failure_reason": "carrier refused: pending port-out order",
    })
}

fn context() -> MailContext {
    MailContext {
        public_url: "http://127.0.0.1:8080".to_owned(),
    }
}

/// Each template's number, recipient and message id in this test.
fn addressing(index: usize, template: &str) -> (String, String, String) {
    (
        format!("+1555010{index:04}"),
        format!("{template}@example.com"),
        format!("{template}-{index}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_template_arrives_exactly_once_over_smtp() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let outbox = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(Some(&server.url()), outbox.path(), FROM).unwrap();

    let mut subjects = Vec::new();
    for (index, template) in TEMPLATES.iter().enumerate() {
        let (number, to, message_id) = addressing(index, template);
        let email = render(template, &payload(&number), &context()).unwrap();
        mailer.send(&to, &email, &message_id).await.unwrap();
        subjects.push(email.subject);
    }

    let deliveries = server.deliveries();
    assert_eq!(deliveries.len(), TEMPLATES.len());
    for (index, template) in TEMPLATES.iter().enumerate() {
        let (number, to, message_id) = addressing(index, template);
        let expected_id = format!("<{message_id}@releasedesk>");
        let matching: Vec<_> = deliveries
            .iter()
            .filter(|d| header(&d.raw, "Message-ID").as_deref() == Some(expected_id.as_str()))
            .collect();
        assert_eq!(matching.len(), 1, "{template}: {expected_id}");
        let delivery = matching[0];
        assert_eq!(delivery.rcpt_to, vec![to.clone()], "{template}");
        assert_eq!(header(&delivery.raw, "To"), Some(to), "{template}");
        assert_eq!(header(&delivery.raw, "From").as_deref(), Some(FROM));
        let subject = header(&delivery.raw, "Subject").unwrap();
        assert!(subject.contains(&number), "{template}: {subject}");
        assert_eq!(subject, subjects[index], "{template}");
        assert!(
            header(&delivery.raw, "Content-Type")
                .unwrap()
                .starts_with("multipart/alternative"),
            "{template}"
        );
    }
    let files = std::fs::read_dir(outbox.path()).unwrap().count();
    assert_eq!(files, 0, "SMTP delivery writes no .eml files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_to_a_server_that_is_down_is_transient() {
    let Some(server) = SmtpServer::start() else {
        return;
    };
    let url = server.url();
    server.stop();
    let outbox = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(Some(&url), outbox.path(), FROM).unwrap();
    let email = render("request_filed", &payload("+15550100000"), &context()).unwrap();

    let error = mailer
        .send("owner@example.com", &email, "request_filed-down")
        .await
        .unwrap_err();

    assert!(error.is_transient(), "{error}");
}

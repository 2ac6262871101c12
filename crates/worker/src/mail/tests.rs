use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::*;

const NUMBER: &str = "+15551234567";

fn ctx() -> MailContext {
    MailContext {
        public_url: "https://releasedesk.example.com/".to_owned(),
    }
}

/// The payload each template is rendered with in its snapshot.
fn payload(template: &str) -> Value {
    let request_id = "0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6a10";
    let phone_number_id = "0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6b20";
    let account_name = "Acme & Co";
    match template {
        "request_filed" | "staff_new_request" => json!({
            "request_id": request_id,
            "phone_number": NUMBER,
            "account_name": account_name,
            "reason": "We are moving our support line to a toll-free number.",
            "early_termination_fee": "25.00",
            "currency": "USD",
            "requested_at": "2026-11-23T14:00:00Z",
        }),
        "request_approved" => json!({
            "request_id": request_id,
            "phone_number": NUMBER,
            "account_name": account_name,
            "note": "Approved. Thanks for unassigning the agents first.",
        }),
        "request_cancelled" => json!({
            "request_id": request_id,
            "phone_number": NUMBER,
            "account_name": account_name,
            "note": "This number still receives two-factor codes for your admin login.\nMove them first, then file again.",
        }),
        "request_released" => json!({
            "request_id": request_id,
            "phone_number": NUMBER,
            "phone_number_id": phone_number_id,
            "account_name": account_name,
            "released_at": "2026-11-23T15:04:05Z",
            "reclaimable_until": "2026-12-03T15:04:05Z",
            "available_after": "2026-12-23T15:04:05+00:00",
        }),
        "request_reclaimed" => json!({
            "phone_number": NUMBER,
            "phone_number_id": phone_number_id,
            "account_name": account_name,
            "reclaimed_at": "2026-11-25T09:30:00Z",
        }),
        "staff_release_failed" => json!({
            "request_id": request_id,
            "phone_number": NUMBER,
            "account_name": account_name,
            "failure_reason": "carrier refused: the number has a pending port-out order",
        }),
        other => panic!("no test payload for {other}"),
    }
}

fn rendered(template: &str) -> RenderedEmail {
    render(template, &payload(template), &ctx()).unwrap()
}

fn snapshot(template: &str) -> String {
    let email = rendered(template);
    format!(
        "Subject: {}\n\n----- text -----\n{}\n\n----- html -----\n{}\n",
        email.subject, email.text, email.html
    )
}

#[test]
fn request_filed_email() {
    insta::assert_snapshot!(snapshot("request_filed"));
}

#[test]
fn staff_new_request_email() {
    insta::assert_snapshot!(snapshot("staff_new_request"));
}

#[test]
fn request_approved_email() {
    insta::assert_snapshot!(snapshot("request_approved"));
}

#[test]
fn request_cancelled_email() {
    insta::assert_snapshot!(snapshot("request_cancelled"));
}

#[test]
fn request_released_email() {
    insta::assert_snapshot!(snapshot("request_released"));
}

#[test]
fn request_reclaimed_email() {
    insta::assert_snapshot!(snapshot("request_reclaimed"));
}

#[test]
fn staff_release_failed_email() {
    insta::assert_snapshot!(snapshot("staff_release_failed"));
}

#[test]
fn every_subject_names_the_phone_number() {
    for template in TEMPLATES {
        let email = rendered(template);
        assert!(
            email.subject.contains(NUMBER),
            "{template}: {}",
            email.subject
        );
        assert!(!email.subject.contains('\n'), "{template}");
        assert!(email.text.contains(NUMBER), "{template}");
        assert!(email.html.contains(NUMBER), "{template}");
    }
}

#[test]
fn unknown_template_is_an_error() {
    let error = render("request_misfiled", &json!({}), &ctx()).unwrap_err();
    assert!(matches!(error, MailError::UnknownTemplate(ref name) if name == "request_misfiled"));
    assert!(!error.is_transient());
}

#[test]
fn a_missing_payload_key_is_an_error_that_names_it() {
    for template in TEMPLATES {
        let Value::Object(full) = payload(template) else {
            unreachable!()
        };
        for key in full.keys() {
            let mut partial = full.clone();
            partial.remove(key);
            let error = render(template, &Value::Object(partial), &ctx()).unwrap_err();
            let MailError::Render(message) = &error else {
                panic!("{template} without {key}: {error:?}");
            };
            assert!(
                message.contains(key.as_str()),
                "{template} without {key}: {message}"
            );
        }
    }
}

#[test]
fn a_payload_that_is_not_an_object_is_an_error() {
    let error = render("request_filed", &json!(["+15551234567"]), &ctx()).unwrap_err();
    assert!(matches!(error, MailError::Render(_)), "{error:?}");
}

#[test]
fn a_malformed_time_is_an_error() {
    let mut payload = payload("request_released");
    payload["released_at"] = json!("yesterday");
    let error = render("request_released", &payload, &ctx()).unwrap_err();
    assert!(
        matches!(error, MailError::Render(ref m) if m.contains("RFC 3339")),
        "{error:?}"
    );
}

#[test]
fn html_escapes_the_note_and_text_keeps_it() {
    let mut payload = payload("request_cancelled");
    payload["note"] = json!("<script>alert('x')</script> & more");
    let email = render("request_cancelled", &payload, &ctx()).unwrap();
    assert!(email.text.contains("<script>alert('x')</script> & more"));
    assert!(!email.html.contains("<script>"));
    assert!(email.html.contains("&lt;script&gt;"));
    assert!(email.html.contains("&amp; more"));
}

#[test]
fn an_approval_without_a_note_says_nothing_about_one() {
    let mut payload = payload("request_approved");
    payload["note"] = Value::Null;
    let email = render("request_approved", &payload, &ctx()).unwrap();
    assert!(!email.text.contains("Note from"), "{}", email.text);
    assert!(!email.html.contains("Note from"));
    assert!(rendered("request_approved").text.contains("Note from"));
}

#[test]
fn a_free_release_shows_no_fee() {
    let mut payload = payload("request_filed");
    payload["early_termination_fee"] = json!("0.00");
    let email = render("request_filed", &payload, &ctx()).unwrap();
    assert!(
        email.text.contains("Early termination fee: none\n"),
        "{}",
        email.text
    );
}

#[test]
fn the_staff_email_links_to_the_request_page() {
    let email = render(
        "staff_new_request",
        &payload("staff_new_request"),
        &MailContext {
            public_url: "http://127.0.0.1:8080".to_owned(),
        },
    )
    .unwrap();
    let link = "http://127.0.0.1:8080/reviewer/requests/0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6a10";
    assert!(email.text.contains(link));
    assert!(email.html.contains(&format!("href=\"{link}\"")));
}

#[tokio::test]
async fn the_memory_backend_records_what_was_sent() {
    let (mailer, outbox) = Mailer::memory();
    let email = rendered("request_approved");
    mailer
        .send("owner@example.com", &email, "approved-1")
        .await
        .unwrap();
    assert_eq!(
        outbox.sent(),
        vec![SentEmail {
            to: "owner@example.com".to_owned(),
            subject: email.subject.clone(),
            text: email.text.clone(),
            html: email.html.clone(),
            message_id: "<approved-1@releasedesk>".to_owned(),
        }]
    );
}

#[tokio::test]
async fn an_invalid_recipient_is_permanent() {
    let (mailer, outbox) = Mailer::memory();
    let error = mailer
        .send("not an address", &rendered("request_filed"), "filed-1")
        .await
        .unwrap_err();
    assert!(matches!(error, MailError::Permanent(_)), "{error:?}");
    assert!(outbox.sent().is_empty());
}

/// The header fields of a raw message, unfolded, by lower-case name.
fn headers(raw: &str) -> BTreeMap<String, String> {
    let head = raw.split("\r\n\r\n").next().unwrap();
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            fields.last_mut().unwrap().1.push_str(line);
        } else {
            let (name, value) = line.split_once(':').unwrap();
            fields.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    fields.into_iter().collect()
}

#[tokio::test]
async fn the_files_backend_writes_one_eml_per_message_id() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("var/mail");
    let mailer = Mailer::from_settings(None, &outbox, "ReleaseDesk <no-reply@localhost>").unwrap();
    let email = rendered("request_released");

    mailer
        .send("owner@example.com", &email, "released/1")
        .await
        .unwrap();
    // A retry of the same message replaces the file.
    mailer
        .send("owner@example.com", &email, "released/1")
        .await
        .unwrap();

    let files: Vec<_> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(files, vec!["released_1.eml".to_owned()]);
    let raw = std::fs::read_to_string(outbox.join("released_1.eml")).unwrap();
    let headers = headers(&raw);
    assert_eq!(headers["subject"], format!("{NUMBER} has been released"));
    assert_eq!(headers["to"], "owner@example.com");
    assert_eq!(headers["from"], "ReleaseDesk <no-reply@localhost>");
    assert_eq!(headers["message-id"], "<released_1@releasedesk>");
    assert!(headers["content-type"].starts_with("multipart/alternative"));
    assert!(raw.contains("Content-Type: text/plain; charset=utf-8"));
    assert!(raw.contains("Content-Type: text/html; charset=utf-8"));
}

#[tokio::test]
async fn a_batch_of_files_has_an_outcome_per_message_and_one_failure_spoils_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(None, dir.path(), "no-reply@localhost").unwrap();
    // A directory where the second file belongs: that rename fails.
    std::fs::create_dir(dir.path().join("filed-2.eml")).unwrap();
    let email = rendered("request_filed");
    let batch = ["filed-1", "filed-2", "filed-3"]
        .into_iter()
        .map(|id| mailer.prepare("owner@example.com", &email, id).unwrap())
        .collect();

    let outcomes = mailer.deliver(batch).await;

    assert_eq!(outcomes.len(), 3);
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(
        matches!(&outcomes[1], Err(error) if error.is_transient()),
        "{outcomes:?}"
    );
    for id in ["filed-1", "filed-3"] {
        let raw = std::fs::read_to_string(dir.path().join(format!("{id}.eml"))).unwrap();
        assert_eq!(headers(&raw)["message-id"], format!("<{id}@releasedesk>"));
    }
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["filed-1.eml", "filed-2.eml", "filed-3.eml"],
        "no temporary file left"
    );
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("smtp://127.0.0.1:{port}");
    let mailer = Mailer::from_settings(Some(&url), dir.path(), "no-reply@localhost").unwrap();
    let error = mailer
        .send("owner@example.com", &rendered("request_filed"), "filed-1")
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
}

#[tokio::test]
async fn debug_output_hides_the_smtp_password() {
    let dir = tempfile::tempdir().unwrap();
    let mailer = Mailer::from_settings(
        Some("smtp://mailer:hunter2-secret@127.0.0.1:2525"),
        dir.path(),
        "no-reply@localhost",
    )
    .unwrap();
    let debug = format!("{mailer:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("Smtp"), "{debug}");
}

#[test]
fn an_smtp_url_with_an_unknown_scheme_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let error = Mailer::from_settings(
        Some("imap://user:pw@host"),
        dir.path(),
        "no-reply@localhost",
    )
    .unwrap_err();
    assert!(
        matches!(error, MailError::Config(ref m) if !m.contains("pw@")),
        "{error:?}"
    );
}

#[test]
fn a_rendered_email_debugs_without_its_body() {
    let debug = format!("{:?}", rendered("request_cancelled"));
    assert!(!debug.contains("two-factor"), "{debug}");
}

/// The headers and body of the part of `raw` whose Content-Type is `content_type`.
fn part<'a>(raw: &'a str, content_type: &str) -> (&'a str, &'a str) {
    let start = raw
        .find(&format!("Content-Type: {content_type}"))
        .unwrap_or_else(|| panic!("no {content_type} part in {raw}"));
    let (head, rest) = raw[start..].split_once("\r\n\r\n").unwrap();
    let body = rest.split("\r\n--").next().unwrap();
    (head, body)
}

#[test]
fn the_html_part_is_base64_of_the_rendered_html_and_the_text_part_stays_readable() {
    use base64::Engine as _;

    let mut payload = payload("request_filed");
    payload["reason"] = json!("Déménagement: the line moves to our new office in Zürich.");
    let email = render("request_filed", &payload, &ctx()).unwrap();
    let (mailer, _) = Mailer::memory();
    let raw = mailer
        .message("owner@example.com", &email, "filed/1")
        .unwrap()
        .formatted();
    let raw = String::from_utf8(raw).unwrap();

    let (head, body) = part(&raw, "text/html; charset=utf-8");
    assert!(head.contains("Content-Transfer-Encoding: base64"), "{head}");
    assert!(body.lines().all(|line| line.len() <= 76), "{body}");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(body.replace("\r\n", ""))
        .unwrap();
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        email.html.replace('\n', "\r\n")
    );

    let (head, body) = part(&raw, "text/plain; charset=utf-8");
    assert!(
        head.contains("Content-Transfer-Encoding: quoted-printable"),
        "{head}"
    );
    assert!(body.contains(NUMBER), "{body}");
}

/// The envelope (SMTP's MAIL FROM and RCPT TO) is set from the addresses the
/// message is built with, not parsed back from its headers.
#[test]
fn a_message_is_addressed_from_the_sender_to_the_recipient_alone() {
    let email = render("request_filed", &payload("request_filed"), &ctx()).unwrap();
    let (mailer, _) = Mailer::memory();
    let message = mailer
        .message("Owner <owner@example.com>", &email, "filed/1")
        .unwrap();
    let envelope = message.envelope();
    assert_eq!(
        envelope.from().map(ToString::to_string).as_deref(),
        Some("no-reply@localhost")
    );
    let to: Vec<String> = envelope.to().iter().map(ToString::to_string).collect();
    assert_eq!(to, ["owner@example.com"]);
    let raw = String::from_utf8(message.formatted()).unwrap();
    assert!(raw.contains("To: Owner <owner@example.com>\r\n"), "{raw}");
}

//! What one filing's emails cost the process that sends them, in parts:
//! rendering the templates, building the MIME message (and its bytes), and
//! the whole send through the `.eml` files backend, which is what `serve` does
//! in the service-level benchmark (crates/bench). The send's time includes the
//! hand-off to the blocking pool and the file system under the temporary
//! directory, so it is a latency, not CPU.
//!
//! `cargo bench -p releasedesk-worker --bench email`

use criterion::{Criterion, criterion_group, criterion_main};
use releasedesk_worker::mail::{MailContext, Mailer, render};
use serde_json::{Value, json};

/// A filing's email payload, as the filing writer queues it.
fn payload() -> Value {
    json!({
        "request_id": "0190f5c2-7b1a-7cc3-9a51-3f2d8e4b6a10",
        "phone_number": "+15551234567",
        "account_name": "Acme & Co",
        "reason": "We are moving our support line to a toll-free number and no longer need this one.",
        "early_termination_fee": "25.00",
        "currency": "USD",
        "requested_at": "2026-11-23T14:00:00.123456Z",
    })
}

fn context() -> MailContext {
    MailContext {
        public_url: "http://127.0.0.1:8080".to_owned(),
    }
}

const FILING_EMAILS: [&str; 2] = ["request_filed", "staff_new_request"];

fn rendering(c: &mut Criterion) {
    let (payload, context) = (payload(), context());
    let mut group = c.benchmark_group("render");
    for template in FILING_EMAILS {
        group.bench_function(template, |b| {
            b.iter(|| render(template, &payload, &context).expect("renders"))
        });
    }
    group.finish();
}

fn sending(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a Tokio runtime");
    let email = render("request_filed", &payload(), &context()).expect("renders");
    let mut group = c.benchmark_group("send request_filed");
    let mailer = Mailer::memory().0;
    group.bench_function("build", |b| {
        b.iter(|| {
            mailer
                .message("owner@example.com", &email, "bench")
                .expect("built")
        })
    });
    group.bench_function("build and format", |b| {
        b.iter(|| {
            mailer
                .message("owner@example.com", &email, "bench")
                .expect("built")
                .formatted()
        })
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let files = Mailer::from_settings(None, dir.path(), "ReleaseDesk <no-reply@example.com>")
        .expect("a files mailer");
    group.bench_function("build and write (.eml files backend)", |b| {
        b.to_async(&runtime).iter(|| async {
            files
                .send("owner@example.com", &email, "bench")
                .await
                .expect("sent")
        })
    });
    group.finish();
}

criterion_group!(email, rendering, sending);
criterion_main!(email);

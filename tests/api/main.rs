//! Customer API tests: the real router on SQLite and on PostgreSQL.
#![expect(
    clippy::unwrap_used,
    reason = "a test fails loudly on an unexpected value"
)]

mod agents;
mod cli;
mod compose;
mod concurrency;
mod console;
mod e2e;
mod envelope;
mod idempotency;
mod mail;
mod numbers;
mod openapi;
mod operations;
mod outage;
mod paging;
mod requests;
mod reviewer;
mod tenancy;
mod worker;

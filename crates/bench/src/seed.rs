//! Test data. Accounts, tokens and staff go through the store's own operations;
//! numbers and history are bulk SQL (`INSERT … SELECT` over a generated series)
//! so that a million rows load in seconds. Generated rows have the shape the
//! store writes (same columns, statuses, timestamp encoding).

use std::{sync::Arc, time::Instant};

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt, stream};
use releasedesk_domain::{Money, Reason, ReleasePolicy};
use releasedesk_store::{Actor, Pool, StaffPrincipal, StaffRole, Store, StoreSettings};
use uuid::Uuid;

use crate::db::exec;

/// The reason on every request the benchmark files.
pub const REASON: &str = "Benchmark filing for a fresh number";

/// Accounts with tokens, one staff member, and a counter for fresh E.164s.
#[derive(Debug)]
pub struct Fixture {
    pub store: Store,
    pub pool: Pool,
    pub accounts: Vec<Uuid>,
    pub tokens: Vec<String>,
    pub staff: StaffPrincipal,
    pub staff_token: String,
    next_e164: u64,
}

/// A number and the index of its account's token.
#[derive(Debug, Clone, Copy)]
pub struct SeededNumber {
    pub id: Uuid,
    pub account: usize,
}

pub fn store_settings() -> Result<StoreSettings> {
    let fee: Money = "25.00"
        .parse()
        .map_err(|_| anyhow::anyhow!("fee does not parse"))?;
    let day = std::time::Duration::from_secs(86_400);
    Ok(StoreSettings {
        policy: ReleasePolicy {
            cooling_off: day * 30,
            reclaim_window: day * 10,
            minimum_term: day * 90,
            early_termination_fee: fee,
            currency: "USD".into(),
        },
        staff_email: "support@localhost".into(),
    })
}

impl Fixture {
    pub async fn create(pool: Pool, accounts: usize) -> Result<Self> {
        let store = Store::new(pool.clone(), store_settings()?);
        let mut ids = Vec::new();
        let mut tokens = Vec::new();
        for i in 0..accounts {
            let account = store
                .create_account(
                    &format!("Bench Account {i}"),
                    &format!("bench{i}@example.com"),
                )
                .await?;
            tokens.push(store.create_token(account.id).await?.token);
            ids.push(account.id);
        }
        let staff = store
            .create_staff(
                "reviewer@example.com",
                "Bench Reviewer",
                StaffRole::Reviewer,
            )
            .await?;
        let principal = store
            .authenticate_staff(&staff.token)
            .await?
            .context("the new staff token does not authenticate")?;
        Ok(Self {
            store,
            pool,
            accounts: ids,
            tokens,
            staff: principal,
            staff_token: staff.token,
            next_e164: 0,
        })
    }

    /// `count` active numbers spread over the accounts, interleaved so that
    /// consecutive numbers belong to different accounts.
    pub async fn numbers(&mut self, count: usize) -> Result<Vec<SeededNumber>> {
        let per_account = count.div_ceil(self.accounts.len().max(1));
        let mut blocks = Vec::new();
        for (index, account) in self.accounts.clone().into_iter().enumerate() {
            let first = self.next_e164;
            self.next_e164 += per_account as u64;
            insert_numbers(&self.pool, account, first, per_account, "active").await?;
            let ids = number_ids(&self.pool, first, per_account).await?;
            blocks.push(
                ids.into_iter()
                    .map(move |id| SeededNumber { id, account: index }),
            );
        }
        let mut blocks: Vec<_> = blocks.into_iter().map(|b| b.collect::<Vec<_>>()).collect();
        let mut out = Vec::with_capacity(count);
        for i in 0..per_account {
            for block in &mut blocks {
                if let Some(n) = block.get(i) {
                    out.push(*n);
                }
            }
        }
        out.truncate(count);
        Ok(out)
    }

    /// Files a request for each number through the store (8 at a time).
    pub async fn file(&self, numbers: &[SeededNumber]) -> Result<Vec<Uuid>> {
        let reason = Reason::parse(REASON).map_err(|e| anyhow::anyhow!("{e}"))?;
        let accounts = Arc::new(self.accounts.clone());
        stream::iter(numbers.iter().copied())
            .map(|n| {
                let store = self.store.clone();
                let reason = reason.clone();
                let accounts = accounts.clone();
                async move {
                    let account = accounts[n.account];
                    let filed = store
                        .file_request(account, n.id, reason, Actor::Customer(account))
                        .await?;
                    Ok::<_, anyhow::Error>(filed.id)
                }
            })
            .buffered(8)
            .try_collect()
            .await
    }

    /// Approves each request through the store (8 at a time).
    pub async fn approve(&self, requests: &[Uuid]) -> Result<()> {
        stream::iter(requests.iter().copied())
            .map(|id| {
                let store = self.store.clone();
                let staff = self.staff.clone();
                async move {
                    store.approve(&staff, id, None).await?;
                    Ok::<_, anyhow::Error>(())
                }
            })
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Marks the "request filed" emails as sent, as if a worker had sent them at
    /// filing time (the drain then measures releases, not a backlog of filings).
    pub async fn mark_filing_emails_sent(&self) -> Result<()> {
        exec(
            &self.pool,
            "UPDATE outbox SET status = 'sent', attempts = 1 \
             WHERE topic IN ('request_filed', 'staff_new_request') AND status = 'pending'",
        )
        .await?;
        Ok(())
    }

    /// `count` finished requests (history) plus `pending` open ones, for the
    /// reviewer queue; with `timeline`, also their events, sent outbox rows and
    /// finished queue jobs, as 100,000 real releases would have left behind.
    pub async fn history(&mut self, count: usize, pending: usize, timeline: bool) -> Result<()> {
        let started = Instant::now();
        let per_number = 10;
        let history_numbers = count.div_ceil(per_number).max(1);
        let first = self.next_e164;
        self.next_e164 += history_numbers as u64;
        insert_numbers(
            &self.pool,
            self.accounts[0],
            first,
            history_numbers,
            "released",
        )
        .await?;
        let pending_first = self.next_e164;
        self.next_e164 += pending as u64;
        if pending > 0 {
            insert_numbers(
                &self.pool,
                self.accounts[0],
                pending_first,
                pending,
                "active",
            )
            .await?;
        }
        let sqlite = matches!(self.pool, Pool::Sqlite(_));
        exec(&self.pool, "DROP TABLE IF EXISTS bench_seed_numbers").await?;
        exec(
            &self.pool,
            &format!(
                "CREATE TABLE bench_seed_numbers AS \
                 SELECT row_number() OVER (ORDER BY e164) - 1 AS k, id, e164, account_id \
                 FROM phone_numbers WHERE e164 >= '{}' AND e164 < '{}'",
                e164(first),
                e164(first + history_numbers as u64)
            ),
        )
        .await?;
        exec(
            &self.pool,
            "CREATE UNIQUE INDEX bench_seed_numbers_k ON bench_seed_numbers (k)",
        )
        .await?;
        let chunk = 100_000;
        let mut done = 0;
        while done < count {
            let n = chunk.min(count - done);
            let sql = if sqlite {
                sqlite_history(done, n, history_numbers, timeline)
            } else {
                postgres_history(done, n, history_numbers, timeline)
            };
            exec(&self.pool, &sql).await?;
            done += n;
            eprintln!(
                "    history: {done}/{count} requests ({:.0?})",
                started.elapsed()
            );
        }
        exec(&self.pool, "DROP TABLE bench_seed_numbers").await?;
        if pending > 0 {
            let sql = if sqlite {
                sqlite_pending(pending_first, pending)
            } else {
                postgres_pending(pending_first, pending)
            };
            exec(&self.pool, &sql).await?;
        }
        if timeline {
            for sql in timeline_sql(sqlite) {
                exec(&self.pool, &sql).await?;
            }
            eprintln!("    history: events and outbox ({:.0?})", started.elapsed());
        }
        if !sqlite {
            exec(&self.pool, "ANALYZE").await?;
        }
        eprintln!("    history loaded in {:.1?}", started.elapsed());
        Ok(())
    }
}

fn e164(n: u64) -> String {
    format!("+1555{n:07}")
}

async fn insert_numbers(
    pool: &Pool,
    account: Uuid,
    first: u64,
    count: usize,
    status: &str,
) -> Result<()> {
    if first + count as u64 > 9_999_999 {
        bail!("out of benchmark phone numbers");
    }
    let at: DateTime<Utc> = releasedesk_domain::time::now() - chrono::TimeDelta::days(365);
    let (first, count) = (i64::try_from(first)?, i64::try_from(count)?);
    match pool {
        Pool::Sqlite(p) => {
            sqlx::query(
                "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < ?1 - 1) \
                 INSERT INTO phone_numbers (id, e164, account_id, status, purchased_at, \
                   billing_cycle_started_at, monthly_price_minor, currency, created_at, updated_at) \
                 SELECT randomblob(16), printf('+1555%07d', ?2 + i), ?3, ?4, ?5, ?5, 115, 'USD', ?5, ?5 \
                 FROM g",
            )
            .bind(count)
            .bind(first)
            .bind(account)
            .bind(status)
            .bind(at)
            .execute(p)
            .await?;
        }
        Pool::Postgres(p) => {
            sqlx::query(
                "INSERT INTO phone_numbers (id, e164, account_id, status, purchased_at, \
                   billing_cycle_started_at, monthly_price_minor, currency, created_at, updated_at) \
                 SELECT gen_random_uuid(), '+1555' || lpad(($2::bigint + i)::text, 7, '0'), $3, $4, \
                   $5, $5, 115, 'USD', $5, $5 \
                 FROM generate_series(0, $1::bigint - 1) AS g(i)",
            )
            .bind(count)
            .bind(first)
            .bind(account)
            .bind(status)
            .bind(at)
            .execute(p)
            .await?;
        }
    }
    Ok(())
}

async fn number_ids(pool: &Pool, first: u64, count: usize) -> Result<Vec<Uuid>> {
    let (lo, hi) = (e164(first), e164(first + count as u64));
    let ids = match pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM phone_numbers WHERE e164 >= ? AND e164 < ? ORDER BY e164",
            )
            .bind(lo)
            .bind(hi)
            .fetch_all(p)
            .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar::<_, Uuid>(
                "SELECT id FROM phone_numbers WHERE e164 >= $1 AND e164 < $2 ORDER BY e164",
            )
            .bind(lo)
            .bind(hi)
            .fetch_all(p)
            .await?
        }
    };
    Ok(ids)
}

/// Seconds since the epoch a year ago: history starts there, one request every
/// few seconds.
fn history_start() -> i64 {
    Utc::now().timestamp() - 365 * 86_400
}

/// SQLite text timestamps exactly as sqlx writes them (RFC 3339, six fraction
/// digits that are never a whole millisecond, so none collapses to fewer digits).
fn sqlite_ts(seconds: &str, i: &str) -> String {
    format!(
        "strftime('%Y-%m-%dT%H:%M:%S', {seconds}, 'unixepoch') || '.' || \
         printf('%06d', 1000 * ({i} % 1000) + 1 + {i} % 997) || '+00:00'"
    )
}

fn status_expr(timeline: bool) -> &'static str {
    if timeline {
        "'released'"
    } else {
        "CASE WHEN i % 4 = 0 THEN 'cancelled' ELSE 'released' END"
    }
}

fn sqlite_history(offset: usize, n: usize, numbers: usize, timeline: bool) -> String {
    let start = history_start();
    let requested = sqlite_ts(&format!("{start} + i * 3"), "i");
    let decided = sqlite_ts(&format!("{start} + i * 3 + 600"), "i");
    let released = sqlite_ts(&format!("{start} + i * 3 + 660"), "i");
    let status = status_expr(timeline);
    format!(
        "WITH RECURSIVE g(i) AS (SELECT {offset} UNION ALL SELECT i + 1 FROM g WHERE i < {end}) \
         INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, \
           status, requested_at, requested_by, early_termination_fee_minor, currency, decided_at, \
           cancelled_by, released_at, version, updated_at, execution_attempts, carrier_released_at) \
         SELECT randomblob(16), n.account_id, n.id, n.e164, 'Bulk-loaded history', {status}, \
           {requested}, 'customer:' || lower(hex(n.account_id)), 0, 'USD', {decided}, \
           CASE WHEN {status} = 'cancelled' THEN 'customer' END, \
           CASE WHEN {status} = 'released' THEN {released} END, 3, {released}, \
           CASE WHEN {status} = 'released' THEN 1 ELSE 0 END, \
           CASE WHEN {status} = 'released' THEN {released} END \
         FROM g JOIN bench_seed_numbers n ON n.k = g.i % {numbers}",
        end = offset + n - 1,
    )
}

fn postgres_history(offset: usize, n: usize, numbers: usize, timeline: bool) -> String {
    let start = history_start();
    let ts = |extra: i64| {
        format!("to_timestamp({start} + i * 3 + {extra} + (1000 * (i % 1000) + 1 + i % 997) / 1e6)")
    };
    let (requested, decided, released) = (ts(0), ts(600), ts(660));
    let status = status_expr(timeline);
    format!(
        "INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, \
           status, requested_at, requested_by, early_termination_fee_minor, currency, decided_at, \
           cancelled_by, released_at, version, updated_at, execution_attempts, carrier_released_at) \
         SELECT gen_random_uuid(), n.account_id, n.id, n.e164, 'Bulk-loaded history', {status}, \
           {requested}, 'customer:' || n.account_id, 0, 'USD', {decided}, \
           CASE WHEN {status} = 'cancelled' THEN 'customer' END, \
           CASE WHEN {status} = 'released' THEN {released} END, 3, {released}, \
           CASE WHEN {status} = 'released' THEN 1 ELSE 0 END, \
           CASE WHEN {status} = 'released' THEN {released} END \
         FROM generate_series({offset}::bigint, {end}::bigint) AS g(i) \
         JOIN bench_seed_numbers n ON n.k = g.i % {numbers}",
        end = offset + n - 1,
    )
}

/// One pending request per number, filed over the last days (newest last).
fn sqlite_pending(first: u64, pending: usize) -> String {
    let start = Utc::now().timestamp() - i64::try_from(pending).unwrap_or(0) * 20;
    let requested = sqlite_ts(&format!("{start} + i * 20"), "i");
    format!(
        "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {last}) \
         INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, \
           status, requested_at, requested_by, early_termination_fee_minor, currency, version, \
           updated_at, execution_attempts) \
         SELECT randomblob(16), p.account_id, p.id, p.e164, 'Bulk-loaded pending request', \
           'pending', {requested}, 'customer:' || lower(hex(p.account_id)), 2500, 'USD', 1, \
           {requested}, 0 \
         FROM g JOIN phone_numbers p ON p.e164 = printf('+1555%07d', {first} + i)",
        last = pending - 1,
    )
}

fn postgres_pending(first: u64, pending: usize) -> String {
    let start = Utc::now().timestamp() - i64::try_from(pending).unwrap_or(0) * 20;
    let requested =
        format!("to_timestamp({start} + i * 20 + (1000 * (i % 1000) + 1 + i % 997) / 1e6)");
    format!(
        "INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, \
           status, requested_at, requested_by, early_termination_fee_minor, currency, version, \
           updated_at, execution_attempts) \
         SELECT gen_random_uuid(), p.account_id, p.id, p.e164, 'Bulk-loaded pending request', \
           'pending', {requested}, 'customer:' || p.account_id, 2500, 'USD', 1, {requested}, 0 \
         FROM generate_series(0, {last}) AS g(i) \
         JOIN phone_numbers p ON p.e164 = '+1555' || lpad(({first} + i)::text, 7, '0')",
        last = pending - 1,
    )
}

/// Four events, four sent emails and one dispatched job per released request.
fn timeline_sql(sqlite: bool) -> Vec<String> {
    let (new_id, id_text) = if sqlite {
        ("randomblob(16)", "lower(hex(r.id))")
    } else {
        ("gen_random_uuid()", "r.id::text")
    };
    let kinds = "SELECT 'requested' AS kind UNION ALL SELECT 'approved' \
                 UNION ALL SELECT 'execution_started' UNION ALL SELECT 'released'";
    let topics = "SELECT 'request_filed' AS topic, 'email' AS kind UNION ALL \
                  SELECT 'staff_new_request', 'email' UNION ALL \
                  SELECT 'request_approved', 'email' UNION ALL \
                  SELECT 'request_released', 'email' UNION ALL \
                  SELECT 'execute_release', 'job'";
    vec![
        format!(
            "INSERT INTO release_events (id, request_id, at, kind, actor, note) \
             SELECT {new_id}, r.id, r.requested_at, k.kind, 'system', NULL \
             FROM release_requests r CROSS JOIN ({kinds}) k \
             WHERE r.reason = 'Bulk-loaded history'"
        ),
        format!(
            "INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts, \
               next_attempt_at, last_error, created_at, sent_at) \
             SELECT {new_id}, t.kind, t.topic, \
               CASE WHEN t.kind = 'email' THEN 'bench@example.com' END, '{{}}', \
               {id_text} || ':' || t.topic, 'sent', 1, r.requested_at, NULL, r.requested_at, \
               r.released_at \
             FROM release_requests r CROSS JOIN ({topics}) t \
             WHERE r.reason = 'Bulk-loaded history'"
        ),
    ]
}

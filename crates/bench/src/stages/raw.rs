//! The raw limit for filing: one-row INSERTs into a table with the same unique
//! partial index as `release_requests_one_open_per_number`, at 1, 8 and 32
//! clients: `pgbench` on PostgreSQL, an equivalent insert loop on SQLite (same
//! pragmas as the application's pool).
//!
//! On PostgreSQL also the database's own limit for what a filing writes:
//! `pgbench` running a filing's statements in the migrated schema, one filing
//! per transaction as the one-row INSERT is one row per transaction, with no
//! application in between (see [`FILING_SCRIPT`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use releasedesk_store::Pool;

use crate::{
    Ctx,
    db::{Db, FreshDb, exec},
    report::{Report, Row},
};

const TABLE: &str = "CREATE TABLE raw_requests (id {uuid} PRIMARY KEY, \
    phone_number_id {uuid} NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, \
    requested_at {ts} NOT NULL); \
    CREATE UNIQUE INDEX raw_requests_one_open_per_number ON raw_requests (phone_number_id) \
    WHERE status IN ('pending', 'approved', 'releasing')";

/// Transactions per second per client count.
pub async fn run(ctx: &Ctx, db: Db, report: &mut Report) -> Result<Vec<(usize, f64)>> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure(ctx, &fresh, report).await;
    fresh.drop_database().await;
    result
}

async fn measure(ctx: &Ctx, fresh: &FreshDb, report: &mut Report) -> Result<Vec<(usize, f64)>> {
    let pool = fresh.pool(32).await?;
    let table = match fresh.db {
        Db::Sqlite => TABLE.replace("{uuid}", "BLOB").replace("{ts}", "TEXT"),
        Db::Postgres => TABLE
            .replace("{uuid}", "UUID")
            .replace("{ts}", "TIMESTAMPTZ"),
    };
    exec(&pool, &table).await?;
    let mut out = Vec::new();
    for &clients in &ctx.clients {
        let tps = match &pool {
            Pool::Postgres(_) => pgbench(ctx, fresh, clients).await?,
            Pool::Sqlite(p) => sqlite_loop(p, clients, ctx.plan.raw_seconds).await?,
        };
        let tool = match fresh.db {
            Db::Sqlite => "insert loop",
            Db::Postgres => "pgbench",
        };
        report.push(
            Row::new(
                fresh.db.label(),
                "raw limit",
                format!("{clients} clients: {tool} one-row INSERT"),
            )
            .value(tps, "tps"),
        );
        out.push((clients, tps));
    }
    pool.close().await;
    Ok(out)
}

async fn pgbench(ctx: &Ctx, fresh: &FreshDb, clients: usize) -> Result<f64> {
    let script = fresh.scratch("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO raw_requests VALUES (gen_random_uuid(), gen_random_uuid(), 'pending', \
         'Benchmark filing for a fresh number', now());\n",
    )?;
    run_pgbench(ctx, fresh, &script, clients).await
}

/// One filing's statements as `serve` sends them for a group of one, with its
/// ids drawn from a numbered list of active numbers (the first statement
/// stands in for the customer's token look-up): the candidate read, the
/// request, its event, both "filed" emails written claimed, the commit, and
/// the emails' "sent" mark. Email rendering and sending stay out: they are not
/// the database's work. (No `:` inside literals: pgbench would read a variable.)
const FILING_SCRIPT: &str = r"SELECT id AS number_id, gen_random_uuid() AS req, gen_random_uuid() AS ev, gen_random_uuid() AS e1, gen_random_uuid() AS e2 FROM bench_numbers WHERE n = (SELECT nextval('bench_seq'))
\gset
BEGIN;
SELECT p.account_id, p.e164, p.status, p.purchased_at, a.name, a.email, EXISTS (SELECT 1 FROM agent_numbers an JOIN agents g ON g.id = an.agent_id WHERE an.phone_number_id = p.id AND g.active) AS in_use, EXISTS (SELECT 1 FROM release_requests r WHERE r.phone_number_id = p.id AND r.status IN ('pending', 'approved', 'releasing')) AS open FROM phone_numbers p LEFT JOIN accounts a ON a.id = p.account_id WHERE p.id = :number_id
\gset
INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, status, requested_at, requested_by, filed_by_staff_id, early_termination_fee_minor, currency, claimed_by, claimed_at, decided_at, decided_by, decision_note, cancelled_by, released_at, failure_reason, version, updated_at, lease_until, execution_attempts, carrier_released_at) VALUES (:req, :account_id, :number_id, :e164, 'Benchmark filing for a fresh number', 'pending', now(), 'customer', NULL, 2500, 'USD', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, now(), NULL, 0, NULL);
INSERT INTO release_events (id, request_id, at, kind, actor, note) VALUES (:ev, :req, now(), 'requested', 'customer', NULL);
INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts, next_attempt_at, last_error, created_at, sent_at) VALUES (:e1, 'email', 'request_filed', :email, json_build_object('request_id', :req::text, 'phone_number', :e164::text, 'account_name', :name::text, 'reason', 'Benchmark filing for a fresh number', 'early_termination_fee', '25.00', 'currency', 'USD', 'requested_at', now()), :ev::text || '|request_filed|' || :email::text, 'sending', 1, now() + interval '60 seconds', NULL, now(), NULL), (:e2, 'email', 'staff_new_request', 'support@localhost', json_build_object('request_id', :req::text, 'phone_number', :e164::text, 'account_name', :name::text, 'reason', 'Benchmark filing for a fresh number', 'early_termination_fee', '25.00', 'currency', 'USD', 'requested_at', now()), :ev::text || '|staff_new_request|support@localhost', 'sending', 1, now() + interval '60 seconds', NULL, now(), NULL) ON CONFLICT (dedup_key) DO NOTHING RETURNING id;
COMMIT;
UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL WHERE id IN (:e1, :e2);
";

/// Filings per second of [`FILING_SCRIPT`] at `clients`, on a migrated
/// database of its own with enough active numbers for the run.
pub async fn filing_writes(ctx: &Ctx, clients: usize) -> Result<f64> {
    let fresh = FreshDb::create(Db::Postgres, &ctx.pg_url).await?;
    let result = measure_filing_writes(ctx, &fresh, clients).await;
    fresh.drop_database().await;
    result
}

async fn measure_filing_writes(ctx: &Ctx, fresh: &FreshDb, clients: usize) -> Result<f64> {
    let vars = crate::process::environment(fresh);
    crate::process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(4).await?;
    let mut fixture = crate::seed::Fixture::create(pool.clone(), 32).await?;
    // Far more than 2 cores file in the run: the script fails when they run out.
    let numbers = 20_000 * ctx.plan.raw_seconds as usize;
    fixture.numbers(numbers).await?;
    exec(
        &pool,
        "CREATE TABLE bench_numbers AS \
         SELECT row_number() OVER (ORDER BY id) AS n, id FROM phone_numbers",
    )
    .await?;
    exec(&pool, "CREATE UNIQUE INDEX ON bench_numbers (n)").await?;
    exec(&pool, "CREATE SEQUENCE bench_seq").await?;
    exec(&pool, "VACUUM ANALYZE").await?;
    pool.close().await;
    let script = fresh.scratch("filing.sql");
    std::fs::write(&script, FILING_SCRIPT)?;
    run_pgbench(ctx, fresh, &script, clients).await
}

async fn run_pgbench(
    ctx: &Ctx,
    fresh: &FreshDb,
    script: &std::path::Path,
    clients: usize,
) -> Result<f64> {
    let name = fresh.pg_name().context("no PostgreSQL database")?;
    let url = crate::db::replace_database(&ctx.pg_url, name);
    let output = tokio::process::Command::new(&ctx.pgbench)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.to_string(),
            "-T",
            &ctx.plan.raw_seconds.to_string(),
        ])
        .arg(&url)
        .output()
        .await
        .with_context(|| format!("run {}", ctx.pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&stdout).with_context(|| format!("no tps in pgbench output:\n{stdout}"))
}

fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

async fn sqlite_loop(pool: &sqlx::SqlitePool, clients: usize, seconds: u32) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("INSERT INTO raw_requests VALUES (?, ?, 'pending', ?, ?)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(uuid::Uuid::now_v7())
                    .bind("Benchmark filing for a fresh number")
                    .bind(releasedesk_domain::time::now())
                    .execute(&pool)
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.context("an insert task panicked")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tps_is_read_from_pgbench_output() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 1.234 ms\n\
                   initial connection time = 3.1 ms\n\
                   tps = 6480.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(6480.123456));
    }
}

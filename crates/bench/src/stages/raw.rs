//! The raw limit for filing: one-row INSERTs into a table with the same unique
//! partial index as `release_requests_one_open_per_number`, at 1, 8 and 32
//! clients: `pgbench` on PostgreSQL, an equivalent insert loop on SQLite (same
//! pragmas as the application's pool).

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
    stages::filing::LEVELS,
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
    for clients in LEVELS {
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
    let name = fresh.pg_name().context("no PostgreSQL database")?;
    let url = crate::db::replace_database(&ctx.pg_url, name);
    let output = tokio::process::Command::new(&ctx.pgbench)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(&script)
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

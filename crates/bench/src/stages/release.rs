//! Stage 2, ours: approve → released latency in `serve` (one approval at a time,
//! latency from the database's own timestamps), and the drain of approved
//! releases by 1 or 2 `worker` processes.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use apalis::prelude::TaskSink;
use chrono::{DateTime, Utc};
use releasedesk_store::Pool;
use releasedesk_worker::queue::{ExecuteRelease, QueueConfig, ReleaseQueue};
use uuid::Uuid;

use crate::{
    Ctx, cpu,
    db::{Db, FreshDb, poll_scalar},
    load::{self, Latencies},
    process::{self, Role, Service},
    report::{Report, Row},
    seed::{Fixture, REASON},
    stages::reference::{finish_jobs, push_chunks},
};

/// The queue name `config/default.toml` gives execute_release jobs.
const OUR_QUEUE: &str = "releasedesk.execute_release";

pub async fn latency(ctx: &Ctx, db: Db) -> Result<Latencies> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure_latency(ctx, &fresh).await;
    fresh.drop_database().await;
    result
}

async fn measure_latency(ctx: &Ctx, fresh: &FreshDb) -> Result<Latencies> {
    let vars = process::environment(fresh);
    process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(4).await?;
    let mut fixture = Fixture::create(pool.clone(), 4).await?;
    let numbers = fixture.numbers(ctx.plan.approvals).await?;
    let requests = fixture.file(&numbers).await?;
    fixture.mark_filing_emails_sent().await?;
    let serve = Service::start(&ctx.binary, Role::Serve, &vars, fresh.path()).await?;
    let http = load::client(2)?;
    for id in &requests {
        let url = serve.url(&format!("/reviewer/api/v1/release-requests/{id}/approve"));
        let response = http
            .post(&url)
            .bearer_auth(&fixture.staff_token)
            .json(&serde_json::json!({}))
            .send()
            .await?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            bail!("approve answered {status}: {}", response.text().await?);
        }
        wait_released(&pool, *id, Duration::from_secs(30)).await?;
    }
    let mut latencies = load::histogram()?;
    for (decided, released) in decided_and_released(&pool, &requests).await? {
        let micros = (released - decided).num_microseconds().unwrap_or(i64::MAX);
        latencies.saturating_record(u64::try_from(micros.max(1)).unwrap_or(u64::MAX));
    }
    let errors = serve.logged_errors();
    serve.stop().await?;
    pool.close().await;
    if !errors.is_empty() {
        bail!("serve logged errors:\n{}", errors.join("\n"));
    }
    Ok(latencies)
}

async fn wait_released(pool: &Pool, id: Uuid, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    loop {
        let status = match pool {
            Pool::Sqlite(p) => {
                sqlx::query_scalar::<_, String>("SELECT status FROM release_requests WHERE id = ?")
                    .bind(id)
                    .fetch_one(p)
                    .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_scalar::<_, String>("SELECT status FROM release_requests WHERE id = $1")
                    .bind(id)
                    .fetch_one(p)
                    .await?
            }
        };
        if status == "released" {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("request {id} is still {status} after {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn decided_and_released(
    pool: &Pool,
    ids: &[Uuid],
) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>> {
    let mut out = Vec::new();
    for id in ids {
        let row = match pool {
            Pool::Sqlite(p) => {
                sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>)>(
                    "SELECT decided_at, released_at FROM release_requests WHERE id = ?",
                )
                .bind(id)
                .fetch_one(p)
                .await?
            }
            Pool::Postgres(p) => {
                sqlx::query_as::<_, (DateTime<Utc>, DateTime<Utc>)>(
                    "SELECT decided_at, released_at FROM release_requests WHERE id = $1",
                )
                .bind(id)
                .fetch_one(p)
                .await?
            }
        };
        out.push(row);
    }
    Ok(out)
}

/// Releases per second: `plan.drain` requests approved while no worker runs,
/// then `workers` worker processes started; from the first worker's readiness to
/// the last `released_at`. With `history`, that many finished releases (events,
/// sent outbox rows, done queue jobs) are in the tables first.
pub async fn drain(
    ctx: &Ctx,
    db: Db,
    workers: usize,
    history: usize,
    report: &mut Report,
) -> Result<f64> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure_drain(ctx, &fresh, workers, history).await;
    fresh.drop_database().await;
    let drained = result?;
    let rows = cpu::Rows {
        servers: Some("worker processes"),
        ..cpu::Rows::drain(db, "", workers, history, "release")
    };
    rows.push(report, &drained.usage);
    report.push(
        Row::new(
            rows.label,
            rows.stage,
            format!("{}: start-up, slowest worker", rows.prefix),
        )
        .value(drained.start_up.as_secs_f64() * 1e3, "ms"),
    );
    Ok(drained.rate)
}

/// A drain's rate and CPU, both from the first worker's readiness.
struct Drained {
    rate: f64,
    usage: cpu::Usage,
    /// The slowest worker's start (spawn to ready): connecting, checking the
    /// migrations, the queue's setup. Not part of the rate.
    start_up: Duration,
}

async fn measure_drain(
    ctx: &Ctx,
    fresh: &FreshDb,
    workers: usize,
    history: usize,
) -> Result<Drained> {
    let n = ctx.plan.drain;
    let label = fresh.db.label();
    let vars = process::environment(fresh);
    process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(8).await?;
    let mut fixture = Fixture::create(pool.clone(), 8).await?;
    if history > 0 {
        eprintln!("  {label}: loading {history} finished releases");
        fixture.history(history, 0, true).await?;
        queue_history(&pool, history).await?;
    }
    eprintln!("  {label}: filing and approving {n} requests (no worker running)");
    let numbers = fixture.numbers(n).await?;
    let requests = fixture.file(&numbers).await?;
    fixture.approve(&requests).await?;
    fixture.mark_filing_emails_sent().await?;
    crate::db::settle(&pool).await?;

    let mut running = Vec::new();
    let starts =
        (0..workers).map(|_| Service::start(&ctx.binary, Role::Worker, &vars, fresh.path()));
    for service in futures::future::join_all(starts).await {
        running.push(service?);
    }
    // The rate runs from the first worker's readiness: a worker's start-up
    // (apalis's setup runs `PRAGMA optimize` on SQLite, which analyses the
    // grown tables) is reported beside it, not spread over the releases.
    let started = running
        .iter()
        .map(|s| s.ready_at)
        .min()
        .context("no worker started")?;
    let start_up = running.iter().map(|s| s.start_up).max().unwrap_or_default();
    let pids: Vec<u32> = running.iter().map(|s| s.pid).collect();
    let before = cpu::sample(&pids);
    // Counts what is still to go, not what is done: the status index then reads
    // only the shrinking backlog, where a count of `released` rows would read the
    // whole history every 50 ms beside the worker being measured.
    let remaining_sql = format!(
        "SELECT count(*) FROM release_requests \
         WHERE status IN ('approved', 'releasing') AND reason = '{REASON}'"
    );
    let within = Duration::from_secs(120 + n as u64 / 20);
    poll_scalar(
        &pool,
        &remaining_sql,
        Duration::from_millis(50),
        within,
        |remaining| remaining == 0,
    )
    .await?;
    let released = crate::db::scalar(
        &pool,
        &format!(
            "SELECT count(*) FROM release_requests WHERE status = 'released' AND reason = '{REASON}'"
        ),
    )
    .await?;
    if released != i64::try_from(n)? {
        bail!("{released} of {n} approved requests were released");
    }
    let usage = before.until(&cpu::sample(&pids), n);
    let last = last_released(&pool).await?;
    let mut errors = Vec::new();
    for service in running {
        errors.extend(service.logged_errors());
        service.stop().await?;
    }
    pool.close().await;
    if !errors.is_empty() {
        bail!("worker logged errors:\n{}", errors.join("\n"));
    }
    let seconds = (last - started).num_microseconds().context("no duration")? as f64 / 1e6;
    Ok(Drained {
        rate: n as f64 / seconds,
        usage,
        start_up,
    })
}

async fn last_released(pool: &Pool) -> Result<DateTime<Utc>> {
    let sql = format!(
        "SELECT released_at FROM release_requests WHERE reason = '{REASON}' \
         ORDER BY released_at DESC LIMIT 1"
    );
    let at = match pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar::<_, DateTime<Utc>>(crate::db::safe(&sql))
                .fetch_one(p)
                .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar::<_, DateTime<Utc>>(crate::db::safe(&sql))
                .fetch_one(p)
                .await?
        }
    };
    Ok(at)
}

/// `count` finished execute_release jobs in our queue's tables.
async fn queue_history(pool: &Pool, count: usize) -> Result<()> {
    let config = QueueConfig {
        batch_size: 100,
        poll_interval: Duration::from_millis(200),
        heartbeat_interval: Duration::from_secs(5),
        missed_heartbeats: 3,
        queue: OUR_QUEUE.into(),
    };
    let jobs: Vec<ExecuteRelease> = (0..count)
        .map(|_| ExecuteRelease {
            request_id: Uuid::now_v7(),
        })
        .collect();
    match ReleaseQueue::new(pool, &config) {
        ReleaseQueue::Sqlite(mut storage) => push_chunks!(storage, jobs),
        ReleaseQueue::Postgres(mut storage) => push_chunks!(storage, jobs),
    }
    finish_jobs(pool, OUR_QUEUE).await?;
    Ok(())
}

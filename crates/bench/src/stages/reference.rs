//! The queue's own ceiling: apalis alone, configured as `crates/worker/src/queue.rs`
//! configures ours (batch 100, the same poll ticker, LISTEN/NOTIFY on PostgreSQL,
//! the same indexes on SQLite), draining jobs whose handler runs one UPDATE by key
//! and one INSERT in a transaction.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow};
use apalis::prelude::{BackendExt, BoxDynError, Data, Strategy, TaskSink, WorkerBuilder};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use releasedesk_store::Pool;
use releasedesk_worker::queue::Ticker;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use crate::{
    Ctx, cpu,
    db::{Db, FreshDb, exec},
    report::Report,
};

const QUEUE: &str = "bench.reference";
const BATCH: usize = 100;
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct RefJob {
    item: i64,
}

#[derive(Clone)]
struct RefContext {
    pool: Pool,
    done: Arc<AtomicUsize>,
    target: usize,
    finished: Arc<Notify>,
}

async fn handle(job: RefJob, ctx: Data<RefContext>) -> Result<(), BoxDynError> {
    let at = releasedesk_domain::time::now();
    match &ctx.pool {
        Pool::Sqlite(pool) => {
            let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("UPDATE ref_items SET counter = counter + 1, updated_at = ? WHERE id = ?")
                .bind(at)
                .bind(job.item)
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO ref_events (id, item_id, at) VALUES (?, ?, ?)")
                .bind(uuid::Uuid::now_v7())
                .bind(job.item)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
        Pool::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "UPDATE ref_items SET counter = counter + 1, updated_at = $1 WHERE id = $2",
            )
            .bind(at)
            .bind(job.item)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO ref_events (id, item_id, at) VALUES ($1, $2, $3)")
                .bind(uuid::Uuid::now_v7())
                .bind(job.item)
                .bind(at)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    if ctx.done.fetch_add(1, Ordering::SeqCst) + 1 == ctx.target {
        ctx.finished.notify_one();
    }
    Ok(())
}

macro_rules! push_chunks {
    ($storage:expr, $jobs:expr) => {{
        for chunk in $jobs.chunks(1000) {
            $storage
                .push_bulk(chunk.to_vec())
                .await
                .map_err(|e| ::anyhow::anyhow!("push jobs: {e}"))?;
        }
    }};
}
pub(crate) use push_chunks;

fn sqlite_config() -> apalis_sqlite::Config {
    apalis_sqlite::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(3)
}

fn postgres_config() -> apalis_postgres::Config {
    apalis_postgres::Config::default()
        .queue(QUEUE)
        .batch_size(BATCH)
        .heartbeat_interval(Duration::from_secs(5))
        .missed_heartbeats(3)
}

/// Reference jobs per second with `workers` workers; with `history`, that many
/// finished jobs and event rows are in the tables first.
pub async fn drain(
    ctx: &Ctx,
    db: Db,
    workers: usize,
    history: usize,
    report: &mut Report,
) -> Result<f64> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure(ctx, &fresh, workers, history).await;
    fresh.drop_database().await;
    let (rate, usage) = result?;
    cpu::Rows {
        harness: Some("harness (apalis + handler)"),
        ..cpu::Rows::drain(db, "reference, ", workers, history, "job")
    }
    .push(report, &usage);
    Ok(rate)
}

async fn measure(
    ctx: &Ctx,
    fresh: &FreshDb,
    workers: usize,
    history: usize,
) -> Result<(f64, cpu::Usage)> {
    let n = ctx.plan.drain;
    let pool = fresh.pool_without_store(16).await?;
    releasedesk_worker::queue::setup(&pool, &fresh.url)
        .await
        .map_err(|e| anyhow!("{e}"))?;
    let (blob, ts) = match fresh.db {
        Db::Sqlite => ("BLOB", "TEXT"),
        Db::Postgres => ("UUID", "TIMESTAMPTZ"),
    };
    exec(
        &pool,
        &format!(
            "CREATE TABLE ref_items (id BIGINT PRIMARY KEY, counter INTEGER NOT NULL, \
               updated_at {ts}); \
             CREATE TABLE ref_events (id {blob} PRIMARY KEY, item_id BIGINT NOT NULL, \
               at {ts} NOT NULL); \
             CREATE INDEX ref_events_item ON ref_events (item_id)"
        ),
    )
    .await?;
    let items = i64::try_from(n)?;
    let insert_items = match fresh.db {
        Db::Sqlite => format!(
            "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {}) \
             INSERT INTO ref_items SELECT i, 0, NULL FROM g",
            items - 1
        ),
        Db::Postgres => format!(
            "INSERT INTO ref_items SELECT i, 0, NULL FROM generate_series(0, {}) AS g(i)",
            items - 1
        ),
    };
    exec(&pool, &insert_items).await?;
    let jobs: Vec<RefJob> = (0..items).map(|item| RefJob { item }).collect();
    if history > 0 {
        let old: Vec<RefJob> = (0..i64::try_from(history)?)
            .map(|i| RefJob { item: i % items })
            .collect();
        match &pool {
            Pool::Sqlite(p) => push_chunks!(
                SqliteStorage::<RefJob>::new(p).with_config(sqlite_config()),
                old
            ),
            Pool::Postgres(p) => {
                push_chunks!(
                    PostgresStorage::<RefJob>::new(p).with_config(postgres_config()),
                    old
                )
            }
        }
        finish_jobs(&pool, QUEUE).await?;
        let events = match fresh.db {
            Db::Sqlite => format!(
                "WITH RECURSIVE g(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM g WHERE i < {}) \
                 INSERT INTO ref_events SELECT randomblob(16), i % {items}, '2025-01-01T00:00:00+00:00' FROM g",
                history - 1
            ),
            Db::Postgres => format!(
                "INSERT INTO ref_events SELECT gen_random_uuid(), i % {items}, now() \
                 FROM generate_series(0, {}) AS g(i); ANALYZE",
                history - 1
            ),
        };
        exec(&pool, &events).await?;
    }
    match &pool {
        Pool::Sqlite(p) => push_chunks!(
            SqliteStorage::<RefJob>::new(p).with_config(sqlite_config()),
            jobs
        ),
        Pool::Postgres(p) => push_chunks!(
            PostgresStorage::<RefJob>::new(p).with_config(postgres_config()),
            jobs
        ),
    }
    crate::db::settle(&pool).await?;
    let context = RefContext {
        pool: pool.clone(),
        done: Arc::new(AtomicUsize::new(0)),
        target: n,
        finished: Arc::new(Notify::new()),
    };
    let (stop, stopped) = watch::channel(false);
    let before = cpu::sample(&[]);
    let started = Instant::now();
    let mut running = Vec::new();
    for w in 0..workers {
        let name = format!("bench-reference-{}-{w}", std::process::id());
        running.push(tokio::spawn(run_worker(
            name,
            pool.clone(),
            context.clone(),
            stopped.clone(),
        )));
    }
    let timeout = Duration::from_secs(120 + (n as u64) / 50);
    let finished = tokio::time::timeout(timeout, context.finished.notified()).await;
    let elapsed = started.elapsed();
    let usage = before.until(&cpu::sample(&[]), n);
    let _ = stop.send(true);
    for worker in running {
        worker.await.context("reference worker panicked")??;
    }
    pool.close().await;
    if finished.is_err() {
        anyhow::bail!(
            "reference drain finished {} of {n} jobs within {timeout:?}",
            context.done.load(Ordering::SeqCst)
        );
    }
    Ok((n as f64 / elapsed.as_secs_f64(), usage))
}

/// Marks every pending job done by an earlier worker, as finished
/// history (within the hour the sweep keeps it).
pub async fn finish_jobs(pool: &Pool, queue: &str) -> Result<()> {
    match pool {
        Pool::Sqlite(p) => {
            sqlx::query(
                "INSERT OR IGNORE INTO Workers (id, worker_type, storage_name, layers, last_seen) \
                 VALUES ('bench-history', ?, 'SqliteStorage', '', strftime('%s', 'now'))",
            )
            .bind(queue)
            .execute(p)
            .await?;
            sqlx::query(
                "UPDATE Jobs SET status = 'Done', attempts = 1, lock_by = 'bench-history', \
                 lock_at = strftime('%s', 'now'), done_at = strftime('%s', 'now') \
                 WHERE status = 'Pending'",
            )
            .execute(p)
            .await?;
        }
        Pool::Postgres(p) => {
            sqlx::query(
                "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen) \
                 VALUES ('bench-history', $1, 'PostgresStorage', '', now()) ON CONFLICT DO NOTHING",
            )
            .bind(queue)
            .execute(p)
            .await?;
            sqlx::query(
                "UPDATE apalis.jobs SET status = 'Done', attempts = 1, lock_by = 'bench-history', \
                 lock_at = now(), done_at = now() WHERE status = 'Pending'",
            )
            .execute(p)
            .await?;
        }
    }
    Ok(())
}

async fn run_worker(
    name: String,
    pool: Pool,
    context: RefContext,
    mut stopped: watch::Receiver<bool>,
) -> Result<()> {
    let shutdown = async move {
        let _ = stopped.wait_for(|s| *s).await;
        Ok::<(), std::io::Error>(())
    };
    let result = match pool {
        Pool::Sqlite(p) => {
            let storage = SqliteStorage::<RefJob>::new(&p).with_config(sqlite_config());
            let strategy = Strategy::new().apply(Ticker::new(POLL));
            WorkerBuilder::new(name)
                .backend(storage.poll_with_strategy(strategy))
                .data(context)
                .build(handle)
                .run_until(shutdown)
                .await
        }
        Pool::Postgres(p) => {
            let storage = PostgresStorage::<RefJob>::new(&p).with_config(postgres_config());
            let notifications = apalis_postgres::Pubsub::new(p.clone(), QUEUE.to_owned());
            let strategy = Strategy::new()
                .apply(Ticker::new(POLL))
                .stream(notifications);
            WorkerBuilder::new(name)
                .backend(storage.poll_with_strategy(strategy))
                .data(context)
                .build(handle)
                .run_until(shutdown)
                .await
        }
    };
    result.map_err(|e| anyhow!("reference worker: {e}"))
}

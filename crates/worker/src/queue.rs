//! The apalis job queue that carries `execute_release` jobs, on the application's
//! own database (SQLite or PostgreSQL) and connection pool.
//!
//! Approval writes an outbox row in its transaction; the dispatcher pushes it here
//! and marks it sent. A crash between the two pushes the job twice, which is
//! harmless: exactly-once rests on the store's lease and guarded SQL, never on the
//! queue (apalis has had duplicate-execution bugs after restarts).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use apalis::prelude::{
    BackendExt, BoxDynError, Data, PollSnapshot, PollStrategy, Strategy, TaskSink, WorkerBuilder,
};
use apalis_postgres::PostgresStorage;
use apalis_sqlite::SqliteStorage;
use releasedesk_store::{Pool, Store};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, Sleep};
use uuid::Uuid;

use crate::{carrier::Carrier, jobs::execute_release::execute_release};

/// An `execute_release` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteRelease {
    pub request_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("job queue (SQLite): {0}")]
    Sqlite(#[from] apalis_sqlite::Error),
    #[error("job queue (PostgreSQL): {0}")]
    Postgres(#[from] apalis_postgres::Error),
    #[error("job queue: {0}")]
    Push(String),
    #[error("job queue worker: {0}")]
    Worker(String),
}

/// How the apalis worker fetches.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Jobs fetched per round trip (the default of 10 caps a worker below 1k/s).
    pub batch_size: usize,
    /// How often an idle worker looks for jobs pushed by other processes.
    pub poll_interval: Duration,
    pub heartbeat_interval: Duration,
    /// Missed heartbeats after which another worker takes a job over.
    pub missed_heartbeats: usize,
    /// The queue's name: every process pushing or working it must agree.
    pub queue: String,
}

/// apalis's SQLite indexes that cost every job more than they give us. A job's
/// status changes three times (queued, running, done), each change moving its
/// entry in every index on `status`, and the wide ones hold every finished job
/// too:
/// - `LIdx` also makes acks slow down as finished jobs pile up (the planner
///   scans it with a JSON filter per row);
/// - `idx_jobs_job_type_status_run_at` serves apalis's dashboards (counts by
///   queue and status), which we do not run;
/// - `idx_jobs_status_run_at` serves the two look-ups by status we run: the
///   purge of finished jobs, which apalis's partial index of finished jobs
///   serves as well (`Store::purge_finished_jobs`), and apalis's look-up of
///   the jobs of dead workers, which [`SQLITE_IN_HAND_INDEX`] serves.
const SQLITE_INDEXES_DROPPED: [&str; 3] = [
    "DROP INDEX IF EXISTS LIdx",
    "DROP INDEX IF EXISTS idx_jobs_job_type_status_run_at",
    "DROP INDEX IF EXISTS idx_jobs_status_run_at",
];

/// The jobs in a worker's hand, which every worker's heartbeat looks through
/// for those of dead workers (apalis's `reenqueue_orphaned`, whose condition
/// names this index's, as a statement must for SQLite to use a partial index).
/// A job is in it only while queued or running.
const SQLITE_IN_HAND_INDEX: &str = "CREATE INDEX IF NOT EXISTS releasedesk_jobs_in_hand \
    ON Jobs (status) WHERE status = 'Running' OR status = 'Queued'";

/// Creates apalis's tables. On SQLite this runs on a connection of its own:
/// apalis's setup switches its connection to `synchronous = OFF`, which must not
/// leak into the application's pool. It also puts [`SQLITE_IN_HAND_INDEX`] in
/// place of [`SQLITE_INDEXES_DROPPED`].
pub async fn setup(pool: &Pool, database_url: &str) -> Result<(), QueueError> {
    match pool {
        Pool::Sqlite(_) => {
            let own = apalis_sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(database_url)
                .await
                .map_err(apalis_sqlite::Error::from)?;
            SqliteStorage::setup(&own).await?;
            for sql in std::iter::once(SQLITE_IN_HAND_INDEX).chain(SQLITE_INDEXES_DROPPED) {
                sqlx::query(sql)
                    .execute(&own)
                    .await
                    .map_err(apalis_sqlite::Error::from)?;
            }
            own.close().await;
        }
        Pool::Postgres(pool) => PostgresStorage::<()>::setup(pool).await?,
    }
    Ok(())
}

/// The queue on the application's pool.
#[derive(Clone)]
pub enum ReleaseQueue {
    Sqlite(SqliteStorage<ExecuteRelease>),
    Postgres(PostgresStorage<ExecuteRelease>),
}

impl std::fmt::Debug for ReleaseQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Sqlite(_) => "ReleaseQueue::Sqlite",
            Self::Postgres(_) => "ReleaseQueue::Postgres",
        })
    }
}

impl ReleaseQueue {
    pub fn new(pool: &Pool, config: &QueueConfig) -> Self {
        match pool {
            Pool::Sqlite(pool) => {
                let c = apalis_sqlite::Config::default()
                    .queue(&config.queue)
                    .batch_size(config.batch_size)
                    .heartbeat_interval(config.heartbeat_interval)
                    .missed_heartbeats(config.missed_heartbeats);
                Self::Sqlite(SqliteStorage::new(pool).with_config(c))
            }
            Pool::Postgres(pool) => {
                let c = apalis_postgres::Config::default()
                    .queue(&config.queue)
                    .batch_size(config.batch_size)
                    .heartbeat_interval(config.heartbeat_interval)
                    .missed_heartbeats(config.missed_heartbeats);
                Self::Postgres(PostgresStorage::new(pool).with_config(c))
            }
        }
    }

    /// Pushes jobs in one round trip (one multi-row INSERT).
    pub async fn push_all(&mut self, jobs: Vec<ExecuteRelease>) -> Result<(), QueueError> {
        match self {
            Self::Sqlite(storage) => storage
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Push(e.to_string())),
            Self::Postgres(storage) => storage
                .push_bulk(jobs)
                .await
                .map_err(|e| QueueError::Push(e.to_string())),
        }
    }
}

/// A poll timer that re-arms itself on every tick. apalis-core 1.0's own
/// interval strategies can report ready without re-arming, after which nothing
/// wakes an idle worker until its next heartbeat.
pub struct Ticker {
    every: Duration,
    sleep: Pin<Box<Sleep>>,
}

impl Ticker {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            sleep: Box::pin(tokio::time::sleep(every)),
        }
    }
}

impl PollStrategy for Ticker {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let next = Instant::now() + self.every;
                self.sleep.as_mut().reset(next);
                // Register the waker on the new deadline before reporting ready.
                let _ = self.sleep.as_mut().poll(cx);
                Poll::Ready(Some(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What the job handler needs.
#[derive(Clone)]
pub struct JobContext {
    pub store: Store,
    pub carrier: std::sync::Arc<dyn Carrier>,
    pub lease: Duration,
    pub retry_after: Duration,
}

async fn handle(job: ExecuteRelease, context: Data<JobContext>) -> Result<(), BoxDynError> {
    let ctx: &JobContext = &context;
    execute_release(
        &ctx.store,
        ctx.carrier.as_ref(),
        job.request_id,
        ctx.lease,
        ctx.retry_after,
    )
    .await?;
    Ok(())
}

/// Runs one apalis worker named `name` on `queue` until `shutdown` resolves;
/// jobs in flight finish first. `pushed` fires when this process pushed jobs, so
/// the worker fetches at once (on SQLite, where there is no LISTEN/NOTIFY, the
/// only wake-up besides the poll).
pub async fn run_worker(
    name: String,
    queue: ReleaseQueue,
    config: &QueueConfig,
    context: JobContext,
    pushed: futures::channel::mpsc::UnboundedReceiver<()>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), QueueError> {
    let shutdown = async move {
        shutdown.await;
        Ok::<(), std::io::Error>(())
    };
    let result = match queue {
        ReleaseQueue::Sqlite(storage) => {
            let strategy = Strategy::new()
                .apply(Ticker::new(config.poll_interval))
                .stream(pushed);
            let backend = storage.poll_with_strategy(strategy);
            WorkerBuilder::new(name)
                .backend(backend)
                .data(context)
                .build(handle)
                .run_until(shutdown)
                .await
        }
        ReleaseQueue::Postgres(storage) => {
            // LISTEN/NOTIFY wakes the worker the moment a job is pushed from any
            // process, and this process's own pushes wake it without the round
            // trip; the ticker is the fallback if a notification is missed.
            let notifications =
                apalis_postgres::Pubsub::new(storage.pool().clone(), config.queue.clone());
            let strategy = Strategy::new()
                .apply(Ticker::new(config.poll_interval))
                .stream(notifications)
                .stream(pushed);
            let backend = storage.poll_with_strategy(strategy);
            WorkerBuilder::new(name)
                .backend(backend)
                .data(context)
                .build(handle)
                .run_until(shutdown)
                .await
        }
    };
    result.map_err(|e| QueueError::Worker(e.to_string()))
}

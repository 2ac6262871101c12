//! Persistence for ReleaseDesk and the one operation layer every front end calls.
//!
//! [`Store`] owns the database connection and the release policy. Its methods are the
//! operations of the product (`file_request`, `cancel_by_customer`, `preview_release`,
//! ...): each validates with the domain types, changes state with guarded SQL inside
//! one transaction, writes the timeline event and any outbox rows in that same
//! transaction, and returns a view ready to render. This is the only crate that
//! speaks SQL.

mod accounts;
mod agents;
mod busy;
mod db;
pub mod entity;
mod error;
mod events;
mod execution;
mod filing;
mod group;
mod idempotency;
mod import;
mod jobs;
mod migration_lock;
mod numbers;
mod outbox;
mod paging;
mod plans;
mod reads;
mod requests;
mod review;
pub mod schema;
mod stats;
mod wal;

use std::sync::Arc;

use releasedesk_domain::ReleasePolicy;

pub use accounts::{
    CreatedAccount, CreatedStaff, CreatedToken, CustomerPrincipal, Principal, RevokedToken,
    StaffPrincipal, StaffRole, TOKEN_LOOKUP_BATCH_METRIC, TokenRef, is_customer_token,
};
pub use agents::{AgentPatch, AgentView, NewAgent};
pub use db::{Backend, DbOptions, Pool, connect};
pub use error::StoreError;
pub use events::{Actor, EventView};
pub use execution::{Begin, RELEASE_BATCH_METRIC, ReleaseWork};
pub use filing::{FILING_BATCH_METRIC, INSERT_FILINGS};
pub use idempotency::{KeyClaim, KeyScope, KeyTimes, StoredResponse};
pub use import::{ImportOutcome, ImportRow};
pub use jobs::SQLITE_PURGE;
pub use migration_lock::MigrationLock;
pub use numbers::{
    Blocker, ConfigPatch, NewNumber, NumberConfig, NumberPatch, NumberView, ReleasePreview,
};
pub use outbox::{OutboxItem, OutboxStatus, OutboxView, RetryPolicy};
pub use paging::{Cursor, Page, PageRequest};
pub use plans::{FilingPlans, GroupPlans, SMALL_TABLE_ROWS};
pub use requests::{FiledRequest, RequestView};
pub use review::{
    AccountRef, ClaimFilter, QueueFilter, QueueItem, QueueOrder, ReviewDetail, StaffRef,
};
pub use stats::QueueStats;
pub use wal::{WAL_SIZE_LIMIT, checkpoint_wal};

/// What new outbox rows a commit left, as [`Store::outbox_written`] tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Jobs, perhaps with emails.
    Jobs,
    /// Emails, which nobody waits on: a dispatcher may let them gather.
    EmailsOnly,
}

/// Settings the operations need besides the database.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub policy: ReleasePolicy,
    /// Where "new item in the queue" emails go.
    pub staff_email: String,
}

/// The operation layer: cheap to clone (one reference count), shared by
/// every front end.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// What every clone of a [`Store`] shares. A request clones the store several
/// times on its way (axum's router, each extractor that needs it): one
/// reference count instead of one per part (7% of `serve`'s CPU while filing
/// on PostgreSQL went to those clones and their drops, docs/BENCHMARKS.md).
#[derive(Clone)]
struct Shared {
    /// The pool, for reads: it refuses writes, which go through `write_gate`.
    db: reads::Reads,
    pool: Pool,
    settings: StoreSettings,
    /// Signalled after a commit that wrote outbox rows, so a worker in the same
    /// process starts at once instead of at its next poll.
    outbox_signals: Arc<OutboxSignals>,
    /// Emails written claimed for this process's dispatcher (see
    /// [`Store::adopt_new_emails`]).
    adoption: Arc<outbox::Adoption>,
    /// Set once every migration was seen applied.
    migrations_current: Arc<std::sync::atomic::AtomicBool>,
    /// PostgreSQL: the filing writer's sessions, whose plans are cached.
    filing_sessions: Option<db::KeyedSessions>,
    /// Queues this process's SQLite writers (see [`db::begin_write`]).
    write_gate: db::WriteGate,
    /// The ways to this process's group-commit writers and grouped reads (see
    /// `group`).
    groups: Arc<Groups>,
}

/// What a commit of this process left in the outbox (a permit is kept while
/// nobody waits, so a signal between two waits is not lost).
#[derive(Default)]
struct OutboxSignals {
    /// Jobs, perhaps with emails: someone may be waiting on them.
    jobs: tokio::sync::Notify,
    /// Emails only: nobody waits on them.
    emails: tokio::sync::Notify,
}

/// This process's group-commit writers, one per kind of write, and its grouped
/// token look-ups.
#[derive(Default)]
struct Groups {
    filings: group::GroupQueue<filing::Filings>,
    releases: group::GroupQueue<execution::Releases>,
    customer_tokens: group::GroupQueue<accounts::CustomerTokens>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.shared.pool.backend())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn new(pool: Pool, settings: StoreSettings) -> Self {
        let write_gate = db::WriteGate::new(&pool);
        let filing_sessions = match &pool {
            Pool::Postgres(pool) => Some(db::KeyedSessions::beside(pool, filing::SESSIONS)),
            Pool::Sqlite(_) => None,
        };
        let shared = Shared {
            db: reads::Reads::new(pool.sea_orm()),
            filing_sessions,
            pool,
            settings,
            outbox_signals: Arc::default(),
            adoption: Arc::default(),
            migrations_current: Arc::default(),
            write_gate,
            groups: Arc::default(),
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// This store for a group-commit writer: with groups of its own, never
    /// started, because holding this one's would keep their queues (and the
    /// writers) alive after the last caller's store is gone.
    fn detached(&self) -> Store {
        let shared = Shared {
            groups: Arc::default(),
            ..Shared::clone(&self.shared)
        };
        Store {
            shared: Arc::new(shared),
        }
    }

    /// Resolves when this process commits new outbox rows (a permit is kept if
    /// nobody is waiting, so a signal between two waits is not lost): jobs
    /// before emails, when both were written.
    pub async fn outbox_written(&self) -> Written {
        tokio::select! {
            biased;
            () = self.shared.outbox_signals.jobs.notified() => Written::Jobs,
            () = self.shared.outbox_signals.emails.notified() => Written::EmailsOnly,
        }
    }

    /// Returns once this process's foreground writes (those a request or a
    /// release waits on) have paused for `pause`, or after `max`: work nobody
    /// waits on can wait out a burst of requests instead of taking the cores
    /// (and the database's) from it.
    pub async fn requests_pause(&self, pause: std::time::Duration, max: std::time::Duration) {
        self.shared.write_gate.foreground_pause(pause, max).await;
    }

    /// Resolves when this process commits new job rows (on PostgreSQL, any
    /// process: see [`Store::relay_outbox_notifications`]).
    pub async fn jobs_written(&self) {
        self.shared.outbox_signals.jobs.notified().await;
    }

    /// After a commit that wrote jobs (and maybe emails).
    pub(crate) fn wake_workers(&self) {
        self.shared.outbox_signals.jobs.notify_one();
    }

    /// After a commit that wrote emails and no job.
    pub(crate) fn wake_mailer(&self) {
        self.shared.outbox_signals.emails.notify_one();
    }

    /// On PostgreSQL, relays the database's outbox notifications (every commit
    /// that schedules a job, from any process) to [`Store::outbox_written`],
    /// until `stop` resolves. Without it a worker learns of another process's
    /// rows at its next poll. Lost connections are re-established; a
    /// notification missed meanwhile is picked up by the poll. SQLite: returns
    /// at once (only this process writes, and it signals directly).
    pub async fn relay_outbox_notifications(&self, stop: impl std::future::Future<Output = ()>) {
        let Pool::Postgres(pool) = &self.shared.pool else {
            return;
        };
        tokio::pin!(stop);
        loop {
            let listened = self.relay_from(pool);
            tokio::select! {
                () = &mut stop => return,
                result = listened => {
                    let Err(error) = result;
                    tracing::warn!(%error, "outbox notifications interrupted; polling meanwhile");
                }
            }
            tokio::select! {
                () = &mut stop => return,
                () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    }

    async fn relay_from(
        &self,
        pool: &sqlx::PgPool,
    ) -> Result<std::convert::Infallible, sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
        listener
            .listen(releasedesk_migrations::OUTBOX_CHANNEL)
            .await?;
        // Rows committed before we listened: look once.
        self.wake_workers();
        loop {
            listener.recv().await?;
            self.wake_workers();
        }
    }

    pub fn backend(&self) -> Backend {
        self.shared.pool.backend()
    }

    /// The underlying sqlx pool, for components (the job queue) that share it.
    pub fn pool(&self) -> &Pool {
        &self.shared.pool
    }

    /// Closes the pool, the SQLite writer's connection and the filing
    /// writer's sessions, waiting for their connections to close.
    pub async fn close(&self) {
        if let Some(sessions) = &self.shared.filing_sessions {
            sessions.pool.close().await;
        }
        self.shared.write_gate.close().await;
        self.shared.pool.close().await;
    }

    pub fn settings(&self) -> &StoreSettings {
        &self.shared.settings
    }

    pub fn policy(&self) -> &ReleasePolicy {
        &self.shared.settings.policy
    }

    /// Applies every pending migration. A process that may start beside
    /// others holds [`Store::lock_migrations`] around it.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        use releasedesk_migrations::{Migrator, MigratorTrait};
        Migrator::up(self.shared.db.unguarded(), None).await?;
        Ok(())
    }

    /// Whether the database answers and every migration is applied. Once all
    /// are seen applied, later checks only ping (migrations are not undone).
    pub async fn ready(&self) -> Result<bool, StoreError> {
        use std::sync::atomic::Ordering;

        use releasedesk_migrations::{Migrator, MigratorTrait};
        if self.shared.migrations_current.load(Ordering::Relaxed) {
            self.shared.db.unguarded().ping().await?;
            return Ok(true);
        }
        // Applied versions this binary does not know (a newer release migrated)
        // do not make it unready; only its own missing ones do.
        let applied: Vec<String> =
            <releasedesk_migrations::seaql_migrations::Entity as sea_orm::EntityTrait>::find()
                .all(&self.shared.db)
                .await?
                .into_iter()
                .map(|m| m.version)
                .collect();
        let current = Migrator::migrations()
            .iter()
            .all(|migration| applied.iter().any(|v| *v == migration.name()));
        self.shared
            .migrations_current
            .store(current, Ordering::Relaxed);
        Ok(current)
    }
}

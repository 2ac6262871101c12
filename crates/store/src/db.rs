//! Connecting: one sqlx pool per process, shared by sea-orm and the job queue.

use std::{str::FromStr, time::Duration};

use sea_orm::{
    DatabaseConnection, DatabaseTransaction, SqliteTransactionMode, SqlxPostgresConnector,
    SqlxSqliteConnector, TransactionOptions, TransactionTrait,
};
use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::StoreError;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Self::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Some(Self::Postgres)
        } else {
            None
        }
    }
}

/// How to connect.
#[derive(Clone)]
pub struct DbOptions {
    pub url: String,
    pub max_connections: u32,
    /// How long a caller waits for a free connection before the database counts as
    /// unavailable.
    pub acquire_timeout: Duration,
    /// SQLite: how long a writer waits for the write lock.
    pub busy_timeout: Duration,
}

impl std::fmt::Debug for DbOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry a password.
        f.debug_struct("DbOptions")
            .field("backend", &Backend::of_url(&self.url))
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl DbOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(30),
        }
    }
}

/// The process's one connection pool.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(crate) fn sea_orm(&self) -> DatabaseConnection {
        match self {
            Pool::Sqlite(pool) => SqlxSqliteConnector::from_sqlx_sqlite_pool(pool.clone()),
            Pool::Postgres(pool) => SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
        }
    }

    pub async fn close(&self) {
        match self {
            Pool::Sqlite(pool) => pool.close().await,
            Pool::Postgres(pool) => pool.close().await,
        }
    }
}

/// Opens the pool. SQLite is tuned for concurrent writers: WAL, a generous
/// `busy_timeout`, `synchronous=NORMAL` (durable in WAL mode up to the last
/// checkpointed commit), foreign keys on; write transactions begin IMMEDIATE (see
/// [`begin_write`]) so writers queue on the lock instead of failing on upgrade.
pub async fn connect(options: &DbOptions) -> Result<Pool, StoreError> {
    let invalid = |e: sqlx::Error| StoreError::Config(format!("invalid database URL: {e}"));
    match Backend::of_url(&options.url) {
        Some(Backend::Sqlite) => {
            let connect = SqliteConnectOptions::from_str(&options.url)
                .map_err(invalid)?
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(options.busy_timeout)
                .foreign_keys(true)
                .pragma("temp_store", "memory");
            let pool = SqlitePoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            Ok(Pool::Sqlite(pool))
        }
        Some(Backend::Postgres) => {
            let connect = PgConnectOptions::from_str(&options.url).map_err(invalid)?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            Ok(Pool::Postgres(pool))
        }
        None => Err(StoreError::Config(
            "DATABASE_URL must start with sqlite: or postgres:".into(),
        )),
    }
}

/// Begins a transaction that will write. On SQLite it takes the write lock up front
/// (`BEGIN IMMEDIATE`): a deferred transaction that reads and then writes can fail
/// with "database is locked" when another writer got there first, which no busy
/// timeout cures. PostgreSQL ignores the mode.
///
/// On SQLite the writers of this process first queue on `gate` (hold the returned
/// guard until the transaction ends): SQLite has one write lock, and a writer
/// waiting in its busy handler sleeps in growing steps (up to 100 ms) and polls,
/// so under contention most of the time went to sleeping past a lock already
/// free. An async queue hands the lock over the moment it is released.
pub(crate) async fn begin_write(
    db: &DatabaseConnection,
    gate: &WriteGate,
) -> Result<(DatabaseTransaction, WriteTurn), StoreError> {
    let turn = gate.turn(db).await;
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    Ok((db.begin_with_options(options).await?, turn))
}

/// The queue of this process's SQLite writers (unused on PostgreSQL).
#[derive(Clone, Default)]
pub(crate) struct WriteGate(std::sync::Arc<tokio::sync::Mutex<()>>);

impl WriteGate {
    /// Waits for this process's turn to write (at once on PostgreSQL). Hold it
    /// around a single autocommit write too: one that skipped the queue would
    /// meet the lock in SQLite's busy handler, sleeping past the moment it frees.
    pub(crate) async fn turn(&self, db: &DatabaseConnection) -> WriteTurn {
        WriteTurn(match db.get_database_backend() {
            sea_orm::DbBackend::Sqlite => Some(self.0.clone().lock_owned().await),
            _ => None,
        })
    }
}

/// A writer's turn; the next writer goes when it is dropped.
#[must_use = "the turn must be held until the transaction commits or rolls back"]
pub(crate) struct WriteTurn(
    #[expect(dead_code, reason = "held for its drop")] Option<tokio::sync::OwnedMutexGuard<()>>,
);

//! Connecting: one sqlx pool per process, shared by sea-orm and the job queue.

use std::{
    str::FromStr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, DbBackend, SqliteTransactionMode,
    SqlxPostgresConnector, SqlxSqliteConnector, TransactionOptions, TransactionTrait, Value,
    sea_query::{Expr, ExprTrait, IntoCondition, PgFunc, SimpleExpr},
};
use sqlx::{
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
    },
};

use crate::{
    StoreError,
    wal::{Checkpoints, WAL_SIZE_LIMIT},
};

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
/// `busy_timeout` waited out in short polls ([`crate::busy`]),
/// `synchronous=NORMAL` (durable in WAL mode up to the last checkpointed
/// commit), foreign keys on, no checkpoints in commits (a [`crate::Store`]'s
/// writer runs them in the background, see [`crate::wal`]; a pool without a
/// store needs [`crate::checkpoint_wal`]) and the log file cut back to
/// [`WAL_SIZE_LIMIT`] once it starts over; write transactions begin IMMEDIATE
/// (see [`begin_write`]) so writers queue on the lock instead of failing on
/// upgrade.
///
/// PostgreSQL connections plan every statement for its parameters
/// (`plan_cache_mode = force_custom_plan`). By default a prepared statement
/// gets a generic plan after five runs, kept until the table is next analyzed;
/// chosen while a table is small (a new database) that plan is a sequential
/// scan, and without autovacuum's analyze (off, or not yet come round on a
/// growing table) it stays one. Measured on a new database without
/// autovacuum: the group statements' `id = ANY($1)` look-ups went from under
/// 1 ms to 9 ms a call, filing at 32 clients from ~3,400 to ~1,100 requests/s.
/// Planning them each time cost no throughput we could measure then
/// (docs/BENCHMARKS.md); the filing writer, where it did, has sessions of its
/// own ([`KeyedSessions`]).
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
                .pragma("temp_store", "memory")
                .pragma("wal_autocheckpoint", "0")
                .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string());
            let pool = sqlite_pool_options()
                .max_connections(options.max_connections)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(connect)
                .await
                .map_err(StoreError::from_sqlx)?;
            Ok(Pool::Sqlite(pool))
        }
        Some(Backend::Postgres) => {
            let connect = PgConnectOptions::from_str(&options.url)
                .map_err(invalid)?
                .options([("plan_cache_mode", "force_custom_plan")]);
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

/// PostgreSQL: the sessions of this process's filing writer, beside the pool.
///
/// They plan each statement once (`plan_cache_mode = force_generic_plan`),
/// where the pool's plan every statement ([`connect`]): a filing group's
/// statements ([`crate::INSERT_FILINGS`], the foreign-key checks of the rows
/// it inserts) run thousands of times a second with the same text,
/// and planning them each time cost about 40% of PostgreSQL's CPU per filing
/// (docs/BENCHMARKS.md). Not PostgreSQL's `auto`, which weighs the generic
/// plan against the average of the custom plans so far at every run: after a
/// long run of one-filing groups (cheap custom plans) it went on planning
/// every group of a later burst (PostgreSQL's CPU per filing +18%).
/// The trap `force_custom_plan` avoids, a generic plan chosen while a table
/// was small and kept as it grew, is closed another way. Every statement of
/// theirs finds rows by key, and is written so that no plan can do otherwise:
/// each table is read in a subquery of its own, run per row by key
/// ([`crate::INSERT_FILINGS`]), never hashed or joined whole, which a planner
/// finds cheaper while the table is small. The sessions run with
/// `enable_seqscan = off`, so even then the reads go through an index, and
/// are closed after [`PLAN_LIFETIME`], so no plan outlives the tables' sizes
/// by more than that. (A test plans them on a new database and on one
/// analysed while small, and reads each step.)
#[derive(Clone)]
pub(crate) struct KeyedSessions {
    pub(crate) pool: PgPool,
    pub(crate) db: DatabaseConnection,
}

impl KeyedSessions {
    /// `connections` sessions, opened when first needed, to the database of
    /// `pool` with its settings but for the two above.
    pub(crate) fn beside(pool: &PgPool, connections: u32) -> Self {
        // Later `-c` settings of a session's options win over earlier ones.
        let options = (*pool.connect_options()).clone().options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .max_lifetime(PLAN_LIFETIME)
            .connect_lazy_with(options);
        Self {
            db: SqlxPostgresConnector::from_sqlx_postgres_pool(pool.clone()),
            pool,
        }
    }
}

/// How long a filing writer's session, and so each plan it made, lasts: a
/// session is closed when it is next done with after this, and the next one
/// plans from the tables as they are then (a new session and its plans cost a
/// few milliseconds, once a minute).
pub(crate) const PLAN_LIFETIME: Duration = Duration::from_secs(60);

/// A PostgreSQL statement with its parameters bound, run on the sqlx pool.
pub(crate) type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// `column` is one of `values`, in a statement whose text does not depend on
/// how many there are. On PostgreSQL that is `column = ANY($1)` with one array
/// parameter: each connection prepares and plans it once, where `IN ($1, …,
/// $n)` is a new statement for every group size (prepared anew per connection,
/// an extra round trip, and planned every time). SQLite, which prepares in
/// process and has no arrays, gets `IN (…)`.
pub(crate) fn one_of<C, V>(column: C, values: Vec<V>, backend: DbBackend) -> SimpleExpr
where
    C: ColumnTrait,
    V: Into<Value>
        + sea_orm::sea_query::ValueType
        + sea_orm::sea_query::value::postgres_array::NotU8,
{
    match backend {
        DbBackend::Postgres => Expr::col(column.as_column_ref()).eq(PgFunc::any(Expr::val(values))),
        _ => column.is_in(values),
    }
}

/// `condition` as a filter that no index can serve (`CASE WHEN condition THEN
/// TRUE ELSE FALSE END`), so a batch's ids are the planner's only way in.
///
/// SQLite's planner, lacking statistics on a table (a new database, or one that
/// `PRAGMA optimize` saw empty), guesses that `status = ?` matches ten rows. For a
/// batch of 16 or more ids it then walked every row of that status through
/// `idx_release_requests_status` instead of looking the ids up, so a group commit
/// slowed as the table grew.
pub(crate) fn unindexed(condition: impl IntoCondition) -> Expr {
    Expr::case(condition, Expr::value(true))
        .finally(Expr::value(false))
        .into()
}

/// Begins a transaction that will write, on the turn's connection. On SQLite it
/// takes the write lock up front (`BEGIN IMMEDIATE`): a deferred transaction that
/// reads and then writes can fail with "database is locked" when another writer
/// got there first, which no busy timeout cures. PostgreSQL ignores the mode.
///
/// On SQLite the writers of this process first queue on `gate` (hold the returned
/// turn until the transaction ends): SQLite has one write lock, and a writer
/// waiting in its busy handler sleeps between polls (SQLite's own up to 100 ms,
/// ours up to 2 ms), so under contention time goes to sleeping past a lock
/// already free. An async queue hands the lock over the moment it is released.
pub(crate) async fn begin_write(
    gate: &WriteGate,
) -> Result<(DatabaseTransaction, WriteTurn), StoreError> {
    let turn = gate.turn().await;
    let options = TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    };
    Ok((turn.db().begin_with_options(options).await?, turn))
}

/// Where this process writes, and on SQLite the queue of its writers.
///
/// On SQLite every write goes through one connection of its own, in turn. A
/// connection's page cache is discarded whenever another connection commits, so
/// writes spread over the pool re-read every page they touch from the file after
/// each commit; the one writer's cache stays warm, as only it commits (bar other
/// processes). On PostgreSQL writers share the pool and do not queue, but
/// background writers still yield to foreground ones (see [`WriteQueue`]).
#[derive(Clone)]
pub(crate) struct WriteGate(Arc<Gate>);

struct Gate {
    /// This process's writers in their classes; on SQLite one at a time.
    queue: WriteQueue,
    writer: Writer,
}

/// The connection a writer writes on.
enum Writer {
    Sqlite {
        /// Opened on first use (opening a pool needs the runtime).
        writer: OnceLock<DatabaseConnection>,
        /// Options of the pool the writer is made like.
        pool: SqlitePool,
        /// The checkpoints of the database this process writes.
        checkpoints: Checkpoints,
    },
    /// The pool.
    Postgres(DatabaseConnection),
}

/// Pages the SQLite writer keeps in memory (SQLite's `cache_size` in KiB when
/// negative): the indexes every filing and release touches, at a million rows.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

impl WriteGate {
    /// The gate of `pool`'s writers; on SQLite it starts the database's
    /// checkpoints ([`Checkpoints`]), so it needs a Tokio runtime.
    pub(crate) fn new(pool: &Pool) -> Self {
        Self(Arc::new(match pool {
            Pool::Sqlite(pool) => {
                let queue = WriteQueue::default();
                Gate {
                    writer: Writer::Sqlite {
                        writer: OnceLock::new(),
                        pool: pool.clone(),
                        checkpoints: Checkpoints::start(pool.clone(), queue.clone()),
                    },
                    queue,
                }
            }
            Pool::Postgres(_) => Gate {
                queue: WriteQueue::unlocked(),
                writer: Writer::Postgres(pool.sea_orm()),
            },
        }))
    }

    /// Waits for this process's turn to write (at once on PostgreSQL). Write on
    /// [`WriteTurn::db`], a single autocommit statement too: one that skipped the
    /// queue would meet the lock in SQLite's busy handler, sleeping past the
    /// moment it frees. Background writers wait while the turn is held.
    pub(crate) async fn turn(&self) -> WriteTurn {
        self.take(Class::Foreground).await
    }

    /// A background writer's turn: after the foreground writers waiting now and
    /// any that arrive meanwhile, for at most [`MAX_DEFERRAL`]. On PostgreSQL,
    /// where writers share no lock, the same: there they share the cores
    /// (see [`WriteQueue`]).
    pub(crate) async fn background_turn(&self) -> WriteTurn {
        self.take(Class::Background).await
    }

    /// Returns once this process's foreground writers have paused for `pause`
    /// (none writing or waiting, and none done within it), or after `max`.
    pub(crate) async fn foreground_pause(&self, pause: Duration, max: Duration) {
        self.0.queue.pause(pause, max).await;
    }

    /// Stops the SQLite checkpoints and closes the writer's own connection, if
    /// it was opened, waiting for their connections to close (on PostgreSQL
    /// the writer is the pool, closed with it).
    pub(crate) async fn close(&self) {
        let Writer::Sqlite {
            writer,
            checkpoints,
            ..
        } = &self.0.writer
        else {
            return;
        };
        checkpoints.stop().await;
        if let Some(writer) = writer.get() {
            // Fails only for connections that are not pools (mocks, proxies).
            if let Err(error) = writer.close_by_ref().await {
                tracing::warn!(%error, "closing the SQLite writer failed");
            }
        }
    }

    async fn take(&self, class: Class) -> WriteTurn {
        let Gate { queue, writer } = &*self.0;
        let place = match class {
            Class::Foreground => queue.foreground().await,
            Class::Background => queue.background().await,
        };
        let db = match writer {
            Writer::Sqlite { writer, pool, .. } => sqlite_writer(writer, pool).clone(),
            Writer::Postgres(db) => db.clone(),
        };
        WriteTurn { db, _place: place }
    }
}

/// The two classes of writers (see [`WriteQueue`]).
enum Class {
    Foreground,
    Background,
}

/// A SQLite pool whose connections wait for the write lock in
/// [`crate::busy`]'s handler, for as long as their `busy_timeout`.
fn sqlite_pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().after_connect(|conn, _| {
        Box::pin(async move {
            let ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                .fetch_one(&mut *conn)
                .await?;
            let timeout = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
            crate::busy::install(conn, timeout).await
        })
    })
}

/// The SQLite writer, opened on first use like `pool`'s connections but on its own.
fn sqlite_writer<'a>(
    writer: &'a OnceLock<DatabaseConnection>,
    pool: &SqlitePool,
) -> &'a DatabaseConnection {
    writer.get_or_init(|| {
        let options = (*pool.connect_options())
            .clone()
            .pragma("cache_size", (-WRITER_CACHE_KIB).to_string());
        let writer = sqlite_pool_options()
            .max_connections(1)
            .acquire_timeout(pool.options().get_acquire_timeout())
            .connect_lazy_with(options);
        SqlxSqliteConnector::from_sqlx_sqlite_pool(writer)
    })
}

/// The queue of this process's writers.
///
/// Writers come in two classes. Foreground writers (everything a request or a
/// release waits on) queue in arrival order. Background writers (the email
/// dispatcher's claims and settlements, which nobody waits on) go only when no
/// foreground writer is writing or waiting, or once they have deferred for
/// [`MAX_DEFERRAL`]: under a burst of filings the one write lock goes to the
/// filings, and the emails of the burst follow in its gaps, never starved.
///
/// On PostgreSQL ([`WriteQueue::unlocked`]) writers hold no lock and never wait
/// for each other, but the classes stay: what a burst of filings is short of
/// there is CPU (the process and the database share the cores), and every
/// background statement run during the burst took some from a filing. The
/// emails' bookkeeping waits out the burst the same way, in bigger batches.
#[derive(Clone)]
pub(crate) struct WriteQueue(Arc<QueueState>);

impl Default for WriteQueue {
    /// One writer at a time (SQLite).
    fn default() -> Self {
        Self::with_lock(Some(Arc::default()))
    }
}

struct QueueState {
    /// Held by the writer whose turn it is; none where writers need no turns.
    lock: Option<Arc<tokio::sync::Mutex<()>>>,
    /// Foreground writers waiting for their turn or holding it.
    foreground: AtomicUsize,
    /// Told when `foreground` drops to zero.
    quiet: tokio::sync::Notify,
    /// When the last foreground turn ended, in microseconds after `since`
    /// (plus one: 0 is none yet).
    last_done: AtomicU64,
    since: tokio::time::Instant,
}

/// The longest a background writer yields to foreground writers.
const MAX_DEFERRAL: Duration = Duration::from_millis(50);

impl WriteQueue {
    /// Writers that never wait for each other; background ones still wait
    /// for foreground ones (PostgreSQL).
    fn unlocked() -> Self {
        Self::with_lock(None)
    }

    fn with_lock(lock: Option<Arc<tokio::sync::Mutex<()>>>) -> Self {
        Self(Arc::new(QueueState {
            lock,
            foreground: AtomicUsize::new(0),
            quiet: tokio::sync::Notify::new(),
            last_done: AtomicU64::new(0),
            since: tokio::time::Instant::now(),
        }))
    }

    /// A foreground writer's place, once it is its turn.
    pub(crate) async fn foreground(&self) -> Place {
        self.0.foreground.fetch_add(1, SeqCst);
        // Counted from here, also if the caller gives up while waiting.
        let foreground = Foreground(self.0.clone());
        Place {
            _guard: self.0.turn().await,
            _foreground: Some(foreground),
        }
    }

    async fn background(&self) -> Place {
        // Until no foreground writer is writing or waiting (a pause of none).
        self.pause(Duration::ZERO, MAX_DEFERRAL).await;
        Place {
            _guard: self.0.turn().await,
            _foreground: None,
        }
    }

    /// When the last foreground writer's turn ended, if one did.
    pub(crate) fn last_write(&self) -> Option<tokio::time::Instant> {
        self.0.last_done()
    }

    /// See [`WriteGate::foreground_pause`].
    async fn pause(&self, pause: Duration, max: Duration) {
        let state = &self.0;
        let deadline = tokio::time::Instant::now() + max;
        while tokio::time::Instant::now() < deadline {
            // Registered before the count is read, so a turn ending between the two wakes it.
            let quiet = state.quiet.notified();
            if state.foreground.load(SeqCst) > 0 {
                let _ = tokio::time::timeout_at(deadline, quiet).await;
                continue;
            }
            match state.last_done() {
                Some(done) if done + pause > tokio::time::Instant::now() => {
                    tokio::time::sleep_until((done + pause).min(deadline)).await;
                }
                _ => return,
            }
        }
    }
}

impl QueueState {
    /// When the last foreground turn ended, if one did.
    fn last_done(&self) -> Option<tokio::time::Instant> {
        match self.last_done.load(SeqCst) {
            0 => None,
            micros => Some(self.since + Duration::from_micros(micros - 1)),
        }
    }

    async fn turn(&self) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        match &self.lock {
            Some(lock) => Some(lock.clone().lock_owned().await),
            None => None,
        }
    }
}

/// Counts a foreground writer until its turn ends.
struct Foreground(Arc<QueueState>);

impl Drop for Foreground {
    fn drop(&mut self) {
        // Before the count drops, so whoever sees it at zero sees this end too.
        let micros = self.0.since.elapsed().as_micros();
        let micros = u64::try_from(micros).unwrap_or(u64::MAX - 1) + 1;
        self.0.last_done.fetch_max(micros, SeqCst);
        let left = self.0.foreground.fetch_sub(1, SeqCst);
        if left == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

/// A writer's place at the head of the queue, held until its turn ends.
pub(crate) struct Place {
    _guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    // Dropped after the guard: the lock is free before background writers hear of it.
    _foreground: Option<Foreground>,
}

/// A writer's turn, and the connection to write on; the next writer goes when
/// it is dropped.
#[must_use = "the turn must be held until the transaction commits or rolls back"]
pub(crate) struct WriteTurn {
    db: DatabaseConnection,
    /// This writer's place in the queue.
    _place: Place,
}

impl WriteTurn {
    /// The connection to write on during this turn.
    pub(crate) fn db(&self) -> &DatabaseConnection {
        &self.db
    }
}

#[cfg(test)]
mod tests {
    use std::{
        pin::pin,
        sync::Mutex,
        task::{Context, Poll, Waker},
    };

    use tokio::time::{Instant, sleep, timeout};

    use super::*;

    /// Whether `turn` is had on the first poll, without waiting at all.
    fn at_once(turn: impl Future<Output = Place>) -> bool {
        let mut context = Context::from_waker(Waker::noop());
        matches!(pin!(turn).poll(&mut context), Poll::Ready(_))
    }

    /// No plan of the filing writer's outlives [`PLAN_LIFETIME`]: its sessions
    /// are replaced after it.
    #[tokio::test]
    async fn the_filing_writer_s_sessions_last_the_plan_lifetime() {
        let pool = PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:9/none")
            .expect("a lazy pool");
        let sessions = KeyedSessions::beside(&pool, 2);
        let options = sessions.pool.options();
        assert_eq!(options.get_max_lifetime(), Some(PLAN_LIFETIME));
        assert_eq!(options.get_max_connections(), 2);
    }

    #[tokio::test]
    async fn a_background_writer_lets_foreground_writers_that_arrive_while_it_waits_go_first() {
        let gate = WriteQueue::default();
        let order = Arc::new(Mutex::new(Vec::new()));
        let writer = |background: bool| {
            let (gate, order) = (gate.clone(), order.clone());
            tokio::spawn(async move {
                let _turn = match background {
                    true => gate.background().await,
                    false => gate.foreground().await,
                };
                order.lock().expect("order").push(background);
            })
        };

        let held = gate.foreground().await;
        let background = writer(true);
        sleep(Duration::from_millis(5)).await;
        let foreground = writer(false);
        sleep(Duration::from_millis(5)).await;
        drop(held);
        foreground.await.expect("foreground writer");
        background.await.expect("background writer");

        assert_eq!(*order.lock().expect("order"), [false, true]);
    }

    #[tokio::test]
    async fn a_background_writer_defers_to_a_steady_stream_of_foreground_writers_only_so_long() {
        let gate = WriteQueue::default();
        // Two foreground writers taking turns: one always holds or waits.
        let streams: Vec<_> = (0..2)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move {
                    loop {
                        let _turn = gate.foreground().await;
                        sleep(Duration::from_millis(1)).await;
                    }
                })
            })
            .collect();
        sleep(Duration::from_millis(5)).await;

        let asked = Instant::now();
        let turn = timeout(Duration::from_secs(10), gate.background())
            .await
            .expect("a background writer is never starved");
        let waited = asked.elapsed();
        drop(turn);
        streams.iter().for_each(tokio::task::JoinHandle::abort);

        assert!(
            waited >= MAX_DEFERRAL,
            "it went after {waited:?}, while foreground writers were busy"
        );
    }

    #[tokio::test]
    async fn a_background_writer_goes_at_once_when_no_foreground_writer_is_busy() {
        let gate = WriteQueue::default();
        drop(gate.foreground().await);
        assert!(
            at_once(gate.background()),
            "it deferred with nobody to defer to"
        );
    }

    #[tokio::test]
    async fn without_a_lock_only_background_writers_wait_and_only_for_foreground_ones() {
        let gate = WriteQueue::unlocked();
        let background = gate.background().await;
        let writing = gate.foreground().await;
        assert!(
            at_once(gate.foreground()),
            "a foreground writer waited for another writer"
        );
        assert!(
            !at_once(gate.background()),
            "a background writer went while a foreground writer was writing"
        );
        drop((writing, background));
        assert!(
            at_once(gate.background()),
            "a background writer waited with no foreground writer left"
        );
    }

    /// A task waiting for a 20 ms pause of `gate`'s foreground writers, or `max`.
    fn spawn_pause(gate: &WriteQueue, max: Duration) -> tokio::task::JoinHandle<()> {
        let gate = gate.clone();
        tokio::spawn(async move { gate.pause(Duration::from_millis(20), max).await })
    }

    /// Whether `pause` has returned after the clock moved to `at` (paused
    /// clock: time moves only when every task waits).
    async fn paused_by(pause: &tokio::task::JoinHandle<()>, start: Instant, at: u64) -> bool {
        tokio::time::sleep_until(start + Duration::from_millis(at)).await;
        pause.is_finished()
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_waits_out_foreground_writers_and_then_the_pause_itself() {
        let gate = WriteQueue::unlocked();
        let start = Instant::now();
        let writing = gate.foreground().await;
        let pause = spawn_pause(&gate, Duration::from_secs(10));
        assert!(!paused_by(&pause, start, 100).await, "a writer is writing");
        drop(writing);
        assert!(
            !paused_by(&pause, start, 119).await,
            "the pause is not over"
        );
        let again = gate.foreground().await;
        assert!(
            !paused_by(&pause, start, 150).await,
            "a writer came within the pause"
        );
        drop(again);
        assert!(!paused_by(&pause, start, 169).await);
        assert!(
            paused_by(&pause, start, 171).await,
            "20 ms without a writer"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_lasts_no_longer_than_its_longest() {
        let gate = WriteQueue::unlocked();
        let start = Instant::now();
        let _writing = gate.foreground().await;
        let pause = spawn_pause(&gate, Duration::from_secs(2));
        assert!(!paused_by(&pause, start, 1_999).await);
        assert!(
            paused_by(&pause, start, 2_001).await,
            "still waiting for a writer that never ends"
        );
    }

    #[tokio::test]
    async fn a_pause_is_over_at_once_when_no_foreground_writer_came_within_it() {
        let gate = WriteQueue::unlocked();
        let pause = || gate.pause(Duration::from_millis(20), Duration::from_secs(10));
        let mut context = Context::from_waker(Waker::noop());
        assert!(pin!(pause()).poll(&mut context).is_ready(), "no writer yet");
        drop(gate.foreground().await);
        sleep(Duration::from_millis(25)).await;
        assert!(
            pin!(pause()).poll(&mut context).is_ready(),
            "one, 25 ms ago"
        );
    }

    #[tokio::test]
    async fn a_foreground_writer_that_gives_up_waiting_no_longer_holds_background_writers_back() {
        let gate = WriteQueue::default();
        let held = gate.background().await;
        // Waits behind the background writer, then gives up.
        let gave_up = timeout(Duration::from_millis(1), gate.foreground()).await;
        assert!(gave_up.is_err());
        drop(held);
        assert!(
            at_once(gate.background()),
            "a foreground writer that gave up was still counted"
        );
    }
}

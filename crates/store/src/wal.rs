//! SQLite's write-ahead log: copied into the database in the background, and
//! kept bounded under a steady stream of writes.
//!
//! Connections never checkpoint on commit (`wal_autocheckpoint = 0`, see
//! [`crate::db::connect`]). SQLite's default has the commit that takes the log
//! past 1,000 pages do the copy and its syncs before it returns, so one filing
//! or release in every few dozen waited for it, and the copy grew with the
//! number of distinct pages a history spreads writes over. Instead a task copies
//! the log every [`CHECKPOINT_EVERY`] with a `PASSIVE` checkpoint, which never
//! blocks writers or readers (frames a reader still needs are left for the next
//! round), and a page written by many commits in between is copied once.
//!
//! That alone leaves the log to grow for as long as writes keep coming: it
//! starts over only when a write comes after a checkpoint that copied all of it
//! with no reader still using it, and with commits every millisecond that waits
//! for a quiet moment (measured: 43 -> 722 MiB over 30,000 filings in a row). So
//! a process's writer ([`crate::db::WriteGate`]) also has the log started over
//! once it passes [`RESTART_AFTER_FRAMES`] ([`Checkpoints`]): under that load the
//! largest log went from ~730 to ~50 MiB, and the CPU per filing down with it
//! (a short log's index is quicker to search), at the price of a few
//! milliseconds in which the process's writers wait (medians of 2–4 ms, at most
//! 13 seen), about three times a second at ~7,000 filings/s. Measured in
//! docs/BENCHMARKS.md.

use std::{sync::Arc, time::Duration};

use sqlx::{
    Connection,
    sqlite::{SqliteConnection, SqlitePool},
};

use crate::db::WriteQueue;

/// The size SQLite's write-ahead log file is cut back to once it has been
/// copied into the database and starts over (`journal_size_limit`), in bytes.
///
/// Without a limit the file keeps its largest size for good (1.6 GB after the
/// benchmark's setup of 10,000 requests filed and approved one by one); with it,
/// the first commit after the log starts over gives the disk back. Cutting the
/// file back is an `ftruncate` on that commit's thread (33 ms for 256 -> 64 MiB
/// on the benchmark machine), so under load the log is started over well below
/// it ([`RESTART_AFTER_FRAMES`]) and the file is written over instead.
pub const WAL_SIZE_LIMIT: u64 = 64 * 1024 * 1024;

/// How often the log is copied into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// Frames (pages) in the log past which a writer's checkpoints start it over:
/// 32 MiB at SQLite's default page size of 4 KiB, half of [`WAL_SIZE_LIMIT`],
/// so that what is written while a restart waits for its turn stays within the
/// file and no commit has to cut it back.
const RESTART_AFTER_FRAMES: i64 = 8_192;

/// At most how many more `PASSIVE` copies a restart makes before it takes
/// the write turn, each copying what came in during the one before, so that
/// the writers wait for less ([`catch_up`]).
const CATCH_UP_ROUNDS: u32 = 6;

/// Frames that came in during a copy few enough for the restart to take the
/// turn and copy them there: 256 KiB. With 256 (1 MiB) the writers waited
/// about twice as long (medians of 3–9 ms against 2–5 ms; docs/BENCHMARKS.md).
const CAUGHT_UP_FRAMES: i64 = 64;

/// How long a restarting checkpoint waits for the write lock (other processes'
/// writers) or for readers to finish with the log, each, before it gives the
/// restart up to the next round. It holds the write lock while it waits for
/// readers, so this bounds how long one long reader can hold up every writer.
const RESTART_WAIT: Duration = Duration::from_millis(10);

/// Copies `pool`'s write-ahead log into the database every [`CHECKPOINT_EVERY`],
/// on a pooled connection, until the pool closes; for pools written without a
/// [`crate::Store`], whose writer runs its own ([`Checkpoints`]). The log is not
/// started over under load.
pub async fn checkpoint_wal(pool: SqlitePool) {
    let mut rounds = Rounds::new();
    while rounds.next(&pool, None).await {
        let passive = match pool.acquire().await {
            Ok(mut conn) => checkpoint(&mut conn, Mode::Passive).await.map(drop),
            Err(error) => Err(error),
        };
        if !rounds.done(&pool, passive) {
            return;
        }
    }
}

/// A process's checkpoints, run by its writer: the log copied into the
/// database every [`CHECKPOINT_EVERY`] and, once it holds more than
/// [`RESTART_AFTER_FRAMES`], started over.
///
/// Both run on a connection of their own. The restart is a `RESTART`
/// checkpoint taken in the process's write turn: this process's writers wait
/// for it in their queue, not in SQLite's busy handler, and the turn is taken
/// right after `PASSIVE` copies that caught up with the log ([`catch_up`]), so
/// what is left to copy and sync while they wait is only what came in during
/// the last of them. It gives up after [`RESTART_WAIT`] (a
/// long reader, another process writing) and a later round tries again:
/// writers are never held for the busy timeout.
pub(crate) struct Checkpoints {
    stop: Arc<tokio::sync::Notify>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Checkpoints {
    /// Starts the checkpoints of `pool`'s database for the writers queued on
    /// `queue`. Needs a Tokio runtime.
    pub(crate) fn start(pool: SqlitePool, queue: WriteQueue) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(checkpoint_and_restart(pool, queue, stop.clone()));
        Self {
            stop,
            task: std::sync::Mutex::new(Some(task)),
        }
    }

    /// Stops the checkpoints and waits for their connection to close.
    pub(crate) async fn stop(&self) {
        // A permit is kept if the task is between rounds.
        self.stop.notify_one();
        let task = self.task.lock().map(|mut task| task.take()).ok().flatten();
        if let Some(task) = task
            && let Err(error) = task.await
        {
            tracing::warn!(%error, "SQLite checkpoints ended abnormally");
        }
    }
}

impl Drop for Checkpoints {
    /// A store dropped without [`crate::Store::close`]: the rounds end at
    /// their next wait, and their connection closes, rather than running
    /// until the pool closes (the task holds a clone of it).
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

async fn checkpoint_and_restart(
    pool: SqlitePool,
    queue: WriteQueue,
    stop: Arc<tokio::sync::Notify>,
) {
    let mut connection: Option<SqliteConnection> = None;
    let mut rounds = Rounds::new();
    // When this process's writers were last seen done, not counting the
    // restarts' own turns.
    let mut seen = queue.last_write();
    while rounds.next(&pool, Some(&stop)).await {
        let conn = match &mut connection {
            Some(conn) => Ok(conn),
            None => open(&pool).await.map(|conn| connection.insert(conn)),
        };
        let wrote = queue.last_write() != seen;
        let result = match conn {
            Ok(conn) => checkpoint_then_restart(conn, &queue, wrote).await,
            Err(error) => Err(error),
        };
        seen = queue.last_write();
        if result.is_err() {
            // Opened afresh next round.
            connection = None;
        }
        if !rounds.done(&pool, result) {
            break;
        }
    }
    if let Some(conn) = connection
        && let Err(error) = conn.close().await
    {
        tracing::warn!(%error, "closing the SQLite checkpoints' connection failed");
    }
}

/// A connection like `pool`'s, waiting in its busy handler for [`RESTART_WAIT`].
async fn open(pool: &SqlitePool) -> Result<SqliteConnection, sqlx::Error> {
    let mut conn = SqliteConnection::connect_with(&pool.connect_options()).await?;
    crate::busy::install(&mut conn, RESTART_WAIT).await?;
    Ok(conn)
}

/// One round: a `PASSIVE` copy, then a `RESTART` in the write turn if the log
/// has grown past [`RESTART_AFTER_FRAMES`] and this process `wrote` since the
/// last round. A process that is not writing leaves the restart to those that
/// are: they wait for it in their own queue, where this one's would have them
/// wait for the lock in SQLite's busy handler.
async fn checkpoint_then_restart(
    conn: &mut SqliteConnection,
    queue: &WriteQueue,
    wrote: bool,
) -> Result<(), sqlx::Error> {
    let started = std::time::Instant::now();
    let passive = checkpoint(conn, Mode::Passive).await?;
    if wrote && passive.frames > RESTART_AFTER_FRAMES {
        let (last, catch_ups) = catch_up(conn, passive).await?;
        let copied = started.elapsed();
        let turn = queue.foreground().await;
        let waited = started.elapsed() - copied;
        let restart = checkpoint(conn, Mode::Restart).await?;
        drop(turn);
        tracing::debug!(
            frames = passive.frames,
            catch_ups,
            left = last.frames - last.copied,
            restarted = restart.done,
            ?copied,
            ?waited,
            held = ?(started.elapsed() - copied - waited),
            "SQLite log restart"
        );
    }
    Ok(())
}

/// `PASSIVE` copies after `copy`, each of what came in during the one before,
/// until one finds at most [`CAUGHT_UP_FRAMES`] new or [`CATCH_UP_ROUNDS`] are
/// made; the last copy and how many were made. Under a steady stream of
/// writes a copy mostly finds less new than the one before (measured: 1–6 of
/// them, 2–53 ms in all, outside the turn), and what is left for the restart
/// to copy while the writers wait is what came in during the last one and the
/// wait for the turn.
async fn catch_up(
    conn: &mut SqliteConnection,
    mut copy: Checkpoint,
) -> Result<(Checkpoint, u32), sqlx::Error> {
    for made in 1..=CATCH_UP_ROUNDS {
        let again = checkpoint(conn, Mode::Passive).await?;
        // Negative if the log started over meanwhile, or if this copy gave
        // way to another connection's: nothing to catch up with either way.
        let came_in = again.frames - copy.frames;
        copy = again;
        if came_in <= CAUGHT_UP_FRAMES {
            return Ok((copy, made));
        }
    }
    Ok((copy, CATCH_UP_ROUNDS))
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    Passive,
    Restart,
}

/// What a checkpoint did.
#[derive(Clone, Copy)]
struct Checkpoint {
    /// Whether it went all the way (a `RESTART`: the log may start over).
    done: bool,
    /// Frames in the log.
    frames: i64,
    /// Frames copied into the database, by this checkpoint or earlier ones.
    copied: i64,
}

/// Runs a checkpoint on `conn`. One connection at a time can: while another's
/// runs (another process's rounds; SQLite does not wait for it even with a
/// busy handler), tried again every millisecond for up to [`RESTART_WAIT`]
/// rather than left to the next round, while the log grows. (Rounds come at
/// random, so the next is unlikely to meet the same other's again.)
async fn checkpoint(conn: &mut SqliteConnection, mode: Mode) -> Result<Checkpoint, sqlx::Error> {
    let sql = match mode {
        Mode::Passive => "PRAGMA wal_checkpoint(PASSIVE)",
        Mode::Restart => "PRAGMA wal_checkpoint(RESTART)",
    };
    let deadline = std::time::Instant::now() + RESTART_WAIT;
    loop {
        // (busy, frames in the log, frames copied); busy with counts of -1
        // while another connection's checkpoint runs (counts of -1 alone: not
        // in WAL mode, nothing to wait for).
        let (busy, frames, copied): (i64, i64, i64) =
            sqlx::query_as(sql).fetch_one(&mut *conn).await?;
        let another_runs = busy != 0 && frames < 0;
        let gave_way = another_runs && std::time::Instant::now() >= deadline;
        if gave_way {
            tracing::debug!(?mode, "SQLite checkpoint gave way to another connection's");
        }
        if !another_runs || gave_way {
            return Ok(Checkpoint {
                done: busy == 0,
                frames,
                copied,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Rounds of checkpoints every [`CHECKPOINT_EVERY`] (± a quarter, at
/// random), until the pool closes or they are told to stop.
///
/// A round that keeps failing (a full disk, say) is logged when it starts
/// failing, then at most once per [`FAILURE_REMINDER`], and once more when
/// rounds succeed again: not ten warnings a second.
struct Rounds {
    /// When the next round starts; the first at once.
    at: tokio::time::Instant,
    failures: Failures,
}

impl Rounds {
    fn new() -> Self {
        Self {
            at: tokio::time::Instant::now(),
            failures: Failures::default(),
        }
    }

    /// Waits for the next round; false if there is none (`pool` closed,
    /// `stop` told).
    async fn next(&mut self, pool: &SqlitePool, stop: Option<&tokio::sync::Notify>) -> bool {
        let stopped = async {
            match stop {
                Some(stop) => stop.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stopped => return false,
            () = tokio::time::sleep_until(self.at) => {}
        }
        // Each process's rounds would otherwise keep the phase they started
        // with, and two whose checkpoints overlap would meet every round.
        let every = CHECKPOINT_EVERY.mul_f64(rand::random_range(0.75..1.25));
        self.at = tokio::time::Instant::now() + every;
        !pool.is_closed()
    }

    /// Logs how a round went; false if it failed because `pool` closed.
    fn done(&mut self, pool: &SqlitePool, result: Result<(), sqlx::Error>) -> bool {
        match result {
            Ok(()) => {
                if let Some(failed) = self.failures.succeeded() {
                    tracing::info!(failed, "SQLite checkpoints succeed again");
                }
            }
            Err(_) if pool.is_closed() => return false,
            Err(error) => {
                if let Some(in_a_row) = self.failures.failed(std::time::Instant::now()) {
                    tracing::warn!(%error, in_a_row, "SQLite checkpoint failed");
                }
            }
        }
        true
    }
}

/// How often a failure that goes on is logged again.
const FAILURE_REMINDER: Duration = Duration::from_secs(60);

/// A run of failures of something retried on a timer, for logging it without
/// flooding the log.
#[derive(Debug, Default)]
struct Failures {
    in_a_row: u64,
    logged_at: Option<std::time::Instant>,
}

impl Failures {
    /// Counts a failure at `now`; `Some(failures in a row)` if it is to be
    /// logged: the first of a run, then one per [`FAILURE_REMINDER`].
    fn failed(&mut self, now: std::time::Instant) -> Option<u64> {
        self.in_a_row += 1;
        let due = self
            .logged_at
            .is_none_or(|at| now.duration_since(at) >= FAILURE_REMINDER);
        due.then(|| {
            self.logged_at = Some(now);
            self.in_a_row
        })
    }

    /// Ends a run; `Some(how many failed)` if there was one.
    fn succeeded(&mut self) -> Option<u64> {
        let failed = std::mem::take(&mut self.in_a_row);
        self.logged_at = None;
        (failed > 0).then_some(failed)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::{
        DbOptions, Pool,
        db::{WriteGate, connect},
    };

    /// Rows of 256 KiB that writes rewrite: each puts 64 pages in the log and
    /// none in the database's size.
    const ROWS: i64 = 16;
    const ROW_BYTES: u64 = 256 * 1024;

    /// A SQLite database in `dir` with [`ROWS`] rows, its pool, the gate of its
    /// writers (with their checkpoints) and the path of its log file.
    async fn database(dir: &tempfile::TempDir) -> (SqlitePool, WriteGate, std::path::PathBuf) {
        let file = dir.path().join("wal.db");
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let pool = connect(&DbOptions::new(url)).await.unwrap();
        let gate = WriteGate::new(&pool);
        let Pool::Sqlite(pool) = pool else {
            unreachable!("a SQLite URL");
        };
        let turn = gate.turn().await;
        turn.db()
            .execute_unprepared(&format!(
                "CREATE TABLE t (id INTEGER PRIMARY KEY, b BLOB NOT NULL); \
                 WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
                 INSERT INTO t SELECT i, zeroblob({ROW_BYTES}) FROM n",
                ROWS - 1
            ))
            .await
            .unwrap();
        drop(turn);
        (pool, gate, dir.path().join("wal.db-wal"))
    }

    /// Rewrites a row in the process's write turn, as every writer of a store does.
    async fn rewrite(gate: &WriteGate, i: u64) {
        let turn = gate.turn().await;
        turn.db()
            .execute_unprepared(&format!(
                "UPDATE t SET b = randomblob({ROW_BYTES}) WHERE id = {}",
                i % ROWS as u64
            ))
            .await
            .unwrap();
    }

    /// Under writes that never pause, and readers that always have the log in
    /// use, the log is still started over: its file stays within twice
    /// [`WAL_SIZE_LIMIT`] (the restart threshold, plus what is written while a
    /// round comes round: 69 MiB seen here) while four times the limit goes
    /// through it. Copying alone (`PASSIVE`) never found a moment to start it
    /// over, and the file grew with everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_log_stays_bounded_under_writes_that_never_pause() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, gate, wal) = database(&dir).await;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (pool, done) = (pool.clone(), done.clone());
                tokio::spawn(async move {
                    while !done.load(std::sync::atomic::Ordering::Relaxed) {
                        let mut read = pool.begin().await.unwrap();
                        let _: i64 = sqlx::query_scalar("SELECT sum(length(b)) FROM t")
                            .fetch_one(&mut *read)
                            .await
                            .unwrap();
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        read.commit().await.unwrap();
                    }
                })
            })
            .collect();

        let writes = 4 * WAL_SIZE_LIMIT / ROW_BYTES;
        let mut largest = 0;
        for i in 0..writes {
            rewrite(&gate, i).await;
            largest = largest.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for reader in readers {
            reader.await.unwrap();
        }
        gate.close().await;
        pool.close().await;

        assert!(
            largest <= 2 * WAL_SIZE_LIMIT,
            "the log file reached {largest} bytes over {} written",
            writes * ROW_BYTES
        );
    }

    /// A reader that keeps the log in use does not hold the writers up: the
    /// restarts that cannot happen while it reads give up and wait for a later
    /// round, and every write goes through while it is still open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_reader_does_not_hold_the_writers_up() {
        let dir = tempfile::tempdir().unwrap();
        let (pool, gate, wal) = database(&dir).await;
        let mut read = pool.begin().await.unwrap();
        let _: i64 = sqlx::query_scalar("SELECT sum(length(b)) FROM t")
            .fetch_one(&mut *read)
            .await
            .unwrap();

        // Twice the restart threshold, written while the reader holds its snapshot.
        let writes = 2 * (RESTART_AFTER_FRAMES as u64) * 4096 / ROW_BYTES;
        let written = tokio::time::timeout(Duration::from_secs(20), async {
            for i in 0..writes {
                rewrite(&gate, i).await;
                // Rounds of checkpoints come and go between the writes.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await;
        let during = std::fs::metadata(&wal).map_or(0, |m| m.len());
        read.commit().await.unwrap();
        assert!(
            written.is_ok(),
            "the writes were held up behind a checkpoint waiting for the reader"
        );
        assert!(
            during > RESTART_AFTER_FRAMES as u64 * 4096,
            "the log should have passed the restart threshold: {during} bytes"
        );

        // Once the reader is done, the next rounds start the log over.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            rewrite(&gate, 0).await;
            let (_, frames, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&pool)
                .await
                .unwrap();
            if frames < RESTART_AFTER_FRAMES {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the log was not started over after the reader finished: {frames} frames"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gate.close().await;
        pool.close().await;
    }

    /// A gate dropped without `close` (a store dropped in a hurry) stops its
    /// checkpoints all the same: their task ends at its next wait, though the
    /// pool it holds a clone of stays open.
    #[tokio::test]
    async fn the_checkpoints_stop_when_their_gate_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("wal.db").display());
        let pool = connect(&DbOptions::new(url)).await.unwrap();
        let tasks = tokio::runtime::Handle::current().metrics();
        let before = tasks.num_alive_tasks();
        let gate = WriteGate::new(&pool);
        assert_eq!(tasks.num_alive_tasks(), before + 1, "the checkpoints run");
        // A few rounds, so the task is caught between two.
        tokio::time::sleep(3 * CHECKPOINT_EVERY).await;

        drop(gate);
        let deadline = tokio::time::Instant::now() + 10 * CHECKPOINT_EVERY;
        while tasks.num_alive_tasks() > before {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the checkpoints still run after their gate was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Only now does the pool close.
        pool.close().await;
    }

    /// A run of failures is logged at its start, then once a minute, and its
    /// end is reported with its length; the next run starts afresh.
    #[test]
    fn a_run_of_failures_is_logged_at_its_start_then_once_a_minute() {
        let start = std::time::Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        let mut failures = Failures::default();
        assert_eq!(failures.succeeded(), None, "no run, nothing to report");
        assert_eq!(failures.failed(at(0)), Some(1));
        assert_eq!(failures.failed(at(100)), None);
        assert_eq!(failures.failed(at(59_999)), None);
        assert_eq!(failures.failed(at(60_000)), Some(4));
        assert_eq!(failures.failed(at(60_100)), None);
        assert_eq!(failures.succeeded(), Some(5));
        assert_eq!(failures.failed(at(60_200)), Some(1), "a new run");
    }

    /// Rounds come every [`CHECKPOINT_EVERY`] ± a quarter, not in step: two
    /// processes' rounds that started together drift apart instead of meeting
    /// every time, and no gap is more than a quarter off.
    #[tokio::test(start_paused = true)]
    async fn rounds_come_at_random_within_a_quarter_of_the_interval() {
        let pool = SqlitePool::connect_lazy("sqlite::memory:").unwrap();
        let mut one = Rounds::new();
        let mut other = Rounds::new();
        assert!(one.next(&pool, None).await && other.next(&pool, None).await);
        let (low, high) = (CHECKPOINT_EVERY * 3 / 4, CHECKPOINT_EVERY * 5 / 4);
        let mut gaps = Vec::new();
        for _ in 0..50 {
            let before = tokio::time::Instant::now();
            assert!(one.next(&pool, None).await);
            let gap = before.elapsed();
            assert!(low <= gap && gap <= high, "a round {gap:?} after the last");
            gaps.push(gap);
        }
        gaps.sort();
        assert!(
            gaps[gaps.len() - 1] - gaps[0] >= CHECKPOINT_EVERY / 4,
            "rounds in step: gaps from {:?} to {:?}",
            gaps[0],
            gaps[gaps.len() - 1]
        );
        assert_ne!(
            one.at, other.at,
            "two processes' next rounds at the same moment"
        );
    }
}

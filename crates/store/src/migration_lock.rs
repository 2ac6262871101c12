//! One process at a time migrates a database.

use std::{
    ffi::OsString,
    fs::{File, TryLockError},
    path::PathBuf,
    pin::pin,
    time::Duration,
};

use sqlx::{
    Connection,
    postgres::{PgConnection, PgPool},
    sqlite::SqlitePool,
};

use crate::{Pool, Store, StoreError};

/// The key of the PostgreSQL advisory lock migrations are applied under
/// ("released" in ASCII). Advisory locks are per database.
const ADVISORY_KEY: i64 = i64::from_be_bytes(*b"released");

/// How often a process waiting for the migration lock says it still is: a
/// migration that long is rare, and one process stuck while holding the lock
/// holds up every other's start.
const STILL_WAITING_EVERY: Duration = Duration::from_secs(30);

/// What a process that has to wait for the lock logs, once, and then every
/// [`STILL_WAITING_EVERY`] (both kinds of lock say the same).
const WAITING: &str = "another process is migrating the database; waiting for it";
const STILL_WAITING: &str = "still waiting for the migration lock, held by another process";

/// Held while this process applies migrations, so that processes starting
/// together against one database (replicas of `api`, a `worker` beside them)
/// take turns: the first applies what is pending, the others wait for it and
/// then find nothing to do. Without it each saw the same migrations pending
/// and all but one failed on a table or a `seaql_migrations` row the first
/// had just made.
///
/// PostgreSQL: a session advisory lock ([`ADVISORY_KEY`]) on a connection of
/// its own, outside the pool, so that no pooled connection keeps it; the
/// server lets go when that connection closes, with the lock or the process.
/// SQLite: an exclusive lock on a file beside the database,
/// `<database>-migrations.lock` (kept, like SQLite's own `-wal` and `-shm`),
/// which the kernel lets go with the file or the process. An in-memory SQLite
/// database, which no other process can open, takes none.
pub struct MigrationLock {
    held: Held,
}

enum Held {
    Postgres(PgConnection),
    File(#[expect(dead_code, reason = "held for its lock; closing it lets go")] File),
    Nothing,
}

impl Store {
    /// Waits for the database's migration lock and takes it. Hold it across
    /// [`Store::migrate`] and whatever else the process sets up in the
    /// database (the job queue's tables), then [`MigrationLock::release`] it.
    pub async fn lock_migrations(&self) -> Result<MigrationLock, StoreError> {
        MigrationLock::take(self.pool()).await
    }

    /// The PostgreSQL backend (its process id) holding the database's
    /// migration lock, if one does. `None` on SQLite, whose file lock names
    /// no holder.
    pub async fn migration_lock_holder(&self) -> Result<Option<i32>, StoreError> {
        match self.pool() {
            Pool::Postgres(pool) => postgres_holder(pool).await,
            Pool::Sqlite(_) => Ok(None),
        }
    }
}

impl MigrationLock {
    async fn take(pool: &Pool) -> Result<Self, StoreError> {
        let held = match pool {
            Pool::Postgres(pool) => Held::Postgres(lock_postgres(pool).await?),
            Pool::Sqlite(pool) => match database_file(pool).await? {
                Some(database) => Held::File(lock_file(lock_path(database)).await?),
                None => Held::Nothing,
            },
        };
        Ok(Self { held })
    }

    /// Lets go of the lock. Dropping it does too; this also says goodbye to
    /// PostgreSQL instead of just closing the socket.
    pub async fn release(self) {
        if let Held::Postgres(connection) = self.held {
            // The server drops a session's advisory locks however it ends.
            let _ = connection.close().await;
        }
    }
}

async fn lock_postgres(pool: &PgPool) -> Result<PgConnection, StoreError> {
    let mut connection = PgConnection::connect_with(&pool.connect_options())
        .await
        .map_err(StoreError::from_sqlx)?;
    let taken: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(ADVISORY_KEY)
        .fetch_one(&mut connection)
        .await
        .map_err(StoreError::from_sqlx)?;
    if !taken {
        tracing::info!("{WAITING}");
        let wait = sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ADVISORY_KEY)
            .execute(&mut connection);
        reporting(wait, STILL_WAITING_EVERY, |waited| {
            let pool = pool.clone();
            async move {
                // Who holds it, for `pg_stat_activity` (and `pg_terminate_backend`
                // if it is stuck); asked on the pool, this connection is waiting.
                let holder = postgres_holder(&pool).await.ok().flatten();
                tracing::warn!(
                    waited_s = waited.as_secs(),
                    holder_pid = holder,
                    "{STILL_WAITING}"
                );
            }
        })
        .await
        .map_err(StoreError::from_sqlx)?;
    }
    Ok(connection)
}

/// The backend holding [`ADVISORY_KEY`] in this database. PostgreSQL shows a
/// bigint advisory key as its high half in `classid` and its low in `objid`.
async fn postgres_holder(pool: &PgPool) -> Result<Option<i32>, StoreError> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND objsubid = 1 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
           AND (classid::bigint << 32) | objid::bigint = $1",
    )
    .bind(ADVISORY_KEY)
    .fetch_optional(pool)
    .await
    .map_err(StoreError::from_sqlx)
}

/// Runs `wait` to its end, calling `still` with the time waited so far each
/// time another `every` has gone by.
async fn reporting<T, F: Future<Output = ()>>(
    wait: impl Future<Output = T>,
    every: Duration,
    mut still: impl FnMut(Duration) -> F,
) -> T {
    let started = tokio::time::Instant::now();
    let mut wait = pin!(wait);
    let mut ticks = tokio::time::interval_at(started + every, every);
    loop {
        tokio::select! {
            done = &mut wait => return done,
            _ = ticks.tick() => still(started.elapsed()).await,
        }
    }
}

/// The file of a SQLite pool's main database, as SQLite resolved it; `None`
/// for a database in memory (SQLite names no file).
async fn database_file(pool: &SqlitePool) -> Result<Option<PathBuf>, StoreError> {
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .map_err(StoreError::from_sqlx)?;
    Ok((!file.is_empty()).then(|| PathBuf::from(file)))
}

fn lock_path(database: PathBuf) -> PathBuf {
    let mut name = OsString::from(database);
    name.push("-migrations.lock");
    PathBuf::from(name)
}

async fn lock_file(path: PathBuf) -> Result<File, StoreError> {
    let failed = |error: std::io::Error| StoreError::MigrationLock {
        path: path.display().to_string(),
        message: error.to_string(),
    };
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(failed)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(TryLockError::WouldBlock) => tracing::info!(
            lock = %path.display(),
            "{WAITING}"
        ),
        Err(TryLockError::Error(error)) => return Err(failed(error)),
    }
    let wait = tokio::task::spawn_blocking(move || file.lock().map(|()| file));
    let waited = reporting(wait, STILL_WAITING_EVERY, |waited| {
        tracing::warn!(
            waited_s = waited.as_secs(),
            lock = %path.display(),
            "{STILL_WAITING}"
        );
        std::future::ready(())
    })
    .await;
    match waited {
        Ok(locked) => locked.map_err(failed),
        Err(join) => Err(failed(std::io::Error::other(join))),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{DbOptions, connect};

    async fn pool(url: &str) -> Pool {
        connect(&DbOptions::new(url.to_owned())).await.unwrap()
    }

    #[tokio::test]
    async fn a_second_pool_on_the_file_waits_for_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("r.db").display());
        let (first, second) = (pool(&url).await, pool(&url).await);

        let held = MigrationLock::take(&first).await.unwrap();
        assert!(dir.path().join("r.db-migrations.lock").is_file());
        let mut waiting = tokio::spawn(async move { MigrationLock::take(&second).await });
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut waiting)
                .await
                .is_err(),
            "took the migration lock while another pool held it"
        );
        held.release().await;
        let taken = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("still waiting after the lock was released");
        taken.unwrap().unwrap().release().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_wait_is_reported_every_period_until_it_ends() {
        let mut reports = Vec::new();
        let waited = reporting(
            async {
                tokio::time::sleep(Duration::from_secs(95)).await;
                "taken"
            },
            Duration::from_secs(30),
            |waited| {
                reports.push(waited.as_secs());
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(waited, "taken");
        assert_eq!(reports, [30, 60, 90]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_short_wait_is_not_reported() {
        let mut reports = 0;
        reporting(
            tokio::time::sleep(Duration::from_secs(29)),
            Duration::from_secs(30),
            |_| {
                reports += 1;
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(reports, 0);
    }

    #[tokio::test]
    async fn a_database_in_memory_takes_no_lock() {
        let memory = pool("sqlite::memory:").await;
        let first = MigrationLock::take(&memory).await.unwrap();
        let second = MigrationLock::take(&memory).await.unwrap();
        assert!(matches!(first.held, Held::Nothing));
        assert!(matches!(second.held, Held::Nothing));
    }
}

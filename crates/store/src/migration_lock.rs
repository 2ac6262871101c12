//! One process at a time migrates a database.

use std::{
    ffi::OsString,
    fs::{File, TryLockError},
    path::PathBuf,
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
        tracing::info!("another process is migrating the database; waiting for it");
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(ADVISORY_KEY)
            .execute(&mut connection)
            .await
            .map_err(StoreError::from_sqlx)?;
    }
    Ok(connection)
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
            "another process is migrating the database; waiting for it"
        ),
        Err(TryLockError::Error(error)) => return Err(failed(error)),
    }
    let waited = tokio::task::spawn_blocking(move || file.lock().map(|()| file)).await;
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

    #[tokio::test]
    async fn a_database_in_memory_takes_no_lock() {
        let memory = pool("sqlite::memory:").await;
        let first = MigrationLock::take(&memory).await.unwrap();
        let second = MigrationLock::take(&memory).await.unwrap();
        assert!(matches!(first.held, Held::Nothing));
        assert!(matches!(second.held, Held::Nothing));
    }
}

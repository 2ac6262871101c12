//! A fresh database per run: a temporary SQLite file, or a PostgreSQL database
//! `releasedesk_bench_<uuid>` that is dropped afterwards.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use releasedesk_store::{Backend, DbOptions, Pool};
use sqlx::{Connection, PgConnection};

/// Which database a stage runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

impl Db {
    pub fn label(self) -> &'static str {
        match self {
            Db::Sqlite => "SQLite",
            Db::Postgres => "PostgreSQL",
        }
    }

    pub fn backend(self) -> Backend {
        match self {
            Db::Sqlite => Backend::Sqlite,
            Db::Postgres => Backend::Postgres,
        }
    }
}

/// The emails of a run go to memory (`/dev/shm`) where there is one: a release
/// sends two, and creating files on this machine's ext4 (an inode allocator
/// scanning for free inodes among many recently deleted ones) cost more CPU than
/// the release itself in profiles. Production sends over SMTP; the database
/// files stay on disk.
fn mail_dir() -> std::io::Result<tempfile::TempDir> {
    let builder = {
        let mut b = tempfile::Builder::new();
        b.prefix("releasedesk-bench-mail-");
        b
    };
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return Ok(dir);
    }
    builder.tempdir()
}

/// One fresh database and a scratch directory (mail, logs) that go with it.
#[derive(Debug)]
pub struct FreshDb {
    pub db: Db,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// Where the processes under test write their emails (`.eml` files).
    pub mail: tempfile::TempDir,
    admin_url: String,
    pg_name: Option<String>,
}

impl FreshDb {
    pub async fn create(db: Db, admin_url: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("releasedesk-bench-")
            .tempdir()
            .context("create a scratch directory")?;
        let mail = mail_dir().context("create a directory for the emails")?;
        let (url, pg_name) = match db {
            Db::Sqlite => (
                format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("bench.db").display()
                ),
                None,
            ),
            Db::Postgres => {
                let name = format!("releasedesk_bench_{}", uuid::Uuid::new_v4().simple());
                let mut conn = PgConnection::connect(admin_url)
                    .await
                    .with_context(|| format!("connect to PostgreSQL at {admin_url}"))?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .context("create the benchmark database")?;
                conn.close().await.ok();
                (replace_database(admin_url, &name), Some(name))
            }
        };
        Ok(Self {
            db,
            url,
            dir,
            mail,
            admin_url: admin_url.to_owned(),
            pg_name,
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn mail_dir(&self) -> &Path {
        self.mail.path()
    }

    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The name pgbench connects to.
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// A pool with the application's own settings (pragmas, timeouts).
    pub async fn pool(&self, max_connections: u32) -> Result<Pool> {
        let mut options = DbOptions::new(self.url.clone());
        options.max_connections = max_connections;
        releasedesk_store::connect(&options)
            .await
            .context("connect to the benchmark database")
    }

    /// A pool like [`FreshDb::pool`] for writers without a store (a store
    /// checkpoints its database): SQLite's log copied into the database in
    /// the background as the store does, though never started over under load.
    pub async fn pool_without_store(&self, max_connections: u32) -> Result<Pool> {
        let pool = self.pool(max_connections).await?;
        if let Pool::Sqlite(pool) = &pool {
            tokio::spawn(releasedesk_store::checkpoint_wal(pool.clone()));
        }
        Ok(pool)
    }

    pub async fn drop_database(self) {
        if let Some(name) = &self.pg_name {
            match PgConnection::connect(&self.admin_url).await {
                Ok(mut conn) => {
                    let dropped = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    if let Err(error) = dropped {
                        eprintln!("warning: could not drop database {name}: {error}");
                    }
                }
                Err(error) => eprintln!("warning: could not drop database {name}: {error}"),
            }
        }
    }
}

/// `postgres://user@host:port/db?x` with `db` replaced by `name`.
pub fn replace_database(url: &str, name: &str) -> String {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let prefix_end = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[prefix_end..]
        .find('/')
        .map_or(base.len(), |i| prefix_end + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// The benchmark's own SQL, built from constants and numbers, never from input.
pub fn safe(sql: &str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.to_owned())
}

/// Runs statements that return nothing.
pub async fn exec(pool: &Pool, sql: &str) -> Result<u64> {
    let done = match pool {
        Pool::Sqlite(p) => sqlx::raw_sql(safe(sql)).execute(p).await?.rows_affected(),
        Pool::Postgres(p) => sqlx::raw_sql(safe(sql)).execute(p).await?.rows_affected(),
    };
    Ok(done)
}

/// One integer (a count).
pub async fn scalar(pool: &Pool, sql: &str) -> Result<i64> {
    let value = match pool {
        Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(safe(sql)).fetch_one(p).await?,
        Pool::Postgres(p) => sqlx::query_scalar::<_, i64>(safe(sql)).fetch_one(p).await?,
    };
    Ok(value)
}

/// Polls `sql` (one integer) every `every` until `done` holds of its value, which
/// it returns; an error if that takes longer than `within`.
pub async fn poll_scalar(
    pool: &Pool,
    sql: &str,
    every: Duration,
    within: Duration,
    done: impl Fn(i64) -> bool,
) -> Result<i64> {
    let deadline = Instant::now() + within;
    loop {
        let value = scalar(pool, sql).await?;
        if done(value) {
            return Ok(value);
        }
        if Instant::now() > deadline {
            bail!("{value} after {within:?}: {sql}");
        }
        tokio::time::sleep(every).await;
    }
}

/// Brings the database to rest after a setup's bulk writes, so that a drain
/// measured next starts as a production database would, not behind the
/// setup's backlog of disk writes: SQLite's write-ahead log (over a gigabyte
/// after filing and approving 10,000 requests one by one) copied into the
/// database and truncated, PostgreSQL checkpointed. Without it the drain met
/// that backlog's writeback and checkpoints at random moments.
pub async fn settle(pool: &Pool) -> Result<()> {
    match pool {
        Pool::Sqlite(p) => {
            // (busy, log frames, frames checkpointed); busy while another
            // connection's checkpoint runs, so tried again.
            for _ in 0..100 {
                let (busy, _, _): (i64, i64, i64) =
                    sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                        .fetch_one(p)
                        .await?;
                if busy == 0 {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            bail!("SQLite's write-ahead log could not be checkpointed")
        }
        Pool::Postgres(p) => {
            // Needs a superuser or `pg_checkpoint`; without, the drain runs unsettled.
            if let Err(error) = sqlx::query("CHECKPOINT").execute(p).await {
                eprintln!("warning: no CHECKPOINT before the drain: {error}");
            }
            Ok(())
        }
    }
}

/// One text value.
pub async fn text(pool: &Pool, sql: &str) -> Result<String> {
    let value = match pool {
        Pool::Sqlite(p) => {
            sqlx::query_scalar::<_, String>(safe(sql))
                .fetch_one(p)
                .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_scalar::<_, String>(safe(sql))
                .fetch_one(p)
                .await?
        }
    };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            replace_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            replace_database("postgres://u@h/postgres?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
        assert_eq!(replace_database("postgres://u@h", "x"), "postgres://u@h/x");
    }
}

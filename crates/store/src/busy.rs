//! SQLite's busy handler, polling in short steps.
//!
//! A connection that finds SQLite's one write lock taken waits in its busy
//! handler. SQLite's own (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25 ms and
//! then up to 100 ms between polls, so a writer that meets the lock sleeps on
//! long after it frees; our own writers queue in-process instead (see
//! [`crate::db::begin_write`]), but apalis's statements on the pool and other
//! processes' writers still meet it. This handler polls every 50 µs at first,
//! growing to 2 ms, and gives up (SQLITE_BUSY) after the same timeout.

#![allow(unsafe_code)]

use std::{ffi::c_void, os::raw::c_int, time::Duration};

use sqlx::sqlite::SqliteConnection;

/// The first polls' sleeps, in µs; then [`LAST_US`] each.
const STEPS_US: [u64; 24] = [
    50, 50, 50, 50, 100, 100, 100, 100, 200, 200, 200, 200, 400, 400, 400, 400, 800, 800, 800, 800,
    1_600, 1_600, 1_600, 1_600,
];
const LAST_US: u64 = 2_000;

/// How long the waits before poll `count` took, in µs.
fn waited_us(count: u64) -> u64 {
    let steps = STEPS_US.len() as u64;
    if count <= steps {
        STEPS_US[..count as usize].iter().sum()
    } else {
        STEPS_US.iter().sum::<u64>() + (count - steps) * LAST_US
    }
}

/// The sleep before poll `count + 1`.
fn step_us(count: u64) -> u64 {
    STEPS_US.get(count as usize).copied().unwrap_or(LAST_US)
}

/// Called by SQLite on the connection's thread each time it finds the lock
/// taken; `data` is the timeout in µs (not a pointer). Returns 0 to give up.
extern "C" fn poll(data: *mut c_void, count: c_int) -> c_int {
    let timeout_us = data.addr() as u64;
    let count = u64::try_from(count).unwrap_or(0);
    if waited_us(count) >= timeout_us {
        return 0;
    }
    std::thread::sleep(Duration::from_micros(step_us(count)));
    1
}

/// Replaces `conn`'s busy handler (and so its `busy_timeout`) with [`poll`],
/// giving up after `timeout`.
pub(crate) async fn install(
    conn: &mut SqliteConnection,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    let timeout_us = usize::try_from(timeout.as_micros()).unwrap_or(usize::MAX);
    let mut handle = conn.lock_handle().await?;
    let db = handle.as_raw_handle().as_ptr();
    // SAFETY: `db` is the open connection `handle` keeps locked for this call;
    // `poll` never dereferences its data, an integer passed as a pointer.
    let rc = unsafe {
        libsqlite3_sys::sqlite3_busy_handler(
            db,
            Some(poll),
            std::ptr::without_provenance_mut(timeout_us),
        )
    };
    if rc == libsqlite3_sys::SQLITE_OK {
        Ok(())
    } else {
        Err(sqlx::Error::Protocol(format!(
            "sqlite3_busy_handler failed: {rc}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, query, query_scalar};

    use super::*;
    use crate::{DbOptions, Pool};

    #[test]
    fn the_waits_add_up_to_the_steps_then_grow_by_the_last() {
        assert_eq!(waited_us(0), 0);
        assert_eq!(waited_us(1), 50);
        assert_eq!(waited_us(4), 200);
        let first: u64 = STEPS_US.iter().sum();
        assert_eq!(waited_us(24), first);
        assert_eq!(waited_us(26), first + 2 * LAST_US);
        assert_eq!(step_us(0), 50);
        assert_eq!(step_us(23), 1_600);
        assert_eq!(step_us(100), LAST_US);
    }

    /// The pool's connections wait in [`poll`] (SQLite reports a busy
    /// timeout of 0 once another handler is set): a writer meeting the lock
    /// gives up with "database is locked" at the configured timeout, and gets
    /// the lock once its holder lets go.
    #[tokio::test]
    async fn a_writer_waits_for_the_lock_until_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("busy.db").display());
        let options = DbOptions {
            busy_timeout: Duration::from_millis(200),
            ..DbOptions::new(url)
        };
        let Pool::Sqlite(pool) = crate::db::connect(&options).await.unwrap() else {
            unreachable!("a SQLite URL");
        };
        let mut holder = pool.acquire().await.unwrap();
        let mut waiter = pool.acquire().await.unwrap();
        let timeout: i64 = query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *waiter)
            .await
            .unwrap();
        assert_eq!(timeout, 0, "SQLite's own handler is still set");
        query("CREATE TABLE t (x)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let mut lock = holder.begin_with("BEGIN IMMEDIATE").await.unwrap();

        let insert = |x: i64| query("INSERT INTO t VALUES (?)").bind(x);
        let gave_up =
            tokio::time::timeout(Duration::from_secs(10), insert(1).execute(&mut *waiter))
                .await
                .expect("the handler gives up at the timeout");
        let error = gave_up.unwrap_err();
        assert!(error.to_string().contains("database is locked"), "{error}");

        let waits = tokio::spawn(async move { insert(2).execute(&mut *waiter).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        insert(3).execute(&mut *lock).await.unwrap();
        lock.commit().await.unwrap();
        let written = waits.await.unwrap().unwrap();
        assert_eq!(written.rows_affected(), 1);
        let rows: i64 = query_scalar("SELECT count(*) FROM t")
            .fetch_one(&mut *holder)
            .await
            .unwrap();
        assert_eq!(rows, 2);
    }
}

//! Races resolve in the database: exactly one winner, no "database is locked".

use std::{collections::HashMap, time::Duration};

use futures::future::join_all;
use releasedesk_domain::{DomainError, Reason};
use releasedesk_store::{
    Actor, FILING_BATCH_METRIC, INSERT_FILINGS, PageRequest, QueueFilter, StoreError,
    TOKEN_LOOKUP_BATCH_METRIC, TokenRef,
};
use releasedesk_tests::{TestApp, assert_error, backend_tests, eventually};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::operations::Committed;

backend_tests!(
    thirty_concurrent_duplicate_requests_give_exactly_one_201,
    thirty_two_concurrent_writers_all_succeed,
    filings_that_wait_together_commit_together_each_with_its_own_answer,
    groups_look_their_ids_up_rather_than_walk_a_status,
    the_outbox_backlog_and_claims_read_no_sent_history,
);

/// PostgreSQL: a filing that the group's statement left out (its number had
/// an open request) but that the read just after finds allowed (that request
/// was cancelled in between) is filed again, alone, and answered 201, not 409
/// from what the statement saw. The race is made certain by a trigger that
/// cancels the open request at the end of the statement, after its checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_left_out_for_a_request_cancelled_meanwhile_is_filed_again() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    let first = app.file_request(&acme, number).await;
    let first_id = first["id"].as_str().unwrap();
    app.execute(&format!(
        "CREATE FUNCTION cancel_the_first() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             UPDATE release_requests SET status = 'cancelled' \
             WHERE id = '{first_id}' AND status = 'pending'; \
             RETURN NULL; END $$"
    ))
    .await;
    app.execute(
        "CREATE TRIGGER cancel_the_first AFTER INSERT ON release_requests \
         FOR EACH STATEMENT EXECUTE FUNCTION cancel_the_first()",
    )
    .await;

    let (status, body) = app
        .request_release(&acme, number, "Filed again once the first was cancelled.")
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_ne!(body["data"]["id"], first["id"]);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM release_requests \
             WHERE phone_number_id = '{number}' AND status = 'pending'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) FROM release_requests \
             WHERE id = '{first_id}' AND status = 'cancelled'"
        ))
        .await,
        1
    );
}

/// On PostgreSQL a full group of filings starts beside the group in flight
/// instead of waiting for it (two INSERTs wait on the held table at once), and a
/// number filed in both groups is still filed once: the unique index on open
/// requests refuses the later INSERT, whose group is retried one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_number_filed_in_two_groups_in_flight_is_filed_once() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let acme = app.customer().await;
    let contested = app.number(&acme).await;
    let mut fresh = Vec::new();
    for _ in 0..16 {
        fresh.push(app.number(&acme).await);
    }

    let hold = app.hold_writes_to("release_requests").await;
    let alone = app.request_release(&acme, contested, "Filed first, in a group of one.");
    let burst = async {
        // The group of one waits on the held table before the burst queues.
        filing_inserts_waiting(&app, 1, "the group of one").await;
        let mut targets = fresh.clone();
        targets.push(contested);
        join_all(targets.iter().map(|number| {
            let (app, acme) = (&app, &acme);
            async move {
                app.request_release(acme, *number, "Filed in the full group.")
                    .await
            }
        }))
        .await
    };
    let release = async {
        let mut waiting = 0;
        for _ in 0..500 {
            waiting = app.count(&waiting_filing_inserts()).await;
            if waiting == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        hold.release().await;
        waiting
    };
    let (alone, burst, waiting) = tokio::join!(alone, burst, release);

    assert_eq!(waiting, 2, "the full group did not start beside the first");
    let (ours, [again]) = burst.split_at(fresh.len()) else {
        panic!("{burst:?}");
    };
    for (status, body) in ours {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
    }
    assert_filed_once(&alone, again);
    let filed = fresh.len() as i64 + 1;
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_requests").await,
        filed
    );
    assert_eq!(app.count("SELECT COUNT(*) FROM outbox").await, 2 * filed);
}

/// Counts the filing statements (`INSERT_FILINGS`) of this database waiting on
/// a lock.
fn waiting_filing_inserts() -> String {
    let first_line = INSERT_FILINGS.lines().next().unwrap_or_default();
    format!(
        "SELECT COUNT(*) FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock' \
         AND query LIKE '{first_line}%'"
    )
}

/// Waits until `n` filing INSERTs (`what`) wait on the held table.
async fn filing_inserts_waiting(app: &TestApp, n: i64, what: &str) {
    eventually(
        &format!("{what} to wait on the held table"),
        Duration::from_secs(10),
        async || (app.count(&waiting_filing_inserts()).await >= n).then_some(()),
    )
    .await;
}

/// Of two filings for one number, one was filed (201) and the other refused
/// (409), in either order.
fn assert_filed_once(a: &(StatusCode, serde_json::Value), b: &(StatusCode, serde_json::Value)) {
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{a:?} {b:?}"
    );
}

/// Two processes file one number at the same moment, each a group of one: both
/// reads find the number free, both INSERTs wait on the held table, and the
/// later one meets the unique index on open requests. That is the number's open
/// request (`RELEASE_ALREADY_PENDING`), not a failure of the database: the
/// refusal is told by the index the violation names, since a filing's other
/// unique keys (ids, the emails' dedup keys) are new and never collide.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filing_that_loses_its_insert_to_another_process_is_refused_as_pending() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let acme = app.customer().await;
    let contested = app.number(&acme).await;
    let other_process = releasedesk::open_store(&app.settings).await.unwrap();

    let hold = app.hold_writes_to("release_requests").await;
    let here = app.request_release(&acme, contested, "Filed through this process.");
    let there = async {
        filing_inserts_waiting(&app, 1, "this process's INSERT").await;
        let reason = Reason::parse("Filed through the other process.").unwrap();
        let actor = Actor::Customer(acme.account_id);
        other_process
            .file_request(acme.account_id, contested, reason, actor)
            .await
    };
    let release = async {
        filing_inserts_waiting(&app, 2, "both processes' INSERTs").await;
        hold.release().await;
    };
    let ((status, body), there, ()) = tokio::join!(here, there, release);

    // Both INSERTs go on together once the table is free: either may lose.
    let refused_there = matches!(
        there,
        Err(StoreError::Domain(DomainError::ReleaseAlreadyPending))
    );
    match status {
        StatusCode::CREATED => assert!(refused_there, "{there:?}"),
        _ => {
            assert_error(
                status,
                &body,
                StatusCode::CONFLICT,
                "RELEASE_ALREADY_PENDING",
            );
            assert!(there.is_ok(), "{there:?}");
        }
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 1);
    other_process.close().await;
}

/// PostgreSQL plans each statement for its parameters on the store's
/// connections: a generic plan cached while a table was small (a sequential
/// scan) would otherwise outlive the table's growth until the next ANALYZE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_plan_each_statement_for_its_parameters() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let releasedesk_store::Pool::Postgres(pool) = app.store.pool() else {
        panic!("a PostgreSQL app without a PostgreSQL pool");
    };
    let mode: String = sqlx::query_scalar("SHOW plan_cache_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(mode, "force_custom_plan");
}

/// The filing writer's PostgreSQL sessions cache their plans; a plan made
/// while the tables were nearly empty must still find rows by key once they
/// have grown. Statistics are taken on a near-empty database (as autovacuum's
/// first analyze would take them, and nothing analyses again here), then a
/// store files one request at a time while the numbers and requests grow: no
/// filing may scan `release_requests`, `phone_numbers` or `accounts` (the
/// group's read and the foreign-key checks of its INSERT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filings_find_rows_by_key_in_tables_grown_since_they_were_analysed() {
    const FILINGS: i64 = 200;
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let acme = app.customer().await;
    app.number(&acme).await;
    app.execute("ANALYZE").await;
    app.bulk_numbers_postgres(acme.account_id, 2_000).await;
    let numbers: Vec<Uuid> = {
        let releasedesk_store::Pool::Postgres(pool) = app.store.pool() else {
            panic!("a PostgreSQL app without a PostgreSQL pool");
        };
        sqlx::query_scalar("SELECT id FROM phone_numbers ORDER BY e164 LIMIT $1")
            .bind(FILINGS)
            .fetch_all(pool)
            .await
            .unwrap()
    };
    // A session's table statistics reach the server when it ends: the app's
    // sessions end here, and the filing store's after its filings.
    app.store.close().await;
    // One session, so that "no other session" means the stores' are gone.
    let stats = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(app.settings.database.url.expose())
        .await
        .unwrap();
    let before = settled_scans(&stats, "phone_numbers", 2_001).await;

    let store = releasedesk::open_store(&app.settings).await.unwrap();
    for number in numbers {
        let reason = Reason::parse("Filed one at a time, as the tables grow.").unwrap();
        let actor = Actor::Customer(acme.account_id);
        store
            .file_request(acme.account_id, number, reason, actor)
            .await
            .unwrap();
    }
    store.close().await;
    let after = settled_scans(&stats, "release_requests", FILINGS).await;

    let scanned: std::collections::BTreeMap<_, _> = after
        .iter()
        .map(|(table, scans)| (table.as_str(), scans - before.get(table).unwrap_or(&0)))
        .collect();
    assert!(
        scanned.values().all(|&scans| scans == 0),
        "sequential scans of {FILINGS} filings: {scanned:?}"
    );
}

/// Sequential scans of the tables a filing reads, once every other session
/// of the database has ended and reported: none is left, `table`'s
/// statistics show `inserted` rows, and two looks in a row agree.
async fn settled_scans(
    stats: &sqlx::PgPool,
    table: &str,
    inserted: i64,
) -> std::collections::BTreeMap<String, i64> {
    let scans = async || {
        // Each look reads the statistics afresh, not a snapshot of the last.
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(stats)
            .await
            .unwrap();
        let (others, so_far): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND pid <> pg_backend_pid()), \
                    (SELECT n_tup_ins FROM pg_stat_user_tables WHERE relname = $1)",
        )
        .bind(table)
        .fetch_one(stats)
        .await
        .unwrap();
        let scans: std::collections::BTreeMap<String, i64> = sqlx::query_as(
            "SELECT relname::text, seq_scan FROM pg_stat_user_tables \
             WHERE relname IN ('release_requests', 'phone_numbers', 'accounts')",
        )
        .fetch_all(stats)
        .await
        .unwrap()
        .into_iter()
        .collect();
        (others == 0 && so_far == inserted).then_some(scans)
    };
    let mut last = None;
    eventually(
        "the sessions' statistics to reach the server",
        Duration::from_secs(20),
        async || {
            let now = scans().await;
            let agreed = now.is_some() && now == last;
            last = now;
            if agreed { last.clone() } else { None }
        },
    )
    .await
}

/// A plan comes from the schema as it is now, on whichever of the pool's
/// connections it runs. SQLite checks a connection's cached schema when a
/// statement starts reading, which `EXPLAIN QUERY PLAN` never does: a
/// connection idle since before a schema change (a migration run on another
/// connection) would explain with indexes that are gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_plans_see_the_schema_changed_on_another_connection() {
    let app = TestApp::sqlite().await;
    let releasedesk_store::Pool::Sqlite(pool) = app.store.pool() else {
        panic!("a SQLite app without a SQLite pool");
    };
    // Every connection the pool holds reads (and caches) the schema as it is.
    let mut held = Vec::new();
    for _ in 0..pool.size().max(2) {
        let mut conn = pool.acquire().await.unwrap();
        sqlx::query("SELECT count(*) FROM outbox")
            .execute(&mut *conn)
            .await
            .unwrap();
        held.push(conn);
    }
    // One of them changes the schema and stays out of the pool; the others,
    // back in it, still cache the index.
    let mut changer = held.pop().unwrap();
    drop(held);
    sqlx::query("DROP INDEX idx_outbox_dead")
        .execute(&mut *changer)
        .await
        .unwrap();

    let plans = app.store.backlog_plans().await.unwrap();

    let dead = plans[1].join("\n");
    assert!(!dead.contains("idx_outbox_dead"), "{dead}");
    assert!(dead.contains("outbox"), "{dead}");
    drop(changer);
}

/// SQLite: a start's `PRAGMA optimize` (the job queue's set-up) analyses the
/// tables; on a database still nearly empty its statistics made the planner
/// read whole tables in every filing group (`SCAN phone_numbers`, `accounts`,
/// `api_tokens`, `agents`, `release_requests`) and the release group's too,
/// for as long as they lasted, and the outbox's backlog count read every email
/// ever sent. After two restarts of a small database, what a new store plans
/// still finds rows by key, and the dispatchers and the job queue still take
/// their work from partial indexes; a table large when analysed (the numbers,
/// here) keeps its statistics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_restarts_on_a_small_database_leave_the_plans_by_key() {
    /// apalis's take of due jobs (`fetch_next`, every worker's poll), as
    /// apalis-sqlite 1.0 writes it.
    const APALIS_FETCH_NEXT: &str = "UPDATE Jobs SET status = 'Queued', lock_by = ?1, \
        lock_at = strftime('%s', 'now') WHERE ROWID IN ( \
        WITH candidates AS ( \
            SELECT * FROM (SELECT ROWID, priority, run_at, id FROM Jobs \
                WHERE job_type = ?2 AND status = 'Pending' AND lock_by IS NULL \
                AND (run_at IS NULL OR run_at <= ?4) \
                ORDER BY priority DESC, run_at ASC, id ASC LIMIT ?3) \
            UNION ALL \
            SELECT * FROM (SELECT ROWID, priority, run_at, id FROM Jobs \
                WHERE job_type = ?2 AND status = 'Failed' AND attempts < max_attempts \
                AND (run_at IS NULL OR run_at <= ?4) \
                ORDER BY priority DESC, run_at ASC, id ASC LIMIT ?3)) \
        SELECT ROWID FROM candidates ORDER BY priority DESC, run_at ASC, id ASC LIMIT ?3) \
        RETURNING *";

    let app = TestApp::sqlite().await;
    let acme = app.customer().await;
    let numbers = [app.number(&acme).await, app.number(&acme).await];
    app.agent(&acme, "Front desk", true, &numbers[..1]).await;
    app.file_request(&acme, numbers[1]).await;
    let account = acme.account_id.simple();
    app.execute(&format!(
        "INSERT INTO phone_numbers (id, e164, account_id, status, purchased_at, \
         billing_cycle_started_at, monthly_price_minor, currency, created_at, updated_at) \
         WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {}) \
         SELECT randomblob(16), '+1777' || printf('%07d', i), X'{account}', 'active', \
         '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00', 115, 'USD', \
         '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00' FROM s",
        releasedesk_store::SMALL_TABLE_ROWS
    ))
    .await;
    let riley = app.reviewer("Riley").await;
    for _ in 0..2 {
        let restarted = releasedesk::open_migrated(&app.settings).await.unwrap();
        restarted.close().await;
    }
    let restarted = releasedesk::open_migrated(&app.settings).await.unwrap();
    let me = restarted.authenticate_staff(&riley.token).await.unwrap();
    let me = me.expect("the reviewer's token");
    let queue = restarted
        .queue_plan(&me, &QueueFilter::default(), PageRequest::first(50))
        .await
        .unwrap();
    let mut plans = vec![("reviewer queue".to_owned(), queue)];
    for (i, backlog) in restarted
        .backlog_plans()
        .await
        .unwrap()
        .into_iter()
        .enumerate()
    {
        plans.push((format!("outbox backlog {i}"), backlog));
    }
    for kind in ["email", "job"] {
        let claim = restarted.claim_plan(kind).await.unwrap();
        plans.push((format!("{kind} outbox claim"), claim));
    }
    let fetch = restarted.plan_of_sql(APALIS_FETCH_NEXT).await.unwrap();
    plans.push(("apalis fetch".to_owned(), fetch));
    for size in [1, 16] {
        let groups = restarted.group_plans(size).await.unwrap();
        plans.push((format!("open requests, {size} ids"), groups.open_requests));
        plans.push((format!("take releases, {size} ids"), groups.take_releases));
    }
    // `SCAN t` alone reads the whole table t; `SCAN outbox USING INDEX …` walks
    // a partial index (the backlog counts: only undelivered or dead rows), and
    // `SCAN candidates` or `SCAN (subquery-1)` reads what a subquery made.
    let releasedesk_store::Pool::Sqlite(pool) = app.store.pool() else {
        unreachable!("a SQLite app");
    };
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .fetch_all(pool)
            .await
            .unwrap();
    let walks_a_table = |step: &String| {
        step.strip_prefix("SCAN ").is_some_and(|rest| {
            let read = rest.split_whitespace().next().unwrap_or_default();
            tables.iter().any(|table| table == read) && !rest.contains(" USING ")
        })
    };
    let walking: Vec<String> = plans
        .iter()
        .filter(|(_, plan)| plan.iter().any(walks_a_table))
        .map(|(statement, plan)| format!("{statement}:\n{}", plan.join("\n")))
        .collect();
    assert!(walking.is_empty(), "{}", walking.join("\n\n"));
    let analysed = |table: &str| format!("SELECT count(*) FROM sqlite_stat1 WHERE tbl = '{table}'");
    assert_eq!(app.count(&analysed("accounts")).await, 0);
    assert!(app.count(&analysed("phone_numbers")).await > 0);
    restarted.close().await;
}

/// SQLite's write-ahead log reaches the database file through the store's own
/// checkpoints, in the background: no commit pays for one (SQLite's default
/// has the commit that takes the log past 1,000 pages copy it), and a few
/// commits far below that threshold are copied all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_checkpoints_run_in_the_background() {
    let app = TestApp::sqlite().await;
    let releasedesk_store::Pool::Sqlite(pool) = app.store.pool() else {
        panic!("a SQLite app without a SQLite pool");
    };
    let threshold: i64 = sqlx::query_scalar("PRAGMA wal_autocheckpoint")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(threshold, 0, "commits must not checkpoint");
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .unwrap();
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();

    // About 25 pages of new rows: in the log only, until a checkpoint copies them.
    sqlx::query("CREATE TABLE scratch (payload BLOB NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    for _ in 0..10 {
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
             INSERT INTO scratch SELECT randomblob(1000) FROM n",
        )
        .execute(pool)
        .await
        .unwrap();
    }

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while size() <= before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the database file stayed at {before} bytes: nothing checkpointed the log"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A SQLite app's pool, and the path of its database's write-ahead log file.
async fn sqlite_pool_and_log(app: &TestApp) -> (&sqlx::SqlitePool, std::path::PathBuf) {
    let releasedesk_store::Pool::Sqlite(pool) = app.store.pool() else {
        panic!("a SQLite app without a SQLite pool");
    };
    let file: String =
        sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(pool)
            .await
            .unwrap();
    (pool, format!("{file}-wal").into())
}

/// SQLite's write-ahead log file does not keep the size of its largest burst:
/// once the log has been copied and a write starts it over, that commit cuts
/// the file back to `WAL_SIZE_LIMIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_write_ahead_log_gives_the_disk_back_after_a_burst() {
    let app = TestApp::sqlite().await;
    let (pool, wal) = sqlite_pool_and_log(&app).await;
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    let limit = releasedesk_store::WAL_SIZE_LIMIT;

    // One transaction of 1.25 times the limit: the log must hold all of it.
    let megabytes = limit * 5 / 4 / (1 << 20);
    sqlx::query("CREATE TABLE scratch (payload BLOB NOT NULL)")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {megabytes}) \
         INSERT INTO scratch SELECT zeroblob(1048576) FROM n"
    )))
    .execute(pool)
    .await
    .unwrap();
    let burst = size();
    assert!(burst > limit, "the log holds the burst: {burst} bytes");

    // Small writes until one follows a checkpoint that copied the whole log.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while size() > limit {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the log file stayed at {} bytes (limit {limit})",
            size()
        );
        sqlx::query("INSERT INTO scratch VALUES (x'00')")
            .execute(pool)
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Closing the store closes every connection it opened, the SQLite writer's
/// too: the last to close copies the write-ahead log into the database and
/// removes the log's file, so a stopped service leaves its database whole in
/// one file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_sqlite_store_leaves_no_write_ahead_log_behind() {
    let app = TestApp::sqlite().await;
    let (_, wal) = sqlite_pool_and_log(&app).await;
    // A filing: written on the writer's own connection.
    let acme = app.customer().await;
    let number = app.number(&acme).await;
    app.file_request(&acme, number).await;
    assert!(wal.exists(), "the writes went through the log");

    app.store.close().await;
    assert!(
        !wal.exists(),
        "a connection was left open: the log file is still there"
    );
}

/// On a current-thread runtime every look-up below is queued before the reader
/// task runs, so how they group does not depend on timing.
mod token_lookups_that_arrive_together_share_one_statement {
    use releasedesk_tests::TestApp;

    #[tokio::test(flavor = "current_thread")]
    async fn sqlite() {
        super::token_lookups_share_one_statement(TestApp::sqlite().await).await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn postgres() {
        if let Some(app) = TestApp::postgres().await {
            super::token_lookups_share_one_statement(app).await;
        }
    }
}

/// Concurrent customer token look-ups are answered by one statement, and each
/// caller still gets its own token's account: another account's tokens, a
/// revoked token and an unknown one in the same statement change nothing for
/// the others.
async fn token_lookups_share_one_statement(app: TestApp) {
    let acme = app.customer().await;
    let globex = app.customer().await;
    let revoked = app.store.create_token(acme.account_id).await.unwrap();
    app.store
        .revoke_token(TokenRef::Id(revoked.id))
        .await
        .unwrap();
    let unknown = format!("rd_live_{}", "x".repeat(43));
    let cases: Vec<(&str, Option<uuid::Uuid>)> = (0..10)
        .flat_map(|_| {
            [
                (acme.token.as_str(), Some(acme.account_id)),
                (globex.token.as_str(), Some(globex.account_id)),
                (revoked.token.as_str(), None),
                (unknown.as_str(), None),
            ]
        })
        .collect();
    let before = Committed::now(&app, TOKEN_LOOKUP_BATCH_METRIC).await;

    let answers = join_all(
        cases
            .iter()
            .map(|(token, _)| app.store.authenticate_customer(token)),
    )
    .await;

    for ((token, expected), answer) in cases.iter().zip(answers) {
        let account = answer.unwrap().map(|principal| principal.account_id);
        assert_eq!(account, *expected, "token {token}");
    }
    before.assert_since(
        Committed::now(&app, TOKEN_LOOKUP_BATCH_METRIC).await,
        cases.len(),
        1.0,
    );
}

async fn thirty_concurrent_duplicate_requests_give_exactly_one_201(app: TestApp) {
    let acme = app.customer().await;
    let number = app.number(&acme).await;

    let answers = join_all((0..30).map(|i| {
        let (app, acme) = (&app, &acme);
        async move {
            app.request_release(acme, number, &format!("Concurrent duplicate number {i:02}"))
                .await
        }
    }))
    .await;

    let created = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::CREATED)
        .count();
    let conflicts = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::CONFLICT && b["code"] == "RELEASE_ALREADY_PENDING")
        .count();
    assert_eq!((created, conflicts), (1, 29), "{answers:?}");
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 1);
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox").await,
        2,
        "only the winner queued email"
    );
}

async fn thirty_two_concurrent_writers_all_succeed(app: TestApp) {
    let mut work = Vec::new();
    for _ in 0..32 {
        let customer = app.customer().await;
        let number = app.number(&customer).await;
        work.push((customer, number));
    }

    let answers = join_all(work.iter().map(|(customer, number)| {
        let app = &app;
        async move {
            let filed = app
                .request_release(customer, *number, "Thirty-two writers at once.")
                .await;
            let agent = app
                .post(
                    "/api/v1/agents",
                    customer,
                    serde_json::json!({"name": "Concurrent bot"}),
                )
                .await;
            (filed, agent)
        }
    }))
    .await;

    for ((filed, filed_body), (agent, agent_body)) in &answers {
        assert_eq!(*filed, StatusCode::CREATED, "{filed_body}");
        assert_eq!(*agent, StatusCode::CREATED, "{agent_body}");
    }
    assert_eq!(app.count("SELECT COUNT(*) FROM release_requests").await, 32);
}

/// Filings that queue while the database is busy are written in one
/// transaction, and each still gets the answer it would have got alone: the
/// refusals (not ours, in use, already pending, filed twice in the batch, not
/// active, a revoked or unknown token) change nothing for the others, and a
/// number refused to one filer is still filed for its owner later in the
/// batch. The group's own statements check the filers' tokens: no filing looks
/// its token up first, and each is written as its token's customer.
async fn filings_that_wait_together_commit_together_each_with_its_own_answer(app: TestApp) {
    let acme = app.customer().await;
    let other = app.customer().await;
    let revoked = app.store.create_token(acme.account_id).await.unwrap();
    app.store
        .revoke_token(TokenRef::Id(revoked.id))
        .await
        .unwrap();
    let acme_revoked = releasedesk_tests::Customer {
        token: revoked.token,
        ..acme.clone()
    };
    let acme_unknown = releasedesk_tests::Customer {
        token: format!("rd_live_{}", "x".repeat(43)),
        ..acme.clone()
    };
    let mut fresh = Vec::new();
    for _ in 0..12 {
        fresh.push(app.number(&acme).await);
    }
    let theirs = app.number(&other).await;
    let their_own = app.number(&other).await;
    let by_revoked = app.number(&acme).await;
    let by_unknown = app.number(&acme).await;
    let in_use = app.number(&acme).await;
    app.agent(&acme, "Night shift", true, &[in_use]).await;
    let pending = app.number(&acme).await;
    assert_eq!(
        app.request_release(&acme, pending, "Filed before the burst.")
            .await
            .0,
        StatusCode::CREATED
    );
    let twice = app.number(&acme).await;
    let claimed_by_other_first = app.number(&acme).await;
    let gone = app.number(&acme).await;
    // The last number made (ids are blobs on SQLite; numbers count up).
    app.execute(
        "UPDATE phone_numbers SET status = 'releasing' \
         WHERE e164 = (SELECT MAX(e164) FROM phone_numbers)",
    )
    .await;
    let before = Committed::now(&app, FILING_BATCH_METRIC).await;
    let lookups_before = Committed::now(&app, TOKEN_LOOKUP_BATCH_METRIC).await;

    // Another connection holds back every write to release_requests.
    let hold = app.hold_writes_to("release_requests").await;
    let mut targets: Vec<_> = fresh.iter().map(|number| (&acme, *number)).collect();
    targets.extend([
        (&acme, theirs),
        (&acme, in_use),
        (&acme, pending),
        (&acme, twice),
        (&acme, twice),
        (&other, claimed_by_other_first),
        (&acme, claimed_by_other_first),
        (&acme, gone),
        (&other, their_own),
        (&acme_revoked, by_revoked),
        (&acme_unknown, by_unknown),
    ]);
    let burst = join_all(targets.iter().map(|(who, number)| {
        let app = &app;
        async move {
            app.request_release(who, *number, "Part of a burst of filings.")
                .await
        }
    }));
    let release = async {
        // Long enough for every request to reach the writer's queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold.release().await;
    };
    let (answers, ()) = tokio::join!(burst, release);

    let (ours, refused) = answers.split_at(fresh.len());
    for ((status, body), number) in ours.iter().zip(&fresh) {
        assert_eq!(*status, StatusCode::CREATED, "{body}");
        assert_eq!(
            body["data"]["phone_number_id"],
            number.to_string(),
            "{body}"
        );
    }
    let [
        theirs,
        in_use,
        pending,
        first,
        second,
        not_the_others,
        the_owners,
        gone,
        their_own,
        by_revoked,
        by_unknown,
    ] = refused
    else {
        panic!("{refused:?}");
    };
    assert_error(theirs.0, &theirs.1, StatusCode::NOT_FOUND, "NOT_FOUND");
    assert_error(
        in_use.0,
        &in_use.1,
        StatusCode::UNPROCESSABLE_ENTITY,
        "PHONE_NUMBER_IN_USE",
    );
    assert_error(
        pending.0,
        &pending.1,
        StatusCode::CONFLICT,
        "RELEASE_ALREADY_PENDING",
    );
    assert_filed_once(first, second);
    assert_error(
        not_the_others.0,
        &not_the_others.1,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
    );
    assert_eq!(the_owners.0, StatusCode::CREATED, "{}", the_owners.1);
    assert_error(gone.0, &gone.1, StatusCode::CONFLICT, "NUMBER_NOT_ACTIVE");
    assert_eq!(their_own.0, StatusCode::CREATED, "{}", their_own.1);
    for unknown in [by_revoked, by_unknown] {
        assert_error(
            unknown.0,
            &unknown.1,
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
        );
    }
    lookups_before.assert_since(
        Committed::now(&app, TOKEN_LOOKUP_BATCH_METRIC).await,
        0,
        0.0,
    );

    // The pending one, the twelve, one of the twice-filed, the one the other
    // account tried first, and the other account's own: each with its event
    // and both emails.
    let acme_filed = 1 + fresh.len() as i64 + 1 + 1;
    let filed = acme_filed + 1;
    for (who, count) in [(&acme, acme_filed), (&other, 1)] {
        let requested_by = format!(
            "SELECT COUNT(*) FROM release_requests WHERE requested_by = 'customer:{}'",
            who.account_id
        );
        assert_eq!(app.count(&requested_by).await, count);
    }
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_requests").await,
        filed
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM release_events").await,
        filed
    );
    assert_eq!(
        app.count("SELECT COUNT(*) FROM outbox WHERE kind = 'email'")
            .await,
        2 * filed
    );
    before.assert_since(
        Committed::now(&app, FILING_BATCH_METRIC).await,
        targets.len(),
        3.0,
    );
}

/// What a group of filings and a group of releases look up is found through the
/// ids, at any group size: never by walking every request of a status
/// (`idx_release_requests_status`) or the whole table, which made each group
/// slower as requests piled up. SQLite is checked as a new database is, without
/// statistics on the requests; PostgreSQL with statistics over 50,000 open
/// requests.
async fn groups_look_their_ids_up_rather_than_walk_a_status(app: TestApp) {
    if app.backend() == releasedesk_store::Backend::Postgres {
        let account = app.customer().await.account_id;
        app.bulk_numbers_postgres(account, 50000).await;
        app.execute(
            "INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, status, \
             requested_at, requested_by, early_termination_fee_minor, currency, version, updated_at) \
             SELECT gen_random_uuid(), account_id, id, e164, 'open history', \
             CASE WHEN e164 < '+16660025000' THEN 'pending' ELSE 'approved' END, now(), 'system', 0, 'USD', 1, now() \
             FROM phone_numbers WHERE e164 LIKE '+1666%'",
        )
        .await;
        app.execute("ANALYZE").await;
    }
    for size in [1, 16, 64, 128] {
        let plans = app.store.group_plans(size).await.unwrap();
        for (statement, plan) in [
            ("open requests", plans.open_requests.join("\n")),
            ("take releases", plans.take_releases.join("\n")),
        ] {
            let through_ids = [
                "sqlite_autoindex_release_requests_1",
                "release_requests_pkey",
            ]
            .iter()
            .chain(&[
                "idx_release_requests_number",
                "release_requests_one_open_per_number",
            ])
            .any(|index| plan.contains(index));
            assert!(
                through_ids
                    && !plan.contains("idx_release_requests_status")
                    && !plan.contains("SCAN release_requests")
                    && !plan.contains("Seq Scan on release_requests"),
                "{statement}, {size} ids:\n{plan}"
            );
        }
    }
}

/// PostgreSQL: the filing writer's sessions plan each statement once, from
/// the tables as they are then, and keep that plan as the tables grow. Made on
/// a new database, and again after one analysed while small, the plans must
/// find every row by key. A hash join or a hashed subplan, chosen because a
/// small table is cheaper to read whole than to probe, goes on reading the
/// whole table for every group once it has grown (docs/BENCHMARKS.md: 305 ms
/// for a group of 16 at 1,000,000 numbers and 250,000 agent links, not 1 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filing_sessions_plans_find_rows_by_key_however_small_the_tables() {
    let Some(app) = TestApp::postgres().await else {
        return;
    };
    let acme = app.customer().await;
    let numbers = [app.number(&acme).await, app.number(&acme).await];
    // Two agents: of one row, analysed, a probe by the primary key and a walk
    // of `idx_agents_account` (its id second) cost the same, and PostgreSQL
    // keeps whichever it found first (the filing sessions make new plans every
    // `KeyedSessions` lifetime, so such a plan lasts a minute at most).
    app.agent(&acme, "Front desk", true, &numbers[..1]).await;
    app.agent(&acme, "Night desk", false, &numbers[..1]).await;
    app.file_request(&acme, numbers[1]).await;
    let releasedesk_store::Pool::Postgres(pool) = app.store.pool() else {
        unreachable!("a PostgreSQL app");
    };
    let leading: HashMap<String, String> = sqlx::query_as(
        "SELECT c.relname::text, a.attname::text FROM pg_index i \
         JOIN pg_class c ON c.oid = i.indexrelid \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for moment in ["a new database", "analysed while small"] {
        if moment == "analysed while small" {
            app.execute("ANALYZE").await;
        }
        let plans = app.store.filing_plans().await.unwrap();
        let plans = plans.expect("PostgreSQL has filing sessions");
        for (statement, plan) in [("insert", plans.insert), ("left out", plans.left_out)] {
            if let Err(step) = finds_rows_by_key(&plan, &leading) {
                panic!("{statement}, {moment}: {step}\n{}", plan.join("\n"));
            }
        }
    }
}

/// `Ok` if every table the plan reads it reads through an index, by its
/// leading column (`leading`: each index's) equal to a key from a parameter
/// or an outer row (an `Index Cond` naming `$n` or another table's column),
/// and nothing is hashed or merged; else the step that is not.
fn finds_rows_by_key(plan: &[String], leading: &HashMap<String, String>) -> Result<(), String> {
    for (i, step) in plan.iter().enumerate() {
        if step.contains("Hash") || step.contains("Merge") || step.contains("Seq Scan") {
            return Err(step.clone());
        }
        let Some(index) = [
            "Index Scan using ",
            "Index Only Scan using ",
            "Bitmap Index Scan on ",
        ]
        .iter()
        .find_map(|scan| step.split_once(scan))
        .and_then(|(_, rest)| rest.split_whitespace().next()) else {
            continue;
        };
        let column = &leading[index];
        let keyed = |detail: &String| {
            detail
                .trim_start()
                .strip_prefix("Index Cond: ")
                .is_some_and(|cond| {
                    [format!("({column} = "), format!("({column})::text = ")]
                        .iter()
                        .find_map(|by| cond.split_once(by.as_str()))
                        .is_some_and(|(_, key)| key.contains('$') || key.contains('.'))
                })
        };
        let mut details = plan[i + 1..]
            .iter()
            .take_while(|detail| !detail.contains("->"));
        if !details.any(keyed) {
            return Err(step.clone());
        }
    }
    Ok(())
}

/// The backlog counts of `/metrics` read the partial indexes of undelivered and
/// of dead rows, and the dispatchers' claims of due rows the first, never every
/// email ever sent (migration 6 dropped the index of all statuses that served
/// the counts).
async fn the_outbox_backlog_and_claims_read_no_sent_history(app: TestApp) {
    let statuses =
        "CASE WHEN i % 500 = 0 THEN 'dead' WHEN i % 499 = 0 THEN 'pending' ELSE 'sent' END";
    let series = match app.backend() {
        releasedesk_store::Backend::Postgres => format!(
            "SELECT gen_random_uuid(), 'email', 'request_filed', 'a@example.com', '{{}}', 'history-' || i, \
             {statuses}, 1, now(), now() FROM generate_series(1, 20000) AS i"
        ),
        releasedesk_store::Backend::Sqlite => format!(
            "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 20000) \
             SELECT randomblob(16), 'email', 'request_filed', 'a@example.com', '{{}}', 'history-' || i, \
             {statuses}, 1, '2026-01-01T00:00:00+00:00', '2026-01-01T00:00:00+00:00' FROM s"
        ),
    };
    app.execute(&format!(
        "INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts, \
         next_attempt_at, created_at) {series}"
    ))
    .await;
    app.execute("ANALYZE").await;

    let mut plans = app.store.backlog_plans().await.unwrap();
    assert_eq!(plans.len(), 2);
    for kind in ["email", "job"] {
        plans.push(app.store.claim_plan(kind).await.unwrap());
    }

    for (plan, index) in plans.iter().zip([
        "idx_outbox_undelivered",
        "idx_outbox_dead",
        "idx_outbox_undelivered",
        "idx_outbox_undelivered",
    ]) {
        // SQLite says `SCAN outbox` for a walk of the table, with nothing after.
        let walks_the_table = plan
            .iter()
            .any(|step| step.contains("Seq Scan on outbox") || step.ends_with("SCAN outbox"));
        let plan = plan.join("\n");
        assert!(plan.contains(index) && !walks_the_table, "{index}:\n{plan}");
    }
    let stats = app.store.queue_stats().await.unwrap();
    let count = |status: releasedesk_store::OutboxStatus| {
        stats
            .outbox
            .iter()
            .find(|(kind, s, _)| kind == "email" && *s == status)
            .map(|(_, _, n)| *n)
    };
    assert_eq!(count(releasedesk_store::OutboxStatus::Dead), Some(40));
    assert_eq!(count(releasedesk_store::OutboxStatus::Pending), Some(40));
}

//! The raw limit for filing: one-row INSERTs into a table with the same unique
//! partial index as `release_requests_one_open_per_number`, at 1, 8 and 32
//! clients: `pgbench` on PostgreSQL, an equivalent insert loop on SQLite (same
//! pragmas as the application's pool).
//!
//! On PostgreSQL also the database's own limit for what a filing writes:
//! `pgbench` running a filing's statements in the migrated schema, one filing
//! per transaction as the one-row INSERT is one row per transaction, with no
//! application in between (see [`FILING_SCRIPT`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use releasedesk_store::{INSERT_FILINGS, Pool};

use crate::{
    Ctx,
    db::{Db, FreshDb, exec},
    report::{Report, Row},
};

const TABLE: &str = "CREATE TABLE raw_requests (id {uuid} PRIMARY KEY, \
    phone_number_id {uuid} NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL, \
    requested_at {ts} NOT NULL); \
    CREATE UNIQUE INDEX raw_requests_one_open_per_number ON raw_requests (phone_number_id) \
    WHERE status IN ('pending', 'approved', 'releasing')";

/// Transactions per second per client count.
pub async fn run(ctx: &Ctx, db: Db, report: &mut Report) -> Result<Vec<(usize, f64)>> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure(ctx, &fresh, report).await;
    fresh.drop_database().await;
    result
}

async fn measure(ctx: &Ctx, fresh: &FreshDb, report: &mut Report) -> Result<Vec<(usize, f64)>> {
    let pool = fresh.pool_without_store(32).await?;
    let table = match fresh.db {
        Db::Sqlite => TABLE.replace("{uuid}", "BLOB").replace("{ts}", "TEXT"),
        Db::Postgres => TABLE
            .replace("{uuid}", "UUID")
            .replace("{ts}", "TIMESTAMPTZ"),
    };
    exec(&pool, &table).await?;
    let mut out = Vec::new();
    for &clients in &ctx.clients {
        let tps = match &pool {
            Pool::Postgres(_) => pgbench(ctx, fresh, clients).await?,
            Pool::Sqlite(p) => sqlite_loop(p, clients, ctx.plan.raw_seconds).await?,
        };
        let tool = match fresh.db {
            Db::Sqlite => "insert loop",
            Db::Postgres => "pgbench",
        };
        report.push(
            Row::new(
                fresh.db.label(),
                "raw limit",
                format!("{clients} clients: {tool} one-row INSERT"),
            )
            .value(tps, "tps"),
        );
        out.push((clients, tps));
    }
    pool.close().await;
    Ok(out)
}

async fn pgbench(ctx: &Ctx, fresh: &FreshDb, clients: usize) -> Result<f64> {
    let script = fresh.scratch("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO raw_requests VALUES (gen_random_uuid(), gen_random_uuid(), 'pending', \
         'Benchmark filing for a fresh number', now());\n",
    )?;
    run_pgbench(ctx, fresh, &script, clients).await
}

/// One filing's statements as `serve` sends them for a group of one, with its
/// ids drawn from a numbered list of active numbers (the first statement
/// stands in for the customer's token look-up): the candidate read, the
/// request, its event, both "filed" emails written claimed, the commit, and
/// the emails' "sent" mark. Email rendering and sending stay out: they are not
/// the database's work. (No `:` inside literals: pgbench would read a variable.)
const FILING_SCRIPT: &str = r"SELECT id AS number_id, gen_random_uuid() AS req, gen_random_uuid() AS ev, gen_random_uuid() AS e1, gen_random_uuid() AS e2 FROM bench_numbers WHERE n = (SELECT nextval('bench_seq'))
\gset
BEGIN;
SELECT p.account_id, p.e164, p.status, p.purchased_at, a.name, a.email, EXISTS (SELECT 1 FROM agent_numbers an JOIN agents g ON g.id = an.agent_id WHERE an.phone_number_id = p.id AND g.active) AS in_use, EXISTS (SELECT 1 FROM release_requests r WHERE r.phone_number_id = p.id AND r.status IN ('pending', 'approved', 'releasing')) AS open FROM phone_numbers p LEFT JOIN accounts a ON a.id = p.account_id WHERE p.id = :number_id
\gset
INSERT INTO release_requests (id, account_id, phone_number_id, phone_number, reason, status, requested_at, requested_by, filed_by_staff_id, early_termination_fee_minor, currency, claimed_by, claimed_at, decided_at, decided_by, decision_note, cancelled_by, released_at, failure_reason, version, updated_at, lease_until, execution_attempts, carrier_released_at) VALUES (:req, :account_id, :number_id, :e164, 'Benchmark filing for a fresh number', 'pending', now(), 'customer', NULL, 2500, 'USD', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 1, now(), NULL, 0, NULL);
INSERT INTO release_events (id, request_id, at, kind, actor, note) VALUES (:ev, :req, now(), 'requested', 'customer', NULL);
INSERT INTO outbox (id, kind, topic, recipient, payload, dedup_key, status, attempts, next_attempt_at, last_error, created_at, sent_at) VALUES (:e1, 'email', 'request_filed', :email, json_build_object('request_id', :req::text, 'phone_number', :e164::text, 'account_name', :name::text, 'reason', 'Benchmark filing for a fresh number', 'early_termination_fee', '25.00', 'currency', 'USD', 'requested_at', now()), :ev::text || '|request_filed|' || :email::text, 'sending', 1, now() + interval '60 seconds', NULL, now(), NULL), (:e2, 'email', 'staff_new_request', 'support@localhost', json_build_object('request_id', :req::text, 'phone_number', :e164::text, 'account_name', :name::text, 'reason', 'Benchmark filing for a fresh number', 'early_termination_fee', '25.00', 'currency', 'USD', 'requested_at', now()), :ev::text || '|staff_new_request|support@localhost', 'sending', 1, now() + interval '60 seconds', NULL, now(), NULL) ON CONFLICT (dedup_key) DO NOTHING RETURNING id;
COMMIT;
UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL WHERE id IN (:e1, :e2);
";

/// The filings `serve` writes at once at 32 clients (10,000 filings took
/// ~650 groups), for [`group_script`].
pub const GROUP: usize = 16;

/// The statements `serve` sends PostgreSQL for a group of [`GROUP`] filings,
/// as `releasedesk_store`'s filing writer sends them: the store's own
/// [`INSERT_FILINGS`], which checks the group's numbers and filers' tokens and
/// writes its requests, events and emails from arrays (committing on its own),
/// then the emails' "sent" mark as the dispatcher settles them. The first
/// statement fetches the group's arrays from `bench_groups`, made before the
/// run (`serve` has them in memory: a primary-key read more than it sends).
/// Rendering and sending the emails stay out: they are not the database's work.
fn group_script() -> String {
    const READ: &str = r"SELECT nums, hashes, reqs, evs, e1s, e2s FROM bench_groups WHERE g = (SELECT nextval('bench_group_seq'))
\gset
";
    const SENT: &str = "UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL \
        WHERE id = ANY(:e1s::uuid[] || :e2s::uuid[]);\n";
    // INSERT_FILINGS's parameters, last first (so `$1` never matches in `$10`).
    let each = |value: &str| format!("array_fill({value}, ARRAY[{GROUP}])");
    let parameters: [(&str, String); 25] = [
        ("$25", "'customer:'".into()),
        ("$24", "now()".into()),
        ("$23", "now() + interval '60 seconds'".into()),
        ("$22", "1".into()),
        ("$21", "'sending'".into()),
        ("$20", "'support@localhost'".into()),
        ("$19", "'staff_new_request'".into()),
        ("$18", "'request_filed'".into()),
        ("$17", "'USD'".into()),
        ("$16", r#"'"0.00"'"#.into()),
        ("$15", r#"'"25.00"'"#.into()),
        ("$14", "2500".into()),
        ("$13", each("to_json(now())::text")),
        ("$12", ":e2s".into()),
        ("$11", ":e1s".into()),
        ("$10", ":evs".into()),
        ("$9", each("now() - interval '90 days'")),
        ("$8", each("NULL::uuid")),
        ("$7", each("NULL::text")),
        ("$6", each("now()")),
        ("$5", each("'Benchmark filing for a fresh number'::text")),
        ("$4", ":hashes".into()),
        ("$3", each("NULL::uuid")),
        ("$2", ":nums".into()),
        ("$1", ":reqs".into()),
    ];
    let insert = parameters
        .iter()
        .fold(INSERT_FILINGS.to_owned(), |sql, (parameter, value)| {
            sql.replace(parameter, value)
        });
    format!("{READ}{insert};\n{SENT}")
}

/// `bench_groups`: the arrays of [`group_script`], one row per group of
/// [`GROUP`] numbers not yet filed (`n` above `from`), with their owners'
/// tokens, ids made up front.
const GROUPS_TABLE: &str = "CREATE TABLE bench_groups AS \
    WITH f AS (SELECT b.n, (b.n - {from} - 1) / {group} + 1 AS g, p.id AS number_id, \
        t.token_hash, bench_uuid7() AS req, bench_uuid7() AS ev, bench_uuid7() AS e1, \
        bench_uuid7() AS e2 \
        FROM bench_numbers b JOIN phone_numbers p ON p.id = b.id \
        JOIN api_tokens t ON t.account_id = p.account_id WHERE b.n > {from}) \
    SELECT g, array_agg(number_id ORDER BY n)::text AS nums, \
        array_agg(token_hash ORDER BY n)::text AS hashes, \
        array_agg(req ORDER BY n)::text AS reqs, array_agg(ev ORDER BY n)::text AS evs, \
        array_agg(e1 ORDER BY n)::text AS e1s, array_agg(e2 ORDER BY n)::text AS e2s \
    FROM f GROUP BY g HAVING count(*) = {group}";

/// Time-ordered ids like `serve`'s UUID v7 (PostgreSQL 15 has no generator):
/// the millisecond clock first, so rows land at the right edge of each index
/// as `serve`'s do, not at random pages.
const UUID7_FUNCTION: &str = "CREATE FUNCTION bench_uuid7() RETURNS uuid LANGUAGE sql VOLATILE AS \
    $$ SELECT (lpad(to_hex(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') \
    || '7' || substr(md5(random()::text || clock_timestamp()::text), 1, 19))::uuid $$";

/// What PostgreSQL alone does with a filing's statements.
#[derive(Debug, Clone, Copy)]
pub struct FilingWrites {
    /// Filings per second, one per transaction ([`FILING_SCRIPT`]).
    pub one_by_one: f64,
    /// Filings per second in groups of [`GROUP`] ([`group_script`]).
    pub grouped: f64,
    /// CPU per filing while grouped, of PostgreSQL and of pgbench (`harness_us`).
    pub grouped_cpu: crate::cpu::Usage,
}

/// [`FilingWrites`] at `clients`, on a migrated database of its own with
/// enough active numbers for both runs.
pub async fn filing_writes(ctx: &Ctx, clients: usize) -> Result<FilingWrites> {
    let fresh = FreshDb::create(Db::Postgres, &ctx.pg_url).await?;
    let result = measure_filing_writes(ctx, &fresh, clients).await;
    fresh.drop_database().await;
    result
}

async fn measure_filing_writes(ctx: &Ctx, fresh: &FreshDb, clients: usize) -> Result<FilingWrites> {
    let vars = crate::process::environment(fresh);
    crate::process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(4).await?;
    let mut fixture = crate::seed::Fixture::create(pool.clone(), 32).await?;
    // Far more than 2 cores file in the run: the script fails when they run out.
    let numbers = 20_000 * ctx.plan.raw_seconds as usize;
    fixture.numbers(numbers).await?;
    exec(
        &pool,
        "CREATE TABLE bench_numbers AS \
         SELECT row_number() OVER (ORDER BY id) AS n, id FROM phone_numbers",
    )
    .await?;
    exec(&pool, "CREATE UNIQUE INDEX ON bench_numbers (n)").await?;
    exec(&pool, "CREATE SEQUENCE bench_seq").await?;
    exec(&pool, "VACUUM ANALYZE").await?;
    let script = fresh.scratch("filing.sql");
    std::fs::write(&script, FILING_SCRIPT)?;
    let one_by_one = run_pgbench(ctx, fresh, &script, clients).await?;

    // The groups take the numbers the first run left.
    let filed = crate::db::scalar(&pool, "SELECT last_value FROM bench_seq").await?;
    let groups = GROUPS_TABLE
        .replace("{from}", &filed.to_string())
        .replace("{group}", &GROUP.to_string());
    exec(&pool, UUID7_FUNCTION).await?;
    exec(&pool, &groups).await?;
    exec(&pool, "CREATE UNIQUE INDEX ON bench_groups (g)").await?;
    exec(&pool, "CREATE SEQUENCE bench_group_seq").await?;
    exec(&pool, "VACUUM ANALYZE").await?;
    pool.close().await;
    let script = fresh.scratch("groups.sql");
    std::fs::write(&script, group_script())?;
    let (tps, grouped_cpu) = pgbench_with_cpu(ctx, fresh, &script, clients, GROUP).await?;
    Ok(FilingWrites {
        one_by_one,
        grouped: tps * GROUP as f64,
        grouped_cpu,
    })
}

/// [`run_pgbench`], with the CPU of PostgreSQL and of pgbench per unit of
/// work (`per_transaction` units each) over the run's middle, its first and
/// last second left out (connecting, and the clients finishing).
async fn pgbench_with_cpu(
    ctx: &Ctx,
    fresh: &FreshDb,
    script: &std::path::Path,
    clients: usize,
    per_transaction: usize,
) -> Result<(f64, crate::cpu::Usage)> {
    let run = run_pgbench(ctx, fresh, script, clients);
    let sample = async {
        let seconds = u64::from(ctx.plan.raw_seconds);
        let window = Duration::from_secs(seconds.saturating_sub(2).max(1));
        tokio::time::sleep(Duration::from_secs(1).min(Duration::from_secs(seconds) / 4)).await;
        let pgbench = crate::cpu::pids_named("pgbench");
        let before = crate::cpu::sample(&pgbench);
        tokio::time::sleep(window.min(Duration::from_secs(seconds) / 2)).await;
        (before, crate::cpu::sample(&pgbench))
    };
    let (tps, (before, after)) = tokio::join!(run, sample);
    let tps = tps?;
    let seconds = after.seconds_since(&before);
    let units = (tps * seconds * per_transaction as f64).round() as usize;
    Ok((tps, before.until(&after, units)))
}

async fn run_pgbench(
    ctx: &Ctx,
    fresh: &FreshDb,
    script: &std::path::Path,
    clients: usize,
) -> Result<f64> {
    let name = fresh.pg_name().context("no PostgreSQL database")?;
    let url = crate::db::replace_database(&ctx.pg_url, name);
    let output = tokio::process::Command::new(&ctx.pgbench)
        .args(["-n", "-M", "prepared", "-f"])
        .arg(script)
        .args([
            "-c",
            &clients.to_string(),
            "-j",
            &clients.to_string(),
            "-T",
            &ctx.plan.raw_seconds.to_string(),
        ])
        .arg(&url)
        .output()
        .await
        .with_context(|| format!("run {}", ctx.pgbench.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "pgbench failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_tps(&stdout).with_context(|| format!("no tps in pgbench output:\n{stdout}"))
}

fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

async fn sqlite_loop(pool: &sqlx::SqlitePool, clients: usize, seconds: u32) -> Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (pool, stop, done) = (pool.clone(), stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                sqlx::query("INSERT INTO raw_requests VALUES (?, ?, 'pending', ?, ?)")
                    .bind(uuid::Uuid::now_v7())
                    .bind(uuid::Uuid::now_v7())
                    .bind("Benchmark filing for a fresh number")
                    .bind(releasedesk_domain::time::now())
                    .execute(&pool)
                    .await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, sqlx::Error>(())
        }));
    }
    tokio::time::sleep(Duration::from_secs(u64::from(seconds))).await;
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await.context("an insert task panicked")??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_script_runs_the_stores_statement_with_every_parameter_given() {
        let script = group_script();
        assert!(script.contains("INSERT INTO release_requests"), "{script}");
        let unbound = script
            .match_indices('$')
            .filter(|(at, _)| script[at + 1..].starts_with(|c: char| c.is_ascii_digit()))
            .count();
        assert_eq!(
            unbound, 0,
            "a parameter of INSERT_FILINGS is left:\n{script}"
        );
        assert!(script.contains("unnest(:reqs::uuid[], :nums::uuid[]"));
    }

    #[test]
    fn tps_is_read_from_pgbench_output() {
        let out = "number of failed transactions: 0 (0.000%)\n\
                   latency average = 1.234 ms\n\
                   initial connection time = 3.1 ms\n\
                   tps = 6480.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(6480.123456));
    }
}

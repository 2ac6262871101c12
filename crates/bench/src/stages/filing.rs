//! Stage 1 and 4: filing over HTTP through `serve` at 1, 8 and 32 clients, and
//! the peak memory of that `serve` idle and after the load.

use std::time::Duration;

use anyhow::Result;
use releasedesk_store::Pool;

use crate::{
    Ctx, cpu,
    db::{self, Db, FreshDb},
    load,
    process::{self, Role, Service},
    report::{Bound, Report, Row, Target},
    seed::Fixture,
};

/// The client counts of a full run.
pub const LEVELS: [usize; 3] = [1, 8, 32];

/// Throughput per client count, for the ratio to the raw limit.
pub type Throughputs = Vec<(usize, f64)>;

pub async fn run(ctx: &Ctx, db: Db, report: &mut Report) -> Result<Throughputs> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let result = measure(ctx, &fresh, report).await;
    fresh.drop_database().await;
    result
}

async fn measure(ctx: &Ctx, fresh: &FreshDb, report: &mut Report) -> Result<Throughputs> {
    let label = fresh.db.label();
    let vars = process::environment(fresh);
    process::migrate(&ctx.binary, &vars, fresh.path()).await?;
    let pool = fresh.pool(4).await?;
    let mut fixture = Fixture::create(pool.clone(), 32).await?;
    let warmup = 50;
    let per_level = ctx.plan.filings;
    let numbers = fixture
        .numbers(warmup + per_level * ctx.clients.len())
        .await?;

    let serve = Service::start(&ctx.binary, Role::Serve, &vars, fresh.path()).await?;
    let base = serve.url("");
    let idle = serve.peak_rss_mib()?;
    let http = load::client(64)?;
    load::file_requests(&http, &base, &numbers[..warmup], &fixture.tokens, 4).await?;
    emails_sent(&pool).await?;

    let mut throughputs = Vec::new();
    for (i, &clients) in ctx.clients.iter().enumerate() {
        let start = warmup + i * per_level;
        let slice = &numbers[start..start + per_level];
        eprintln!("  {label}: filing {per_level} requests with {clients} clients");
        let before = cpu::sample(&[serve.pid]);
        let outcome = load::file_requests(&http, &base, slice, &fixture.tokens, clients).await?;
        // Each level starts with the emails of the earlier ones sent, and its CPU
        // per filing includes sending the filing's own two.
        emails_sent(&pool).await?;
        let usage = before.until(&cpu::sample(&[serve.pid]), slice.len());
        let rps = outcome.per_second();
        throughputs.push((clients, rps));
        let mut row =
            Row::new(label, "filing", format!("{clients} clients: throughput")).value(rps, "req/s");
        if clients == 32 && fresh.db == Db::Sqlite {
            row = row.target(Target::Value(Bound::AtLeast(3000.0)));
        }
        report.push(row);
        report.push(
            Row::new(label, "filing", format!("{clients} clients: p50"))
                .value(load::ms(&outcome.latencies, 0.50), "ms"),
        );
        let p99 = Row::new(label, "filing", format!("{clients} clients: p99"))
            .value(load::ms(&outcome.latencies, 0.99), "ms");
        report.push(if clients == 32 {
            p99.target(Target::Value(Bound::AtMost(25.0)))
        } else {
            p99
        });
        report.push(
            Row::new(label, "filing", format!("{clients} clients: max"))
                .value(load::max_ms(&outcome.latencies), "ms"),
        );
        cpu::Rows {
            label,
            stage: "filing",
            prefix: format!("{clients} clients"),
            unit: "filing",
            servers: Some("serve"),
            harness: Some("load generator"),
            postgres: fresh.db == Db::Postgres,
        }
        .push(report, &usage);
    }
    let loaded = serve.peak_rss_mib()?;
    report.push(
        Row::new(label, "memory", "serve peak RSS, idle")
            .value(idle, "MiB")
            .target(Target::Value(Bound::AtMost(60.0))),
    );
    report.push(
        Row::new(label, "memory", "serve peak RSS, after filing load")
            .value(loaded, "MiB")
            .target(Target::Value(Bound::AtMost(150.0))),
    );
    let errors = serve.logged_errors();
    serve.stop().await?;
    pool.close().await;
    fixture.tokens.clear();
    if !errors.is_empty() {
        anyhow::bail!("serve logged errors:\n{}", errors.join("\n"));
    }
    Ok(throughputs)
}

/// Waits until `serve`'s worker has sent every email queued so far. The poll
/// asks whether one unsent email is left, through the outbox's partial index of
/// undelivered rows: its CPU counts in the level's, and a `count(*)` of every
/// unsent row, every 20 ms, cost PostgreSQL about 65 µs per filing.
async fn emails_sent(pool: &Pool) -> Result<()> {
    const UNSENT: &str = "SELECT count(*) FROM (SELECT 1 FROM outbox \
         WHERE kind = 'email' AND status IN ('pending', 'sending') LIMIT 1) AS unsent";
    let (every, within) = (Duration::from_millis(20), Duration::from_secs(300));
    db::poll_scalar(pool, UNSENT, every, within, |unsent| unsent == 0).await?;
    Ok(())
}

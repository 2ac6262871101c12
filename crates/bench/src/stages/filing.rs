//! Stage 1 and 4: filing over HTTP through `serve` at 1, 8 and 32 clients, and
//! the peak memory of that `serve` idle and after the load.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use releasedesk_store::{FILING_BATCH_METRIC, Pool};

use crate::{
    Ctx, cpu,
    db::{self, Db, FreshDb},
    load,
    process::{self, Role, Service},
    report::{Bound, Report, Row, Target},
    seed::{Fixture, SeededNumber},
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
        .numbers(2 * warmup + per_level * (ctx.clients.len() + 1))
        .await?;
    let (warmup_numbers, numbers) = numbers.split_at(warmup);
    let (numbers, alone_numbers) = numbers.split_at(per_level * ctx.clients.len());
    let mut levels = numbers.chunks(per_level);

    let serve = Service::start(&ctx.binary, Role::Serve, &vars, fresh.path()).await?;
    let base = serve.url("");
    let idle = serve.peak_rss_mib()?;
    // For the metrics between levels; the load has connections of its own.
    let http = load::client(1)?;
    load::file_requests(&base, warmup_numbers, &fixture.tokens, 4).await?;
    emails_sent(&pool).await?;

    let level = Level {
        label,
        timeline: ctx.timeline.as_deref(),
        fresh,
        http: &http,
        tokens: &fixture.tokens,
    };
    let mut throughputs = Vec::new();
    for &clients in &ctx.clients {
        let slice = levels.next().context("a level's numbers")?;
        eprintln!("  {label}: filing {per_level} requests with {clients} clients");
        let name = format!("{clients} clients");
        // Each level starts with the emails of the earlier ones sent, and its CPU
        // per filing includes sending the filing's own two.
        let rps = level
            .measure(&serve, clients, &name, slice, Some(&pool), report)
            .await?;
        throughputs.push((clients, rps));
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
    let mut errors = serve.logged_errors();
    serve.stop().await?;

    // The same load on the customer API alone: what filing costs without the
    // email delivery `serve` does beside it (in production a worker process,
    // possibly on another host). The emails stay queued.
    if let Some(&clients) = ctx.clients.iter().max() {
        let (warmup_numbers, slice) = alone_numbers.split_at(warmup);
        let api = Service::start(&ctx.binary, Role::Api, &vars, fresh.path()).await?;
        let api_base = api.url("");
        load::file_requests(&api_base, warmup_numbers, &fixture.tokens, 4).await?;
        eprintln!("  {label}: filing {per_level} requests with {clients} clients, api alone");
        let name = format!("{clients} clients, {API_ALONE}");
        level
            .measure(&api, clients, &name, slice, None, report)
            .await?;
        errors.extend(api.logged_errors());
        api.stop().await?;
    }
    pool.close().await;
    fixture.tokens.clear();
    if !errors.is_empty() {
        anyhow::bail!(
            "the processes under test logged errors:\n{}",
            errors.join("\n")
        );
    }
    Ok(throughputs)
}

/// How the rows of the level on the customer API alone are named.
pub const API_ALONE: &str = "api alone (emails left queued)";

/// What every level of the stage shares.
struct Level<'a> {
    label: &'static str,
    /// The directory for each level's timeline, if one was asked for.
    timeline: Option<&'a std::path::Path>,
    fresh: &'a FreshDb,
    http: &'a reqwest::Client,
    tokens: &'a [String],
}

impl Level<'_> {
    /// Files a request for each of `numbers` through `service` with `clients`
    /// concurrent clients, then (given the pool) waits until every email is
    /// sent; pushes the level's rows, named "`name`: …", and returns its
    /// throughput. Without the pool it is the level on the API alone.
    async fn measure(
        &self,
        service: &Service,
        clients: usize,
        name: &str,
        numbers: &[SeededNumber],
        emails_of: Option<&Pool>,
        report: &mut Report,
    ) -> Result<f64> {
        let label = self.label;
        let base = service.url("");
        let before = cpu::sample(&[service.pid]);
        let groups_before = Groups::scrape(self.http, &base).await?;
        let outcome = load::file_requests(&base, numbers, self.tokens, clients).await?;
        if let Some(dir) = self.timeline {
            let file = timeline_file(self.fresh.db, clients, emails_of.is_none());
            load::write_timeline(&dir.join(file), &outcome)?;
        }
        if let Some(pool) = emails_of {
            emails_sent(pool).await?;
        }
        let usage = before.until(&cpu::sample(&[service.pid]), numbers.len());
        let groups = Groups::scrape(self.http, &base)
            .await?
            .since(&groups_before);
        // Read as none while absent: a renamed metric would otherwise show as
        // "0 filings per write" in the table.
        ensure!(
            groups.writes > 0.0,
            "{name}: no filing group in the service's /metrics ({FILING_BATCH_METRIC}) after {} filings",
            numbers.len()
        );
        let rps = outcome.per_second();
        let alone = emails_of.is_none();
        let mut row = Row::new(label, "filing", format!("{name}: throughput")).value(rps, "req/s");
        if clients == 32 && self.fresh.db == Db::Sqlite && !alone {
            row = row.target(Target::Value(Bound::AtLeast(3000.0)));
        }
        report.push(row);
        report.push(
            Row::new(label, "filing", format!("{name}: p50"))
                .value(load::ms(&outcome.latencies, 0.50), "ms"),
        );
        let p99 = Row::new(label, "filing", format!("{name}: p99"))
            .value(load::ms(&outcome.latencies, 0.99), "ms");
        report.push(if clients == 32 && !alone {
            p99.target(Target::Value(Bound::AtMost(25.0)))
        } else {
            p99
        });
        report.push(
            Row::new(label, "filing", format!("{name}: max"))
                .value(load::max_ms(&outcome.latencies), "ms"),
        );
        report.push(
            Row::new(label, "filing", format!("{name}: filings per write"))
                .value(groups.filings_per_write(), ""),
        );
        cpu::Rows {
            label,
            stage: "filing",
            prefix: name.to_owned(),
            unit: "filing",
            servers: Some(if alone { "api" } else { "serve" }),
            harness: Some("load generator"),
            postgres: self.fresh.db == Db::Postgres,
        }
        .push(report, &usage);
        Ok(rps)
    }
}

/// The name of a level's timeline file: `sqlite-32-clients.csv`, and
/// `…-api-alone.csv` for the level on the customer API alone.
fn timeline_file(db: Db, clients: usize, alone: bool) -> String {
    let alone = if alone { "-api-alone" } else { "" };
    format!("{}-{clients}-clients{alone}.csv", db.label().to_lowercase())
}

/// How `serve` grouped its filings so far, from its `/metrics`: filings and the
/// filing writer's write transactions. The larger the groups, the fewer
/// statements per filing the database runs. (A filing's token is checked by its
/// group's statements, so the token look-up's own batches stay empty here.)
#[derive(Debug, Default)]
struct Groups {
    filings: f64,
    writes: f64,
}

impl Groups {
    /// The figures so far; none (0) while the metric is absent, as it is until
    /// the first group is written.
    async fn scrape(http: &reqwest::Client, base: &str) -> Result<Self> {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let value = |suffix: &str| {
            let name = format!("{FILING_BATCH_METRIC}_{suffix} ");
            text.lines()
                .find_map(|line| line.strip_prefix(name.as_str()))
                .and_then(|v| v.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        Ok(Self {
            filings: value("sum"),
            writes: value("count"),
        })
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            filings: self.filings - earlier.filings,
            writes: self.writes - earlier.writes,
        }
    }

    fn filings_per_write(&self) -> f64 {
        self.filings / self.writes.max(1.0)
    }
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

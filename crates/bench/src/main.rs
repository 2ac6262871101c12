//! `releasedesk-bench`: throughput and latency of the real `releasedesk` binary,
//! measured against the database's own limit (pgbench, an SQLite insert loop,
//! apalis alone), on SQLite and PostgreSQL in one run.
//!
//! `cargo run --release -p releasedesk-bench -- --size full` builds the binary,
//! runs every stage on fresh databases and prints one table; `--write-doc` also
//! writes it into `docs/BENCHMARKS.md`. Exits non-zero only when a stage fails
//! to run; missed targets are reported, never asserted.

mod cpu;
mod db;
mod load;
mod process;
mod report;
mod seed;
mod stages;

use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::{Context as _, Result};
use clap::{Parser, ValueEnum};

use crate::{
    db::Db,
    report::{Bound, Report, Row, Target},
    stages::{filing, machine, queue, raw, reference, release},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Size {
    /// Seconds: for CI, checks that every stage runs.
    Tiny,
    /// A quick look (a few minutes).
    Small,
    /// The sizes: 10,000-release drains, 100,000 finished, 1,000,000 stored.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Stage {
    Filing,
    Raw,
    Latency,
    Drain,
    Reference,
    Queue,
}

#[derive(Debug, Parser)]
#[command(
    name = "releasedesk-bench",
    about = "Benchmarks of the real releasedesk binary"
)]
struct Args {
    #[arg(long, value_enum, default_value = "small")]
    size: Size,
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// Only these stages (comma-separated); all by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    stages: Vec<Stage>,
    /// Only these filing (and raw limit) client counts (comma-separated);
    /// 1, 8 and 32 by default. For quick comparisons of one level.
    #[arg(long, value_delimiter = ',')]
    clients: Vec<usize>,
    /// Filings per client level instead of the size's (10,000 at `full`): a
    /// longer level shows the rate of a load that lasts, not of a burst.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    filings: Option<u32>,
    /// Repeat the whole run and report the median of each measurement.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Write the results into docs/BENCHMARKS.md (between its generated markers).
    #[arg(long)]
    write_doc: bool,
    /// Write every filing level's requests into this directory, one CSV file
    /// per level (`client,sent_us,took_us,sent_unix_us`), to see when the
    /// slow ones came. With `--runs`, each run's files replace the last's.
    #[arg(long)]
    timeline: Option<PathBuf>,
    /// A free-text remark written beside the results (e.g. "machine shared").
    #[arg(long)]
    remark: Option<String>,
    /// PostgreSQL server for the fresh `releasedesk_bench_*` databases.
    #[arg(
        long,
        env = "BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres: String,
    /// The releasedesk binary; default: beside this one (built first under cargo run).
    #[arg(long)]
    releasedesk: Option<PathBuf>,
    #[arg(long, default_value = "/usr/bin/pgbench")]
    pgbench: PathBuf,
    #[arg(long, default_value = "/usr/lib/postgresql/15/bin/pg_test_fsync")]
    pg_test_fsync: PathBuf,
}

/// How much of everything a size means.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Filings per client level.
    pub filings: usize,
    pub raw_seconds: u32,
    /// Approvals timed one at a time.
    pub approvals: usize,
    /// Approved releases per drain (and reference jobs).
    pub drain: usize,
    /// Finished releases loaded before the second drain.
    pub history: usize,
    pub queue_requests: usize,
    pub queue_pending: usize,
    /// How many pages in the deep page is.
    pub queue_depth: usize,
    pub queue_samples: usize,
    pub fsync_probe: bool,
}

impl Plan {
    fn of(size: Size) -> Self {
        match size {
            Size::Tiny => Plan {
                filings: 40,
                raw_seconds: 1,
                approvals: 5,
                drain: 100,
                history: 500,
                queue_requests: 3_000,
                queue_pending: 300,
                queue_depth: 3,
                queue_samples: 20,
                fsync_probe: false,
            },
            Size::Small => Plan {
                filings: 1_000,
                raw_seconds: 3,
                approvals: 50,
                drain: 2_000,
                history: 10_000,
                queue_requests: 100_000,
                queue_pending: 2_000,
                queue_depth: 10,
                queue_samples: 100,
                fsync_probe: true,
            },
            Size::Full => Plan {
                filings: 10_000,
                raw_seconds: 10,
                approvals: 200,
                drain: 10_000,
                history: 100_000,
                queue_requests: 1_000_000,
                queue_pending: 10_000,
                queue_depth: 20,
                queue_samples: 300,
                fsync_probe: true,
            },
        }
    }
}

/// What every stage needs.
#[derive(Debug)]
pub struct Ctx {
    pub plan: Plan,
    pub binary: PathBuf,
    pub pg_url: String,
    pub pgbench: PathBuf,
    pub pg_test_fsync: PathBuf,
    pub backends: Vec<Db>,
    /// The client counts of the filing and raw limit levels.
    pub clients: Vec<usize>,
    /// Where the filing levels' timelines go, if anywhere (`--timeline`).
    pub timeline: Option<PathBuf>,
    stages: Vec<Stage>,
}

impl Ctx {
    fn runs(&self, stage: Stage) -> bool {
        self.stages.is_empty() || self.stages.contains(&stage)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode> {
    if args.releasedesk.is_none() {
        process::build_if_under_cargo()?;
    }
    let binary = process::locate(args.releasedesk.as_deref())?;
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: cargo build -p releasedesk (same profile) first",
        binary.display()
    );
    let mut plan = Plan::of(args.size);
    // Said beside the table: the rates are of levels of another length.
    let longer_levels = args.filings.map(|filings| {
        let usual = std::mem::replace(&mut plan.filings, filings as usize);
        format!("{filings} filings per client level (--filings), not the size's {usual}")
    });
    let ctx = Ctx {
        plan,
        binary,
        pg_url: args.postgres.clone(),
        pgbench: args.pgbench.clone(),
        pg_test_fsync: args.pg_test_fsync.clone(),
        backends: match args.backend {
            BackendArg::Sqlite => vec![Db::Sqlite],
            BackendArg::Postgres => vec![Db::Postgres],
            BackendArg::Both => vec![Db::Sqlite, Db::Postgres],
        },
        clients: if args.clients.is_empty() {
            filing::LEVELS.to_vec()
        } else {
            args.clients.clone()
        },
        timeline: args.timeline.clone(),
        stages: args.stages.clone(),
    };
    if let Some(dir) = &ctx.timeline {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let started = Instant::now();
    let mut runs = Vec::new();
    for i in 0..args.runs.max(1) {
        eprintln!("== run {} of {}", i + 1, args.runs.max(1));
        runs.push(one_run(&ctx).await);
    }
    let mut report = Report::median_of(runs);
    report.machine = machine::describe(&ctx).await?;
    if let Some(remark) = &args.remark {
        report.notes.insert(0, remark.clone());
    }
    if let Some(note) = longer_levels {
        report.notes.insert(0, note);
    }
    let size = format!("{:?}", args.size).to_lowercase();
    println!();
    println!(
        "ReleaseDesk benchmarks, size {size}, {} run(s), {:.0?}",
        args.runs.max(1),
        started.elapsed()
    );
    for (key, value) in &report.machine {
        println!("  {key}: {value}");
    }
    println!();
    print!("{}", report.text_table());
    println!("\n{} target(s) missed.", report.misses());
    for error in &report.errors {
        println!("STAGE FAILED: {error}");
    }
    if args.write_doc {
        let path = doc::write(&report, &size, args.runs.max(1))?;
        println!("wrote {}", path.display());
    }
    Ok(if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Runs a stage; a failure is recorded and the run goes on.
macro_rules! stage {
    ($report:expr, $db:expr, $name:expr, $body:expr) => {{
        eprintln!("-- {} {}", $db.label(), $name);
        let started = Instant::now();
        match $body.await {
            Ok(value) => {
                eprintln!("   done in {:.1?}", started.elapsed());
                Some(value)
            }
            Err(error) => {
                eprintln!("   FAILED: {error:#}");
                $report
                    .errors
                    .push(format!("{} {}: {error:#}", $db.label(), $name));
                None
            }
        }
    }};
}

async fn one_run(ctx: &Ctx) -> Report {
    let mut report = Report::default();
    for &db in &ctx.backends {
        let label = db.label();
        let api = if ctx.runs(Stage::Filing) {
            stage!(report, db, "filing", filing::run(ctx, db, &mut report))
        } else {
            None
        };
        let raw_tps = if ctx.runs(Stage::Raw) {
            stage!(report, db, "raw limit", raw::run(ctx, db, &mut report))
        } else {
            None
        };
        if let (Some(api), Some(raw_tps)) = (&api, &raw_tps) {
            for ((clients, api), (_, raw)) in api.iter().zip(raw_tps) {
                let metric = format!("{clients} clients: throughput");
                if let Some(row) = report
                    .rows
                    .iter_mut()
                    .find(|r| r.backend == label && r.stage == "filing" && r.metric == metric)
                {
                    row.ratio = Some(("API/raw", api / raw));
                    if db == Db::Postgres && *clients == 32 {
                        row.target = Some(Target::Ratio(Bound::AtLeast(0.4)));
                    }
                }
                let alone = format!("{clients} clients, {}: throughput", filing::API_ALONE);
                if let Some(row) = report
                    .rows
                    .iter_mut()
                    .find(|r| r.backend == label && r.stage == "filing" && r.metric == alone)
                {
                    row.ratio = Some(("API/raw", row.value / raw));
                }
            }
        }
        if db == Db::Postgres
            && ctx.runs(Stage::Raw)
            && let Some(writes) = stage!(
                report,
                db,
                "raw limit, a filing's statements",
                raw::filing_writes(ctx, FILING_WRITES_CLIENTS)
            )
        {
            filing_writes_rows(&mut report, api.as_deref(), raw_tps.as_deref(), writes);
        }
        if ctx.runs(Stage::Latency)
            && let Some(h) = stage!(report, db, "approve → released", release::latency(ctx, db))
        {
            let (p50, p99) = match db {
                Db::Postgres => (20.0, 100.0),
                Db::Sqlite => (10.0, 50.0),
            };
            let stage = "approve → released";
            let n = h.len();
            report.push(
                Row::new(label, stage, format!("p50 ({n} approvals, serve)"))
                    .value(load::ms(&h, 0.5), "ms")
                    .target(Target::Value(Bound::AtMost(p50))),
            );
            report.push(
                Row::new(label, stage, format!("p99 ({n} approvals, serve)"))
                    .value(load::ms(&h, 0.99), "ms")
                    .target(Target::Value(Bound::AtMost(p99))),
            );
        }
        drains(ctx, db, &mut report).await;
        if ctx.runs(Stage::Queue) {
            stage!(
                report,
                db,
                "reviewer queue",
                queue::run(ctx, db, &mut report)
            );
        }
    }
    report
}

/// The client count of the PostgreSQL filing target.
const FILING_WRITES_CLIENTS: usize = 32;

/// The database's limit for a filing's statements, one filing per transaction
/// and in `serve`'s groups, beside the one-row limit and the API at the same
/// client count.
fn filing_writes_rows(
    report: &mut Report,
    api: Option<&[(usize, f64)]>,
    raw: Option<&[(usize, f64)]>,
    writes: raw::FilingWrites,
) {
    let label = Db::Postgres.label();
    let at = |levels: Option<&[(usize, f64)]>| {
        levels?
            .iter()
            .find(|(clients, _)| *clients == FILING_WRITES_CLIENTS)
            .map(|(_, value)| *value)
    };
    let clients = FILING_WRITES_CLIENTS;
    let group = raw::GROUP;
    for (name, rate) in [
        ("one filing's statements", writes.one_by_one),
        (
            &*format!("serve's statements for groups of {group} filings"),
            writes.grouped,
        ),
    ] {
        let mut row = Row::new(
            label,
            "raw limit",
            format!("{clients} clients: pgbench, {name}"),
        )
        .value(rate, "filings/s");
        if let Some(raw) = at(raw) {
            row = row.ratio("÷ one-row INSERT", rate / raw);
        }
        report.push(row);
        if let Some(api) = at(api) {
            report.push(
                Row::new(
                    label,
                    "filing",
                    format!("{clients} clients: API ÷ pgbench of {name}"),
                )
                .value(api / rate, "×"),
            );
        }
    }
    let grouped = format!("{clients} clients: pgbench in groups of {group}: CPU per filing");
    report.push(
        Row::new(label, "raw limit", format!("{grouped}, PostgreSQL"))
            .value(writes.grouped_cpu.database_us, "µs"),
    );
    report.push(
        Row::new(label, "raw limit", format!("{grouped}, pgbench"))
            .value(writes.grouped_cpu.server_us, "µs"),
    );
}

/// The drains, each beside what it is divided by: ours and the reference
/// with one worker, the same two after history (so a machine whose speed
/// drifts through a run moves both sides of "÷ fresh" alike), then two
/// workers on PostgreSQL.
async fn drains(ctx: &Ctx, db: Db, report: &mut Report) {
    let worker_counts: &[usize] = match db {
        Db::Postgres => &[1, 2],
        Db::Sqlite => &[1],
    };
    for &workers in worker_counts {
        let fresh = fresh_drains(ctx, db, workers, report).await;
        if workers == 1 {
            drains_after_history(ctx, db, fresh, report).await;
        }
    }
}

/// A fresh database's drain and reference drain with `workers` workers
/// (each `None` where not run or failed).
async fn fresh_drains(
    ctx: &Ctx,
    db: Db,
    workers: usize,
    report: &mut Report,
) -> (Option<f64>, Option<f64>) {
    let label = db.label();
    let n = ctx.plan.drain;
    let ours_rate = if ctx.runs(Stage::Drain) {
        stage!(
            report,
            db,
            format!("drain, {workers} worker(s)"),
            release::drain(ctx, db, workers, 0, report)
        )
    } else {
        None
    };
    let reference_rate = if ctx.runs(Stage::Reference) {
        stage!(
            report,
            db,
            format!("reference, {workers} worker(s)"),
            reference::drain(ctx, db, workers, 0, report)
        )
    } else {
        None
    };
    let stage = "drain";
    if let Some(rate) = reference_rate {
        report.push(
            Row::new(
                label,
                stage,
                format!("reference (apalis alone), {workers} worker(s), {n} jobs"),
            )
            .value(rate, "jobs/s"),
        );
    }
    if let Some(rate) = ours_rate {
        let target = match (db, workers) {
            (Db::Sqlite, _) => 1500.0,
            (Db::Postgres, 1) => 1000.0,
            (Db::Postgres, _) => 1500.0,
        };
        let mut row = Row::new(label, stage, format!("{workers} worker(s), {n} approved"))
            .value(rate, "releases/s")
            .target(Target::Value(Bound::AtLeast(target)));
        if let Some(reference) = reference_rate {
            row = row.ratio("÷ reference", rate / reference);
        }
        report.push(row);
        if let Some(reference) = reference_rate {
            report.push(
                Row::new(label, stage, format!("{workers} worker(s) ÷ reference"))
                    .value(rate / reference, "×")
                    .target(Target::Value(Bound::AtLeast(0.7))),
            );
        }
    }
    (ours_rate, reference_rate)
}

/// The one-worker drain and reference drain after `plan.history` finished,
/// each divided by its fresh rate (`fresh`: ours, reference).
async fn drains_after_history(
    ctx: &Ctx,
    db: Db,
    (ours_fresh, reference_fresh): (Option<f64>, Option<f64>),
    report: &mut Report,
) {
    let label = db.label();
    let h = ctx.plan.history;
    let stage = "drain after history";
    if ctx.runs(Stage::Drain)
        && let Some(rate) = stage!(
            report,
            db,
            "drain after history",
            release::drain(ctx, db, 1, h, report)
        )
    {
        let mut row = Row::new(label, stage, format!("1 worker, {h} finished before"))
            .value(rate, "releases/s");
        if let Some(fresh) = ours_fresh {
            row = row
                .ratio("÷ fresh", rate / fresh)
                .target(Target::Ratio(Bound::AtLeast(0.9)));
        }
        report.push(row);
    }
    if ctx.runs(Stage::Reference)
        && let Some(rate) = stage!(
            report,
            db,
            "reference after history",
            reference::drain(ctx, db, 1, h, report)
        )
    {
        let mut row = Row::new(
            label,
            stage,
            format!("reference, 1 worker, {h} finished before"),
        )
        .value(rate, "jobs/s");
        if let Some(fresh) = reference_fresh {
            row = row.ratio("÷ fresh", rate / fresh);
        }
        report.push(row);
    }
}

mod doc {
    //! The generated part of `docs/BENCHMARKS.md`.

    use std::path::PathBuf;

    use anyhow::{Context, Result};

    use crate::report::Report;

    const BEGIN: &str = "<!-- bench:begin (written by releasedesk-bench --write-doc) -->";
    const END: &str = "<!-- bench:end -->";

    pub fn path() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/BENCHMARKS.md")
    }

    pub fn write(report: &Report, size: &str, runs: usize) -> Result<PathBuf> {
        let path = path();
        let mut section = format!(
            "{BEGIN}\n\n### Latest run: size `{size}`, {runs} run(s), {}\n\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
        );
        for note in &report.notes {
            section += &format!("> {note}\n\n");
        }
        section += "| machine | |\n| --- | --- |\n";
        for (key, value) in &report.machine {
            section += &format!("| {key} | {value} |\n");
        }
        section += "\n";
        section += &report.markdown();
        for error in &report.errors {
            section += &format!("\n**Stage failed:** {error}\n");
        }
        section += &format!("\n{END}\n");
        let existing = std::fs::read_to_string(&path).unwrap_or_else(|_| {
            "# Benchmarks\n\nRun: `cargo run --release -p releasedesk-bench -- --size full`\n\n"
                .to_owned()
        });
        let updated = match (existing.find(BEGIN), existing.find(END)) {
            (Some(b), Some(e)) if b < e => {
                format!(
                    "{}{}{}",
                    &existing[..b],
                    section.trim_end(),
                    &existing[e + END.len()..]
                )
            }
            _ => format!("{}\n{section}", existing.trim_end()),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).context("create docs/")?;
        }
        std::fs::write(&path, updated).with_context(|| format!("write {}", path.display()))?;
        Ok(path)
    }
}

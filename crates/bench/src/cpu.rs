//! Where the CPU went during a measurement: the process under test, the
//! database server's processes and the load generator (this process), from
//! `/proc/<pid>/stat` (user + system time of all threads). On a machine this
//! small they share the same cores, so a throughput is only "the database's
//! limit" if the database is what used them.

use std::time::{Duration, Instant};

/// CPU seconds used so far, per party.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    server: f64,
    database: f64,
    harness: f64,
}

/// CPU used between two samples, per unit of work.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Microseconds of CPU per unit, in the processes under test.
    pub server_us: f64,
    /// In PostgreSQL's processes (0 on SQLite, which runs inside the server).
    pub database_us: f64,
    pub harness_us: f64,
    /// Share of all cores busy with the three, over the wall time (0–1).
    pub busy: f64,
}

/// CPU so far of `servers` (the processes under test; their whole lifetime),
/// of PostgreSQL and of this process.
pub fn sample(servers: &[u32]) -> Sample {
    Sample {
        at: Instant::now(),
        server: servers.iter().filter_map(|&pid| process_seconds(pid)).sum(),
        database: postgres_seconds(),
        harness: process_seconds(std::process::id()).unwrap_or(0.0),
    }
}

impl Sample {
    /// Wall seconds from `earlier` to `self`.
    pub fn seconds_since(&self, earlier: &Sample) -> f64 {
        self.at.duration_since(earlier.at).as_secs_f64()
    }

    /// Usage from `self` to `later`, per `units` of work done in between.
    pub fn until(&self, later: &Sample, units: usize) -> Usage {
        let per = |a: f64, b: f64| (b - a).max(0.0) * 1e6 / units.max(1) as f64;
        let wall = later
            .at
            .duration_since(self.at)
            .max(Duration::from_micros(1));
        let used = (later.server - self.server)
            + (later.database - self.database)
            + (later.harness - self.harness);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        Usage {
            server_us: per(self.server, later.server),
            database_us: per(self.database, later.database),
            harness_us: per(self.harness, later.harness),
            busy: (used / (wall.as_secs_f64() * cores)).clamp(0.0, 1.0),
        }
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times (USER_HZ: 100 on Linux).
const TICKS: f64 = 100.0;

fn process_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat).map(|(_, seconds)| seconds)
}

/// The command name and user + system seconds of one `/proc/<pid>/stat` line.
fn parse_stat(stat: &str) -> Option<(&str, f64)> {
    // The command is parenthesized and may hold spaces: split after its `)`.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = &stat[open + 1..close];
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the command: state(0) … utime(11) stime(12).
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((comm, (utime + stime) / TICKS))
}

/// CPU seconds of every `postgres` process on the machine (the server's
/// backends come and go; ones that ended between samples are not counted, so
/// this is a lower bound when connections are short-lived).
fn postgres_seconds() -> f64 {
    processes_named("postgres")
        .map(|(_, seconds)| seconds)
        .sum()
}

/// The processes whose command is `name`: pid and CPU seconds so far.
fn processes_named(name: &str) -> impl Iterator<Item = (u32, f64)> + '_ {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(move |e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (comm, seconds) = parse_stat(&stat)?;
            (comm == name).then_some((pid, seconds))
        })
}

/// The pids of the processes whose command is `name` (a load generator such
/// as pgbench, to sample as the process under test).
pub fn pids_named(name: &str) -> Vec<u32> {
    processes_named(name).map(|(pid, _)| pid).collect()
}

/// Who a measurement's CPU rows name, and per what.
pub struct Rows<'a> {
    pub label: &'static str,
    pub stage: &'static str,
    /// Starts every row's name ("32 clients", "1 worker(s)").
    pub prefix: String,
    /// The unit of work ("filing", "release", "job").
    pub unit: &'a str,
    /// The processes under test, if any.
    pub servers: Option<&'a str>,
    /// This harness, when it did work worth counting.
    pub harness: Option<&'a str>,
    /// PostgreSQL (its own row; on SQLite the database runs inside the server).
    pub postgres: bool,
}

impl<'a> Rows<'a> {
    /// The rows of a drain by `workers` workers after `history` finished
    /// releases; `subject` starts their names ("reference, " or nothing).
    pub fn drain(
        db: crate::db::Db,
        subject: &str,
        workers: usize,
        history: usize,
        unit: &'a str,
    ) -> Self {
        let mut prefix = format!("{subject}{workers} worker(s)");
        if history > 0 {
            prefix += &format!(", {history} finished before");
        }
        Rows {
            label: db.label(),
            stage: if history > 0 {
                "drain after history"
            } else {
                "drain"
            },
            prefix,
            unit,
            servers: None,
            harness: None,
            postgres: db == crate::db::Db::Postgres,
        }
    }

    /// CPU per unit of each party, and how busy the cores were.
    pub fn push(&self, report: &mut crate::report::Report, usage: &Usage) {
        use crate::report::Row;
        let (label, stage) = (self.label, self.stage);
        let per = |what: &str| format!("{}: CPU per {}, {what}", self.prefix, self.unit);
        if let Some(servers) = self.servers {
            report.push(Row::new(label, stage, per(servers)).value(usage.server_us, "µs"));
        }
        if self.postgres {
            report.push(Row::new(label, stage, per("PostgreSQL")).value(usage.database_us, "µs"));
        }
        if let Some(harness) = self.harness {
            report.push(Row::new(label, stage, per(harness)).value(usage.harness_us, "µs"));
        }
        report.push(
            Row::new(label, stage, format!("{}: cores busy", self.prefix))
                .value(usage.busy * 100.0, "%"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_command_and_cpu_seconds_even_with_spaces_in_the_name() {
        let line = "4242 (postgres: bench x) S 1 4242 4242 0 -1 4194560 \
                    100 0 0 0 250 50 0 0 20 0 1 0 100 1000 10";
        assert_eq!(parse_stat(line), Some(("postgres: bench x", 3.0)));
    }
}

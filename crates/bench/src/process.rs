//! The real `releasedesk` binary as a subprocess: started with the benchmark's
//! environment, ready once it says so, stopped with SIGTERM.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    sync::oneshot,
};

use crate::db::FreshDb;

/// Where the binary is: `--releasedesk`, else beside this benchmark binary.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_owned());
    }
    let exe = std::env::current_exe().context("find the benchmark binary")?;
    let dir = exe.parent().context("benchmark binary has no directory")?;
    Ok(dir.join(format!("releasedesk{}", std::env::consts::EXE_SUFFIX)))
}

/// Under `cargo run`, builds `releasedesk` in the same profile first (a no-op when
/// it is up to date), so the one documented command never measures a stale binary.
pub fn build_if_under_cargo() -> Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(());
    };
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "--quiet", "-p", "releasedesk"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    eprintln!("building releasedesk ({})", profile());
    let status = command.status().context("run cargo build")?;
    if !status.success() {
        bail!("cargo build -p releasedesk failed");
    }
    Ok(())
}

pub fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Which subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Serve,
    /// The customer API without a worker.
    Api,
    Reviewer,
    Worker,
}

impl Role {
    fn args(self) -> &'static [&'static str] {
        match self {
            Role::Serve => &["serve", "--addr", "127.0.0.1:0"],
            Role::Api => &["api", "--addr", "127.0.0.1:0"],
            Role::Reviewer => &["reviewer", "--addr", "127.0.0.1:0"],
            Role::Worker => &["worker"],
        }
    }

    fn name(self) -> &'static str {
        match self {
            Role::Serve => "serve",
            Role::Api => "api",
            Role::Reviewer => "reviewer",
            Role::Worker => "worker",
        }
    }
}

/// The environment every process of one run shares: the production defaults
/// except the database, an `.eml` outbox in the scratch directory, no rate limit,
/// and warnings-only logs.
pub fn environment(fresh: &FreshDb) -> Vec<(String, String)> {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), fresh.url.clone()),
        (
            "RELEASEDESK__MAIL__OUTBOX_DIR".to_owned(),
            fresh.mail_dir().display().to_string(),
        ),
        ("RELEASEDESK__CARRIER__KIND".to_owned(), "local".to_owned()),
        (
            "RELEASEDESK__RATE_LIMIT__PER_SECOND".to_owned(),
            "1000000".to_owned(),
        ),
        (
            "RELEASEDESK__RATE_LIMIT__BURST".to_owned(),
            "1000000".to_owned(),
        ),
        // `BENCH_RUST_LOG` to look inside a run (e.g. `sqlx::query=debug` times
        // every statement); logging costs time, so never for figures quoted.
        (
            "RUST_LOG".to_owned(),
            std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "warn".to_owned()),
        ),
        ("NO_COLOR".to_owned(), "1".to_owned()),
    ];
    for passed in ["PATH", "HOME", "TMPDIR"] {
        if let Ok(value) = std::env::var(passed) {
            vars.push((passed.to_owned(), value));
        }
    }
    vars
}

/// One running process; killed if still running when dropped.
#[derive(Debug)]
pub struct Service {
    child: Option<Child>,
    pub pid: u32,
    pub base_url: Option<String>,
    /// When it said it was ready (listening, or the worker running).
    pub ready_at: chrono::DateTime<chrono::Utc>,
    /// From the spawn to that moment: connecting, migrations and the queue's
    /// setup.
    pub start_up: Duration,
    role: Role,
    log: PathBuf,
}

impl Service {
    pub async fn start(
        binary: &Path,
        role: Role,
        vars: &[(String, String)],
        dir: &Path,
    ) -> Result<Service> {
        // `BENCH_LOG_DIR` keeps the logs after the run (the scratch directory
        // goes with its database).
        let log_dir =
            std::env::var_os("BENCH_LOG_DIR").map_or_else(|| dir.to_owned(), PathBuf::from);
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("create {}", log_dir.display()))?;
        let log = log_dir.join(format!(
            "{}-{}.log",
            role.name(),
            uuid::Uuid::new_v4().simple()
        ));
        let stderr = std::fs::File::create(&log).context("create a process log")?;
        let spawned = std::time::Instant::now();
        let mut child = Command::new(binary)
            .args(role.args())
            .env_clear()
            .envs(vars.iter().map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id().context("the process has no pid")?;
        let stdout = child.stdout.take().context("piped stdout")?;
        let (ready, ready_rx) = oneshot::channel::<Option<String>>();
        tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let signal = if let Some(url) = line.strip_prefix("ReleaseDesk listening on ") {
                    Some(Some(url.trim().to_owned()))
                } else if line.starts_with("ReleaseDesk worker running") {
                    Some(None)
                } else {
                    None
                };
                if let Some(value) = signal
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(value);
                }
            }
        });
        let base_url = tokio::select! {
            url = ready_rx => url.ok(),
            status = child.wait() => bail!(
                "releasedesk {} exited before it was ready ({status:?}); log:\n{}",
                role.name(),
                tail(&log)
            ),
            () = tokio::time::sleep(Duration::from_secs(120)) => bail!(
                "releasedesk {} was not ready within 2 minutes; log:\n{}",
                role.name(),
                tail(&log)
            ),
        };
        let (ready_at, start_up) = (chrono::Utc::now(), spawned.elapsed());
        let Some(base_url) = base_url else {
            bail!(
                "releasedesk {} closed its output before it was ready; log:\n{}",
                role.name(),
                tail(&log)
            );
        };
        Ok(Service {
            child: Some(child),
            pid,
            base_url,
            ready_at,
            start_up,
            role,
            log,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.as_deref().unwrap_or_default())
    }

    /// Peak resident set (VmHWM) in MiB.
    pub fn peak_rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .context("read /proc/<pid>/status")?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kib / 1024.0)
    }

    /// SIGTERM, then up to 20 s to drain; SIGKILL after that.
    pub async fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!(
                "releasedesk {} exited with {status}; log:\n{}",
                self.role.name(),
                tail(&self.log)
            ),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("releasedesk {} did not stop within 20 s", self.role.name())
            }
        }
    }

    /// Whether the process logged errors (a benchmark on a failing system is void).
    pub fn logged_errors(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("ERROR"))
            .take(5)
            .map(str::to_owned)
            .collect()
    }
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Runs `releasedesk migrate` (schema and queue tables) on a fresh database.
pub async fn migrate(binary: &Path, vars: &[(String, String)], dir: &Path) -> Result<()> {
    let output = Command::new(binary)
        .arg("migrate")
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .current_dir(dir)
        .output()
        .await
        .with_context(|| format!("run {} migrate", binary.display()))?;
    if !output.status.success() {
        bail!(
            "releasedesk migrate failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

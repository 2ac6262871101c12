//! The real `releasedesk` binary as a running service (`serve`, `api`, `reviewer`
//! or `worker`): started with a test's environment, ready once it says so, killed
//! (SIGKILL) or stopped (SIGTERM) as an operator or a crash would, and started
//! again.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, BufReader},
    process::{Child, Command},
};

use crate::{binary, carrier::StandInCarrier};

/// How long a process may take to migrate and say that it is ready.
const STARTUP: Duration = Duration::from_secs(60);
/// How long a process may take to drain after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(20);

/// Which part of ReleaseDesk a process runs: its subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Everything in one process: both APIs, the console and the worker.
    Serve,
    /// The customer API only.
    Api,
    /// The reviewer API and console only.
    Reviewer,
    /// The worker only: releases, emails, schedules.
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

/// The environment of a `releasedesk` process. Nothing else of the test's
/// environment leaks in (no stray `RELEASEDESK_CONFIG`, `SMTP_URL` or
/// `RELEASEDESK__…`), and the process runs in a temporary directory of its own.
#[derive(Debug, Clone)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    // Shared by clones (a restart uses the same directory); removed with the last.
    home: Arc<tempfile::TempDir>,
}

impl Environment {
    /// `database_url`, the local carrier, emails as `.eml` files in
    /// [`Environment::outbox_dir`], and a worker paced for tests: 20 ms polls, a
    /// sweep every second, 2 s leases, retries from 100 ms up to 1 s.
    pub fn new(database_url: &str) -> Self {
        let home = tempfile::tempdir().expect("a directory for the process");
        let outbox = home.path().join("mail");
        let mut environment = Self {
            vars: BTreeMap::new(),
            home: Arc::new(home),
        };
        environment = environment
            .set("DATABASE_URL", database_url)
            .set(
                "RELEASEDESK__MAIL__OUTBOX_DIR",
                outbox.display().to_string(),
            )
            .set("RELEASEDESK__WORKER__POLL_INTERVAL", "20ms")
            .set("RELEASEDESK__WORKER__SWEEP_INTERVAL", "1s")
            .set("RELEASEDESK__WORKER__LEASE", "2s")
            // A carrier call must end before the lease does.
            .set("RELEASEDESK__CARRIER__TIMEOUT", "1s")
            .set("RELEASEDESK__WORKER__RETRY_BASE", "100ms")
            .set("RELEASEDESK__WORKER__RETRY_MAX", "1s")
            // `Service` waits for the worker's "worker started" line at info.
            .set(
                "RUST_LOG",
                "info,sqlx=warn,sea_orm=warn,sea_orm_migration=warn,tower_http=warn",
            )
            .set("NO_COLOR", "1");
        for passed in ["PATH", "HOME", "TMPDIR"] {
            if let Ok(value) = std::env::var(passed) {
                environment = environment.set(passed, value);
            }
        }
        environment
    }

    /// The HTTP carrier adapter, pointed at `carrier` with its secret.
    pub fn carrier(self, carrier: &StandInCarrier) -> Self {
        self.set("RELEASEDESK__CARRIER__KIND", "http")
            .set("RELEASEDESK__CARRIER__URL", carrier.url.clone())
            .set("RELEASEDESK__CARRIER__SECRET", crate::carrier::SECRET)
            .set("RELEASEDESK__CARRIER__TIMEOUT", "1s")
    }

    /// Emails over SMTP at `url` instead of `.eml` files.
    pub fn smtp(self, url: &str) -> Self {
        self.set("SMTP_URL", url)
    }

    pub fn set(mut self, key: &str, value: impl Into<String>) -> Self {
        self.vars.insert(key.to_owned(), value.into());
        self
    }

    pub fn remove(mut self, key: &str) -> Self {
        self.vars.remove(key);
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.get(key).map(String::as_str)
    }

    /// Where emails go as `.eml` files when there is no SMTP server.
    pub fn outbox_dir(&self) -> PathBuf {
        self.home.path().join("mail")
    }

    fn home(&self) -> &Path {
        self.home.path()
    }
}

/// The lines a process wrote to stdout and stderr, in the order they were read.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<String>>>);

impl Output {
    fn push(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|line| line.contains(needle))
    }

    /// The URL of a "ReleaseDesk listening on http://…" line, once one was read.
    fn listening_on(&self) -> Option<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find_map(|line| line.strip_prefix("ReleaseDesk listening on "))
            .map(|url| url.trim().to_owned())
    }
}

/// Copies each line of `stream` into `output` and, tagged with `label`, to the
/// test's stderr (which the test runner shows for a failed test).
async fn forward(stream: impl AsyncRead + Unpin, label: String, output: Output) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{label}] {line}");
        output.push(line);
    }
}

/// One running `releasedesk` process; SIGKILLed if still running when dropped.
pub struct Service {
    role: Role,
    environment: Environment,
    child: Option<Child>,
    pid: u32,
    base_url: Option<String>,
    output: Output,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("role", &self.role)
            .field("pid", &self.pid)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// Starts `releasedesk <role>` and waits until it is ready: an HTTP process
    /// once it printed "ReleaseDesk listening on …" (its listener is bound), a
    /// worker once it logged "worker started" (migrations are done). Panics, with
    /// the process's output, if it exits or takes longer than a minute.
    pub async fn start(role: Role, environment: &Environment) -> Service {
        let mut service = Service {
            role,
            environment: environment.clone(),
            child: None,
            pid: 0,
            base_url: None,
            output: Output::default(),
        };
        service.spawn().await;
        service
    }

    async fn spawn(&mut self) {
        let mut child = Command::new(binary::path())
            .args(self.role.args())
            .env_clear()
            .envs(&self.environment.vars)
            .current_dir(self.environment.home())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start releasedesk");
        let pid = child.id().expect("a running child has a pid");
        let output = Output::default();
        let label = format!("{} {pid}", self.role.name());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        tokio::spawn(forward(stdout, label.clone(), output.clone()));
        tokio::spawn(forward(stderr, label, output.clone()));

        let role = self.role;
        let ready = async {
            loop {
                let ready = match role {
                    Role::Worker => output.contains("worker started").then(String::new),
                    _ => output.listening_on(),
                };
                if let Some(url) = ready {
                    return url;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let url = tokio::select! {
            url = ready => url,
            status = child.wait() => panic!(
                "releasedesk {} exited before it was ready ({status:?}):\n{}",
                role.name(),
                output.lines().join("\n")
            ),
            () = tokio::time::sleep(STARTUP) => panic!(
                "releasedesk {} was not ready within {STARTUP:?}:\n{}",
                role.name(),
                output.lines().join("\n")
            ),
        };
        self.base_url = (role != Role::Worker).then_some(url);
        self.child = Some(child);
        self.pid = pid;
        self.output = output;
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn environment(&self) -> &Environment {
        &self.environment
    }

    /// `http://127.0.0.1:PORT` of an HTTP process (a new port after a restart).
    pub fn base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .expect("only serve, api and reviewer listen")
    }

    /// `base_url` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url())
    }

    /// Every line this run of the process wrote (stdout and stderr).
    pub fn output(&self) -> Vec<String> {
        self.output.lines()
    }

    /// Whether this run of the process wrote a line containing `needle`.
    pub fn said(&self, needle: &str) -> bool {
        self.output.contains(needle)
    }

    /// Waits up to `within` for a line containing `needle`.
    pub async fn wait_for_output(&self, needle: &str, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if self.said(needle) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.said(needle)
    }

    /// SIGKILL, as a crash or an OOM kill would: nothing runs to completion.
    pub async fn kill(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the process is running");
        child.start_kill().expect("SIGKILL releasedesk");
        child.wait().await.expect("reap releasedesk")
    }

    /// SIGTERM, as an orchestrator stops a service; asserts that it drains and
    /// exits with status 0 within 20 seconds.
    pub async fn terminate(&mut self) {
        let mut child = self.child.take().expect("the process is running");
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {} failed", self.pid);
        let status = match tokio::time::timeout(SHUTDOWN, child.wait()).await {
            Ok(status) => status.expect("reap releasedesk"),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                panic!(
                    "releasedesk {} did not exit within {SHUTDOWN:?} of SIGTERM:\n{}",
                    self.role.name(),
                    self.output().join("\n")
                );
            }
        };
        assert!(
            status.success(),
            "releasedesk {} exited with {status} after SIGTERM:\n{}",
            self.role.name(),
            self.output().join("\n")
        );
    }

    /// Starts the process again with the same environment (killing it first if
    /// it still runs).
    pub async fn restart(&mut self) {
        let environment = self.environment.clone();
        self.restart_with(environment).await;
    }

    /// Starts the process again with `environment` (killing it first if it still
    /// runs), e.g. the same one without a fail point.
    pub async fn restart_with(&mut self, environment: Environment) {
        if self.child.is_some() {
            self.kill().await;
        }
        self.environment = environment;
        self.spawn().await;
    }
}

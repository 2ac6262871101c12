//! A PostgreSQL server of a test's own (`initdb` + `pg_ctl` from the machine's
//! PostgreSQL installation, on a free port), for tests that stop and restart the
//! database — which they must never do to the server other tests share.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::database::postgres_required;

/// A private PostgreSQL cluster; stopped and removed on drop.
pub struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// As root, PostgreSQL's tools run as the `postgres` user.
    as_postgres: bool,
    _dir: tempfile::TempDir,
}

/// The newest `bin` directory of a Debian PostgreSQL installation.
fn pg_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl PrivateCluster {
    /// Initialises and starts a cluster. `None` (with a message) when the
    /// PostgreSQL server binaries are missing and `CI` is not set; under CI that
    /// fails the test.
    pub fn start() -> Option<Self> {
        let Some(bin) = pg_bin() else {
            let why = "no PostgreSQL server binaries under /usr/lib/postgresql";
            assert!(
                !postgres_required(),
                "{why} (CI=true: failing, not skipping)"
            );
            eprintln!("SKIPPED: {why}");
            return None;
        };
        let dir = tempfile::tempdir().expect("a directory for the cluster");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("data directory");
        let as_postgres = is_root();
        if as_postgres {
            // The postgres user must reach and own its data directory.
            let status = Command::new("chmod")
                .arg("755")
                .arg(dir.path())
                .status()
                .expect("chmod");
            assert!(status.success());
            let status = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&data)
                .status()
                .expect("chown");
            assert!(status.success());
        }
        let cluster = Self {
            bin,
            data,
            port: free_port(),
            as_postgres,
            _dir: dir,
        };
        cluster.run(
            "initdb",
            &["-A", "trust", "-U", "postgres", "--no-sync", "-D"],
            true,
        );
        cluster.start_server();
        Some(cluster)
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c fsync=off",
            self.port
        );
        let log = self.data.join("server.log");
        self.run_args(&[
            "pg_ctl",
            "-w",
            "-t",
            "60",
            "-D",
            &path(&self.data),
            "-l",
            &path(&log),
            "-o",
            &options,
            "start",
        ]);
    }

    /// Stops the server the way an operator's restart does: connections are
    /// terminated, new ones refused until it is back.
    pub fn stop_server(&self) {
        self.run_args(&[
            "pg_ctl",
            "-w",
            "-D",
            &path(&self.data),
            "-m",
            "fast",
            "stop",
        ]);
    }

    fn run(&self, tool: &str, args: &[&str], data_last: bool) {
        let mut all = vec![tool];
        all.extend_from_slice(args);
        let data = path(&self.data);
        if data_last {
            all.push(&data);
        }
        self.run_args(&all);
    }

    fn run_args(&self, args: &[&str]) {
        let tool = self.bin.join(args[0]);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        let output = command
            .args(&args[1..])
            .current_dir("/")
            .output()
            .expect("run a PostgreSQL tool");
        assert!(
            output.status.success(),
            "{} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let tool = self.bin.join("pg_ctl");
        let data = path(&self.data);
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if self.as_postgres {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&tool)
                .args(args)
                .output()
        } else {
            Command::new(&tool).args(args).output()
        };
    }
}

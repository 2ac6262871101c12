//! Running the real `releasedesk` binary.

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// The `releasedesk` binary, as cargo built it for these tests (this package
/// builds `crates/releasedesk/src/main.rs` as `releasedesk-under-test`).
pub fn path() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = dir.join(format!(
        "releasedesk-under-test{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        binary.is_file(),
        "{} is missing: build the workspace first",
        binary.display()
    );
    binary
}

/// `releasedesk args…` against `database_url` in `dir`, logging warnings and
/// worse, with no configuration file: to run, or to adjust and spawn.
pub fn command(dir: &std::path::Path, database_url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(path());
    command
        .args(args)
        .current_dir(dir)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "warn")
        .env_remove("RELEASEDESK_CONFIG");
    command
}

/// Runs `releasedesk args…` against `database_url` in `dir`; returns its output.
pub fn run(dir: &std::path::Path, database_url: &str, args: &[&str]) -> Output {
    command(dir, database_url, args)
        .output()
        .expect("run releasedesk")
}

/// Runs an admin command that must succeed and returns its one JSON object.
pub fn admin(dir: &std::path::Path, database_url: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["admin"];
    full.extend_from_slice(args);
    let output = run(dir, database_url, &full);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "releasedesk {full:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not one JSON object ({e}): {stdout}"))
}

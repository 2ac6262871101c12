//! What the machine is: cores, CPU, disk fsync latency, database versions.

use anyhow::Result;
use releasedesk_store::Pool;

use crate::{
    Ctx,
    db::{Db, FreshDb, text},
};

pub async fn describe(ctx: &Ctx) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    out.push(("cores".to_owned(), cores.to_string()));
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    out.push(("CPU".to_owned(), cpu));
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib / 1_048_576.0),
        );
    out.push(("memory".to_owned(), memory));
    if ctx.plan.fsync_probe {
        out.push((
            "fdatasync (pg_test_fsync -s 1)".to_owned(),
            fsync(ctx).await,
        ));
    } else {
        out.push((
            "fdatasync".to_owned(),
            "not probed at this size (run --size small or full)".to_owned(),
        ));
    }
    for db in &ctx.backends {
        let version = version(ctx, *db)
            .await
            .unwrap_or_else(|e| format!("unknown ({e})"));
        out.push((format!("{} version", db.label()), version));
    }
    out.push((
        "build profile".to_owned(),
        crate::process::profile().to_owned(),
    ));
    Ok(out)
}

async fn version(ctx: &Ctx, db: Db) -> Result<String> {
    let fresh = FreshDb::create(db, &ctx.pg_url).await?;
    let pool = fresh.pool(1).await;
    let result = match pool {
        Ok(Pool::Sqlite(p)) => {
            let v = text(&Pool::Sqlite(p.clone()), "SELECT sqlite_version()").await;
            p.close().await;
            v.map(|v| format!("{v} (bundled with sqlx)"))
        }
        Ok(Pool::Postgres(p)) => {
            let v = text(&Pool::Postgres(p.clone()), "SHOW server_version").await;
            p.close().await;
            v
        }
        Err(e) => Err(e),
    };
    fresh.drop_database().await;
    result
}

/// fdatasync's latency from `pg_test_fsync`, run on a file in the temp dir.
async fn fsync(ctx: &Ctx) -> String {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => return format!("unknown ({e})"),
    };
    let output = tokio::process::Command::new(&ctx.pg_test_fsync)
        .args(["-s", "1", "-f"])
        .arg(dir.path().join("fsync.test"))
        .output()
        .await;
    match output {
        Ok(o) if o.status.success() => {
            parse_fdatasync(&String::from_utf8_lossy(&o.stdout)).unwrap_or_else(|| "unknown".into())
        }
        Ok(o) => format!("unknown ({})", String::from_utf8_lossy(&o.stderr).trim()),
        Err(e) => format!("unknown ({} missing: {e})", ctx.pg_test_fsync.display()),
    }
}

/// The first "fdatasync  N ops/sec  M usecs/op" line (one 8kB write).
fn parse_fdatasync(output: &str) -> Option<String> {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("fdatasync") && l.contains("usecs/op"))?;
    let fields: Vec<&str> = line.split_whitespace().collect();
    let ops = fields.get(1)?;
    let usecs = fields.get(3)?;
    Some(format!("{usecs} µs/op ({ops} ops/s), one 8 kB write"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdatasync_line_is_found() {
        let out = "Compare file sync methods using one 8kB write:\n\
                   (in wal_sync_method preference order, except fdatasync is Linux's default)\n\
                   \topen_datasync                      1234.567 ops/sec     810 usecs/op\n\
                   \tfdatasync                          1500.000 ops/sec     667 usecs/op\n";
        assert_eq!(
            parse_fdatasync(out).as_deref(),
            Some("667 µs/op (1500.000 ops/s), one 8 kB write")
        );
    }
}

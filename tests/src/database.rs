//! Fresh databases per test.

use std::time::Duration;

use sqlx::{Connection, PgConnection};

/// Where the tests reach PostgreSQL as a superuser (to create databases).
fn admin_url() -> String {
    std::env::var("RELEASEDESK_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Whether PostgreSQL tests must run: under CI an unreachable server is a failure,
/// never a skip.
pub fn postgres_required() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

enum Kind {
    Sqlite(
        #[expect(
            dead_code,
            reason = "held so the directory lives as long as the database"
        )]
        tempfile::TempDir,
    ),
    Postgres {
        name: String,
    },
}

/// A database that exists for one test.
pub struct TestDatabase {
    url: String,
    kind: Kind,
}

impl TestDatabase {
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("releasedesk.db").display()
        );
        Self {
            url,
            kind: Kind::Sqlite(dir),
        }
    }

    pub async fn postgres() -> Option<Self> {
        let admin = admin_url();
        let connect =
            tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&admin)).await;
        let mut conn = match connect {
            Ok(Ok(conn)) => conn,
            failure => {
                let why = match failure {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                assert!(
                    !postgres_required(),
                    "PostgreSQL is unreachable at {admin} ({why}); with CI set, PostgreSQL tests must run"
                );
                eprintln!(
                    "SKIPPED: PostgreSQL unreachable at {admin} ({why}); set CI=true to make this fail"
                );
                return None;
            }
        };
        let name = format!("releasedesk_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create test database");
        let _ = conn.close().await;
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Some(Self {
            url,
            kind: Kind::Postgres { name },
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Kind::Postgres { name } = &self.kind else {
            return;
        };
        let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        // Drop runs inside the test's runtime; the cleanup needs its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut conn = PgConnection::connect(&admin_url()).await.ok()?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(_))) {
            eprintln!("warning: could not drop test database {name}");
        }
    }
}

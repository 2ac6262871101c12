use releasedesk_domain::DomainError;
use sea_orm::{DbErr, RuntimeErr};

/// What an operation can fail with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A business rule said no; maps one-to-one to a contract error code.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The caller's token is unknown or revoked (where the store checks it
    /// itself, in the statement that uses it).
    #[error("unknown or revoked token")]
    Unauthenticated,
    /// The database cannot be reached right now; the caller may retry.
    ///
    /// This and [`StoreError::Database`] say their cause in their message
    /// (and so expose no `source`): their messages go to logs and to the
    /// operator's terminal, never into a response (the API answers 503 or a
    /// generic 500), and "database error" alone told an operator nothing.
    #[error("database unavailable: {0}")]
    Unavailable(DbErr),
    #[error("database error: {0}")]
    Database(DbErr),
    /// A row holds a value the code does not know (e.g. an unknown status).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("configuration error: {0}")]
    Config(String),
    /// The SQLite migration lock's file could not be made or locked.
    #[error("migration lock {path}: {message}")]
    MigrationLock { path: String, message: String },
}

impl StoreError {
    pub(crate) fn from_sqlx(error: sqlx::Error) -> Self {
        Self::from(DbErr::Conn(RuntimeErr::SqlxError(error.into())))
    }

    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// SQLSTATEs PostgreSQL answers while it shuts down, restarts or refuses
/// connections: the server, not the statement, is the problem.
fn is_server_unavailable(sqlstate: &str) -> bool {
    sqlstate.starts_with("08") // connection exception
        || sqlstate.starts_with("57P") // admin/crash shutdown, cannot connect now
        || sqlstate == "53300" // too many connections
}

fn sqlx_is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| is_server_unavailable(&code)),
        _ => false,
    }
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        let unavailable = match &error {
            DbErr::ConnectionAcquire(_) => true,
            DbErr::Conn(RuntimeErr::SqlxError(e))
            | DbErr::Exec(RuntimeErr::SqlxError(e))
            | DbErr::Query(RuntimeErr::SqlxError(e)) => sqlx_is_unavailable(e),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(error)
        } else {
            Self::Database(error)
        }
    }
}

/// Whether a database error is a unique-constraint violation.
pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
    matches!(
        error.sql_err(),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
    )
}

/// Whether an error of a statement run on sqlx directly is a violation of the
/// unique index or constraint `name`.
pub(crate) fn is_sqlx_unique_violation_of(error: &sqlx::Error, name: &str) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.is_unique_violation() && e.constraint() == Some(name))
}

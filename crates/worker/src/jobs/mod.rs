//! The worker's jobs. Each re-reads its state from the database and is safe to
//! run twice: exactly-once rests on the store's guarded SQL, never on the queue.

pub mod carrier_reclaim;
pub mod execute_release;
pub mod send_email;
pub mod sweep;

use releasedesk_store::StoreError;

use crate::{carrier::CarrierError, mail::MailError};

/// Why a job did not finish; transient ones are retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Carrier(#[from] CarrierError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("malformed job payload: {0}")]
    Payload(String),
    #[error("job queue: {0}")]
    Queue(String),
}

impl JobError {
    /// Whether retrying later can help.
    pub fn is_transient(&self) -> bool {
        match self {
            JobError::Store(e) => e.is_unavailable(),
            JobError::Carrier(e) => matches!(e, CarrierError::Transient(_)),
            JobError::Mail(e) => e.is_transient(),
            JobError::Payload(_) => false,
            JobError::Queue(_) => true,
        }
    }
}

/// Test-only fail points: `RELEASEDESK_FAILPOINT=<name>` makes the worker stop
/// dead at that point (it hangs until killed), so tests can kill it there.
pub(crate) async fn fail_point(name: &str) {
    if std::env::var("RELEASEDESK_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::warn!(
            fail_point = name,
            "fail point reached; hanging until killed"
        );
        std::future::pending::<()>().await;
    }
}

//! The periodic sweep: cooling-off ends, stuck releases are re-driven. Idempotent,
//! so every worker process may run it.

use std::time::Duration;

use releasedesk_store::Store;

use super::{JobError, execute_release::execute_release};
use crate::carrier::Carrier;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub made_available: u64,
    pub redriven: usize,
    pub purged_jobs: u64,
    pub expired_keys: u64,
}

/// How long finished queue jobs are kept before the sweep purges them.
pub const KEEP_FINISHED_JOBS: Duration = Duration::from_secs(3600);

pub async fn sweep(
    store: &Store,
    carrier: &dyn Carrier,
    stale_after: Duration,
    lease: Duration,
    retry_after: Duration,
) -> Result<Swept, JobError> {
    let made_available = store.finalize_cooling_off(500).await?;
    // Without the queue's tables (a worker running jobs inline) there is nothing
    // to purge; that is not an error worth failing the sweep for.
    let purged_jobs = store
        .purge_finished_jobs(KEEP_FINISHED_JOBS, 10_000)
        .await
        .unwrap_or_else(|error| {
            tracing::debug!(%error, "no finished jobs purged");
            0
        });
    let expired_keys = store.purge_expired_idempotency_keys().await?;
    let stuck = store.stuck_releases(stale_after, 100).await?;
    let redriven = stuck.len();
    for request_id in stuck {
        tracing::warn!(request.id = %request_id, "re-driving a stuck release");
        if let Err(error) = execute_release(store, carrier, request_id, lease, retry_after).await {
            tracing::warn!(request.id = %request_id, %error, "re-driven release did not finish");
        }
    }
    Ok(Swept {
        made_available,
        redriven,
        purged_jobs,
        expired_keys,
    })
}

//! `execute_release`: carry out one approved release.

use std::time::Duration;

use releasedesk_store::{Begin, Store};
use uuid::Uuid;

use super::{JobError, fail_point};
use crate::carrier::{Carrier, CarrierError, CarrierRelease};

/// What one run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executed {
    Released,
    /// The carrier refused for good; the request is `failed`, staff are emailed.
    Failed,
    /// Another worker holds the lease right now.
    Busy,
    /// Nothing to do: already released, failed or cancelled.
    AlreadyFinished,
}

/// Takes the lease, tells the carrier (unless an earlier run already did), and
/// commits the release; with no carrier upstream, all of it in one transaction. Killed at any point, a later run finishes the work
/// without a second carrier release.
pub async fn execute_release(
    store: &Store,
    carrier: &dyn Carrier,
    request_id: Uuid,
    lease: Duration,
    retry_after: Duration,
) -> Result<Executed, JobError> {
    let executed = run(store, carrier, request_id, lease, retry_after).await;
    let outcome = match &executed {
        Ok(Executed::Released) => "released",
        Ok(Executed::Failed) => "failed",
        Ok(Executed::Busy) => "busy",
        Ok(Executed::AlreadyFinished) => "already_finished",
        Err(_) => "error",
    };
    metrics::counter!(crate::JOBS_METRIC, "job" => "execute_release", "outcome" => outcome)
        .increment(1);
    executed
}

async fn run(
    store: &Store,
    carrier: &dyn Carrier,
    request_id: Uuid,
    lease: Duration,
    retry_after: Duration,
) -> Result<Executed, JobError> {
    if !carrier.has_upstream() {
        return Ok(match store.release_at_once(request_id).await? {
            Begin::Execute(work) => {
                tracing::info!(request.id = %request_id, attempt = work.attempt, "release carried out");
                Executed::Released
            }
            Begin::Busy => Executed::Busy,
            Begin::Finished => Executed::AlreadyFinished,
        });
    }
    let work = match store.begin_release(request_id, lease).await? {
        Begin::Execute(work) => work,
        Begin::Busy => return Ok(Executed::Busy),
        Begin::Finished => return Ok(Executed::AlreadyFinished),
    };
    if !work.carrier_done {
        let release = CarrierRelease {
            request_id,
            phone_number_id: work.phone_number_id,
            phone_number: work.phone_number.clone(),
        };
        match carrier.release(&release).await {
            Ok(()) => store.record_carrier_release(request_id).await?,
            Err(CarrierError::Permanent(reason)) => {
                tracing::warn!(request.id = %request_id, %reason, "carrier refused the release");
                store.fail_release(request_id, &reason).await?;
                return Ok(Executed::Failed);
            }
            Err(transient) => {
                store.postpone_release(request_id, retry_after).await?;
                return Err(transient.into());
            }
        }
        fail_point("after_carrier_release").await;
    }
    store.finish_release(request_id).await?;
    tracing::info!(request.id = %request_id, attempt = work.attempt, "release carried out");
    Ok(Executed::Released)
}

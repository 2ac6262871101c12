//! Carrier adapters: how the upstream carrier learns that a number was released or
//! reclaimed. Every call carries an idempotency key, so a retried call is the same
//! call. `local` keeps the inventory only (nothing upstream); `http` posts a signed
//! JSON document to a configured URL.

mod http;

use async_trait::async_trait;
use serde::Serialize;
use uuid::Uuid;

pub use http::{HttpCarrier, SIGNATURE_HEADER, sign as http_signature};

/// A release to report: the request id is the idempotency key.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierRelease {
    pub request_id: Uuid,
    pub phone_number_id: Uuid,
    pub phone_number: String,
}

/// A reclaim to report, keyed by the reclaim's event id.
#[derive(Debug, Clone, Serialize)]
pub struct CarrierReclaim {
    pub reclaim_id: Uuid,
    pub phone_number_id: Uuid,
    pub phone_number: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CarrierError {
    /// The carrier said no for good (4xx): retrying will not help.
    #[error("the carrier refused: {0}")]
    Permanent(String),
    /// The carrier could not be reached or failed (5xx, timeout): retry later.
    #[error("the carrier is unavailable: {0}")]
    Transient(String),
}

#[async_trait]
pub trait Carrier: Send + Sync + std::fmt::Debug {
    /// Whether a release is reported to someone outside our database. When it
    /// is not, a release is carried out in one transaction (there is no external
    /// effect to keep from repeating, so no separate lease and confirmation).
    fn has_upstream(&self) -> bool {
        true
    }

    async fn release(&self, release: &CarrierRelease) -> Result<(), CarrierError>;
    async fn reclaim(&self, reclaim: &CarrierReclaim) -> Result<(), CarrierError>;
}

/// Numbers live in our inventory only: there is no one upstream to tell.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalCarrier;

#[async_trait]
impl Carrier for LocalCarrier {
    fn has_upstream(&self) -> bool {
        false
    }

    async fn release(&self, release: &CarrierRelease) -> Result<(), CarrierError> {
        tracing::debug!(request.id = %release.request_id, "local carrier: release recorded in inventory");
        Ok(())
    }

    async fn reclaim(&self, reclaim: &CarrierReclaim) -> Result<(), CarrierError> {
        tracing::debug!(phone_number.id = %reclaim.phone_number_id, "local carrier: reclaim recorded in inventory");
        Ok(())
    }
}

//! `carrier_reclaim`: tell the carrier a released number came back.

use serde::Deserialize;
use uuid::Uuid;

use super::JobError;
use crate::carrier::{Carrier, CarrierReclaim};

#[derive(Debug, Deserialize)]
struct Payload {
    phone_number_id: Uuid,
    phone_number: String,
}

/// `reclaim_id` (the reclaim's event) is the idempotency key.
pub async fn carrier_reclaim(
    carrier: &dyn Carrier,
    reclaim_id: Uuid,
    payload: &serde_json::Value,
) -> Result<(), JobError> {
    let payload: Payload =
        serde_json::from_value(payload.clone()).map_err(|e| JobError::Payload(e.to_string()))?;
    let reclaim = CarrierReclaim {
        reclaim_id,
        phone_number_id: payload.phone_number_id,
        phone_number: payload.phone_number,
    };
    carrier.reclaim(&reclaim).await?;
    Ok(())
}

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::StatusCode;
use serde::Serialize;
use sha2::Sha256;

use super::{Carrier, CarrierError, CarrierReclaim, CarrierRelease};

/// Header carrying `sha256=<hex HMAC-SHA256 of the body>` under the shared secret.
pub const SIGNATURE_HEADER: &str = "X-ReleaseDesk-Signature";

/// Posts `{base}/releases` and `{base}/reclaims` as signed JSON with an
/// `Idempotency-Key`. 2xx and 409 ("already done") succeed; other 4xx are
/// permanent; 5xx, timeouts and connection errors are transient.
#[derive(Clone)]
pub struct HttpCarrier {
    base_url: String,
    secret: Vec<u8>,
    client: reqwest::Client,
}

impl std::fmt::Debug for HttpCarrier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpCarrier")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// The signature a receiver checks: hex HMAC-SHA256 of the exact body bytes.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl HttpCarrier {
    pub fn new(base_url: &str, secret: &str, timeout: Duration) -> Result<Self, CarrierError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| CarrierError::Permanent(format!("HTTP client: {e}")))?;
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_owned(),
            secret: secret.as_bytes().to_vec(),
            client,
        })
    }

    async fn post(
        &self,
        path: &str,
        key: &str,
        document: &impl Serialize,
    ) -> Result<(), CarrierError> {
        let body =
            serde_json::to_vec(document).map_err(|e| CarrierError::Permanent(e.to_string()))?;
        let response = self
            .client
            .post(format!("{}{path}", self.base_url))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Idempotency-Key", key)
            .header(SIGNATURE_HEADER, sign(&self.secret, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| CarrierError::Transient(e.to_string()))?;
        classify(response.status())
    }
}

fn classify(status: StatusCode) -> Result<(), CarrierError> {
    match status {
        s if s.is_success() || s == StatusCode::CONFLICT => Ok(()),
        StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Err(
            CarrierError::Transient(format!("carrier answered {status}")),
        ),
        s if s.is_client_error() => Err(CarrierError::Permanent(format!(
            "carrier answered {status}"
        ))),
        _ => Err(CarrierError::Transient(format!(
            "carrier answered {status}"
        ))),
    }
}

#[async_trait]
impl Carrier for HttpCarrier {
    async fn release(&self, release: &CarrierRelease) -> Result<(), CarrierError> {
        self.post("/releases", &release.request_id.to_string(), release)
            .await
    }

    async fn reclaim(&self, reclaim: &CarrierReclaim) -> Result<(), CarrierError> {
        self.post("/reclaims", &reclaim.reclaim_id.to_string(), reclaim)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify(StatusCode::OK), Ok(()));
        assert_eq!(classify(StatusCode::NO_CONTENT), Ok(()));
        assert_eq!(classify(StatusCode::CONFLICT), Ok(()), "already released");
        assert!(matches!(
            classify(StatusCode::UNPROCESSABLE_ENTITY),
            Err(CarrierError::Permanent(_))
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND),
            Err(CarrierError::Permanent(_))
        ));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Err(CarrierError::Transient(_))
        ));
        assert!(matches!(
            classify(StatusCode::TOO_MANY_REQUESTS),
            Err(CarrierError::Transient(_))
        ));
    }

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        let signature = sign(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            signature,
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}

//! An HTTP stand-in for an upstream carrier: counts calls per idempotency key,
//! checks signatures, and answers with scripted statuses.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    routing::post,
};
use releasedesk_worker::carrier::{HttpCarrier, http_signature};

/// One call the stand-in received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierCall {
    /// `releases` or `reclaims`.
    pub kind: String,
    pub idempotency_key: String,
    pub signature_valid: bool,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    calls: Vec<CarrierCall>,
    script: VecDeque<StatusCode>,
}

/// A running stand-in carrier on `127.0.0.1:0`.
#[derive(Clone)]
pub struct StandInCarrier {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

pub const SECRET: &str = "stand-in-secret";

async fn receive(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let call = CarrierCall {
        kind,
        idempotency_key: header("idempotency-key"),
        signature_valid: header("x-releasedesk-signature")
            == http_signature(SECRET.as_bytes(), &body),
        body: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    };
    let mut inner = inner.lock().expect("stand-in state");
    inner.calls.push(call);
    inner.script.pop_front().unwrap_or(StatusCode::OK)
}

impl StandInCarrier {
    pub async fn start() -> StandInCarrier {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let router = Router::new()
            .route("/{kind}", post(receive))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind stand-in carrier");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        tokio::spawn(async move { axum::serve(listener, router).await });
        StandInCarrier { url, inner }
    }

    /// The adapter the worker uses against this stand-in.
    pub fn adapter(&self) -> HttpCarrier {
        HttpCarrier::new(&self.url, SECRET, std::time::Duration::from_secs(5))
            .expect("carrier adapter")
    }

    /// The next calls are answered with these statuses, in order (then 200).
    pub fn script(&self, statuses: &[StatusCode]) {
        self.inner
            .lock()
            .expect("stand-in state")
            .script
            .extend(statuses.iter().copied());
    }

    pub fn calls(&self) -> Vec<CarrierCall> {
        self.inner.lock().expect("stand-in state").calls.clone()
    }

    /// Calls of `kind` with this idempotency key.
    pub fn calls_for(&self, kind: &str, key: &str) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.kind == kind && c.idempotency_key == key)
            .count()
    }
}

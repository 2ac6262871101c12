//! HTTP load: concurrent keep-alive clients, latencies into an HDR histogram.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;

/// Latencies in microseconds.
pub type Latencies = Histogram<u64>;

pub fn histogram() -> Result<Latencies> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("create a histogram")
}

/// What a load run measured.
#[derive(Debug)]
pub struct Outcome {
    pub requests: usize,
    pub elapsed: Duration,
    pub latencies: Latencies,
}

impl Outcome {
    pub fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

/// Milliseconds at a quantile.
pub fn ms(h: &Latencies, quantile: f64) -> f64 {
    h.value_at_quantile(quantile) as f64 / 1000.0
}

pub fn max_ms(h: &Latencies) -> f64 {
    h.max() as f64 / 1000.0
}

pub fn client(connections: usize) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("build the HTTP client")
}

/// Files one request per number with `clients` concurrent clients; every answer
/// must be 201.
pub async fn file_requests(
    http: &reqwest::Client,
    base_url: &str,
    numbers: &[crate::seed::SeededNumber],
    tokens: &[String],
    clients: usize,
) -> Result<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let numbers = Arc::new(numbers.to_vec());
    let tokens = Arc::new(tokens.to_vec());
    let body = serde_json::json!({ "reason": crate::seed::REASON });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (next, numbers, tokens) = (next.clone(), numbers.clone(), tokens.clone());
        let (http, base_url, body) = (http.clone(), base_url.to_owned(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = histogram()?;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(number) = numbers.get(i) else {
                    return Ok::<_, anyhow::Error>(latencies);
                };
                let url = format!(
                    "{base_url}/api/v1/phone-numbers/{}/request-release",
                    number.id
                );
                let sent = Instant::now();
                let response = http
                    .post(&url)
                    .bearer_auth(&tokens[number.account])
                    .json(&body)
                    .send()
                    .await?;
                let status = response.status();
                let text = response.bytes().await?;
                let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                if status != reqwest::StatusCode::CREATED {
                    bail!(
                        "filing answered {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
                latencies.saturating_record(took);
            }
        }));
    }
    let mut latencies = histogram()?;
    for task in tasks {
        let part = task.await.context("a client task panicked")??;
        latencies.add(part).context("merge histograms")?;
    }
    Ok(Outcome {
        requests: numbers.len(),
        elapsed: started.elapsed(),
        latencies,
    })
}

/// GETs `url` `samples` times in a row (after a few warm-up calls); every answer
/// must be 200. Returns the parsed last body and the latencies.
pub async fn repeat_get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    samples: usize,
) -> Result<(serde_json::Value, Latencies)> {
    let mut latencies = histogram()?;
    let mut last = serde_json::Value::Null;
    for i in 0..samples + 5 {
        let sent = Instant::now();
        let response = http.get(url).bearer_auth(token).send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        if status != reqwest::StatusCode::OK {
            bail!(
                "GET {url} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        if i >= 5 {
            latencies.saturating_record(took);
        }
        last = serde_json::from_slice(&body)?;
    }
    Ok((last, latencies))
}

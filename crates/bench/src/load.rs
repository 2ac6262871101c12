//! HTTP load: concurrent keep-alive clients, latencies into an HDR histogram.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, header};
use http_body_util::{BodyExt, Full};

/// Latencies in microseconds.
pub type Latencies = Histogram<u64>;

pub fn histogram() -> Result<Latencies> {
    // 1 µs to 60 s, three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("create a histogram")
}

/// What a load run measured.
#[derive(Debug)]
pub struct Outcome {
    pub elapsed: Duration,
    pub latencies: Latencies,
    /// Every request (all answered 201, or the run failed), in the order they
    /// were sent: when, by whom and how long it took. What the histogram cannot
    /// tell: whether the slow requests came one by one or all clients waited at
    /// once.
    pub timeline: Vec<Sent>,
    /// The wall-clock time of the run's start, to line the timeline up with
    /// the service's logs.
    pub started_at: std::time::SystemTime,
}

/// One request of a load run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// The client (connection) that sent it, from 0.
    pub client: usize,
    /// When it was sent, after the run's start.
    pub at: Duration,
    /// How long its answer took.
    pub took: Duration,
}

impl Outcome {
    /// Requests answered per second.
    pub fn per_second(&self) -> f64 {
        self.timeline.len() as f64 / self.elapsed.as_secs_f64()
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
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("build the HTTP client")
}

/// Files one request per number with `clients` concurrent clients; every answer
/// must be 201.
///
/// Each client is one keep-alive HTTP/1.1 connection of its own, sending
/// requests built from parts made once (the body, each token's header): the
/// load generator shares the cores with the service and its database, so it
/// spends as little of them as it can, as pgbench's C client does for the raw
/// limit. Every connection is open before the clock starts.
pub async fn file_requests(
    base_url: &str,
    numbers: &[crate::seed::SeededNumber],
    tokens: &[String],
    clients: usize,
) -> Result<Outcome> {
    let next = Arc::new(AtomicUsize::new(0));
    let numbers = Arc::new(numbers.to_vec());
    let target = Target::parse(base_url, tokens)?;
    let mut connections = Vec::with_capacity(clients);
    for _ in 0..clients {
        connections.push(target.connect().await?);
    }
    let started = Instant::now();
    let started_at = std::time::SystemTime::now();
    let mut tasks = Vec::new();
    for mut connection in connections {
        let (next, numbers, target) = (next.clone(), numbers.clone(), target.clone());
        let client = tasks.len();
        tasks.push(tokio::spawn(async move {
            let mut timeline = Vec::with_capacity(numbers.len() / clients + 1);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(number) = numbers.get(i) else {
                    return Ok::<_, anyhow::Error>(timeline);
                };
                let request = target.filing(number)?;
                let sent = Instant::now();
                let (status, body) = connection.send(request).await?;
                let took = sent.elapsed();
                if status != http::StatusCode::CREATED {
                    bail!(
                        "filing answered {status}: {}",
                        String::from_utf8_lossy(&body)
                    );
                }
                timeline.push(Sent {
                    client,
                    at: sent - started,
                    took,
                });
            }
        }));
    }
    let mut timeline = Vec::with_capacity(numbers.len());
    for task in tasks {
        timeline.extend(task.await.context("a client task panicked")??);
    }
    let elapsed = started.elapsed();
    timeline.sort_by_key(|sent| sent.at);
    // The histogram from the timeline, after the clock stopped.
    let mut latencies = histogram()?;
    for sent in &timeline {
        latencies.saturating_record(u64::try_from(sent.took.as_micros()).unwrap_or(u64::MAX));
    }
    Ok(Outcome {
        elapsed,
        latencies,
        timeline,
        started_at,
    })
}

/// Writes `outcome`'s timeline as CSV, one request per line in the order
/// sent: `client,sent_us,took_us,sent_unix_us` (when it was sent after the
/// run's start, how long it took, and when it was sent in microseconds since
/// the Unix epoch, for lining it up with the service's logs).
pub fn write_timeline(path: &std::path::Path, outcome: &Outcome) -> Result<()> {
    use std::io::Write as _;
    let start = outcome
        .started_at
        .duration_since(std::time::UNIX_EPOCH)
        .context("the clock is before 1970")?;
    let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "client,sent_us,took_us,sent_unix_us")?;
    for sent in &outcome.timeline {
        writeln!(
            out,
            "{},{},{},{}",
            sent.client,
            sent.at.as_micros(),
            sent.took.as_micros(),
            (start + sent.at).as_micros()
        )?;
    }
    out.flush()
        .with_context(|| format!("write {}", path.display()))
}

/// Where the filings go, and the parts of their requests made once.
#[derive(Clone)]
struct Target {
    /// `host:port`, to connect to and for the `Host` header.
    authority: Arc<str>,
    /// Each account's `Authorization` header, by the index of its token.
    authorizations: Arc<[HeaderValue]>,
    body: Bytes,
}

impl Target {
    fn parse(base_url: &str, tokens: &[String]) -> Result<Self> {
        let url = reqwest::Url::parse(base_url).with_context(|| format!("parse {base_url}"))?;
        let host = url.host_str().context("the service's URL has no host")?;
        let port = url
            .port_or_known_default()
            .context("the service's URL has no port")?;
        let authorizations = tokens
            .iter()
            .map(|token| HeaderValue::try_from(format!("Bearer {token}")))
            .collect::<Result<Arc<[_]>, _>>()
            .context("a token is not a header value")?;
        let body = serde_json::to_vec(&serde_json::json!({ "reason": crate::seed::REASON }))?;
        Ok(Self {
            authority: format!("{host}:{port}").into(),
            authorizations,
            body: body.into(),
        })
    }

    async fn connect(&self) -> Result<Connection> {
        let stream = tokio::net::TcpStream::connect(&*self.authority)
            .await
            .with_context(|| format!("connect to {}", self.authority))?;
        stream.set_nodelay(true)?;
        let (sender, driver) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .context("HTTP/1.1 handshake")?;
        // Ends when the connection closes (its sender dropped, or the server).
        tokio::spawn(driver);
        Ok(Connection { sender })
    }

    fn filing(&self, number: &crate::seed::SeededNumber) -> Result<http::Request<Full<Bytes>>> {
        let path = format!("/api/v1/phone-numbers/{}/request-release", number.id);
        let authorization = self
            .authorizations
            .get(number.account)
            .context("a number of an account without a token")?;
        http::Request::post(path)
            .header(header::HOST, &*self.authority)
            .header(header::AUTHORIZATION, authorization.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(self.body.clone()))
            .context("build a filing request")
    }
}

/// One client's keep-alive connection.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Sends `request` and reads the whole answer, within [`REQUEST_TIMEOUT`].
    async fn send(
        &mut self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<(http::StatusCode, Bytes)> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .context("no answer within the timeout")?
            .context("a filing's exchange failed")
    }
}

/// How long a request may take before the run counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

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

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn a_timeline_has_a_line_per_request_with_its_offset_latency_and_wall_clock_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("level.csv");
        let outcome = Outcome {
            elapsed: Duration::from_millis(10),
            latencies: histogram().unwrap(),
            timeline: vec![
                Sent {
                    client: 1,
                    at: Duration::from_micros(5),
                    took: Duration::from_micros(2_500),
                },
                Sent {
                    client: 0,
                    at: Duration::from_micros(1_200),
                    took: Duration::from_micros(900),
                },
            ],
            started_at: UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        };
        write_timeline(&path, &outcome).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "client,sent_us,took_us,sent_unix_us\n\
             1,5,2500,1800000000000005\n\
             0,1200,900,1800000000001200\n"
        );
    }
}

//! The part of ReleaseDesk that does what cannot be undone: executes approved
//! releases exactly once, sends every email through the durable outbox, and runs
//! the schedules (cooling-off, stuck-work recovery).
//!
//! Work arrives as outbox rows written in the transactions that cause it (an
//! approval writes `execute_release`, every event writes its emails). A worker
//! claims due rows in batches, runs them, and marks them sent, or retries them
//! with exponential backoff, or gives up to `dead` after a bounded number of
//! attempts. Any number of worker processes may share one PostgreSQL database.

pub mod background;
pub mod carrier;
pub mod jobs;
pub mod mail;
pub mod queue;

use std::{sync::Arc, time::Duration};

use releasedesk_store::{OutboxItem, OutboxStatus, RetryPolicy, Store, StoreError, Written};
use tokio::{sync::watch, time::Instant};
use uuid::Uuid;

/// Outbox deliveries, by kind (`email`, `job`) and outcome (`sent`, `failed`:
/// will retry, `dead`: gave up).
pub const OUTBOX_METRIC: &str = "releasedesk_outbox_deliveries_total";
/// Jobs run, by job and outcome (`released`, `failed`, `busy`,
/// `already_finished`, `error`).
pub const JOBS_METRIC: &str = "releasedesk_jobs_total";

use crate::{
    carrier::Carrier,
    jobs::{
        JobError,
        carrier_reclaim::carrier_reclaim,
        execute_release::execute_release,
        send_email::prepare_email,
        sweep::{Swept, sweep},
    },
    mail::{MailContext, Mailer, Outgoing},
    queue::{ExecuteRelease, JobContext, QueueConfig, ReleaseQueue},
};

/// How a worker paces itself.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// How long an idle worker waits before looking for work again.
    pub poll_interval: Duration,
    /// How long new emails (and nothing else) may wait for more to gather
    /// before a caught-up worker claims them ([`EMAIL_LINGER`] unless a test
    /// says otherwise).
    pub email_linger: Duration,
    /// How much longer they may wait for this process's requests to pause
    /// ([`EMAIL_BURST_WAIT`] unless a test says otherwise).
    pub email_burst_wait: Duration,
    /// The pause in this process's requests that ends a burst
    /// ([`REQUESTS_PAUSE`] unless a test says otherwise).
    pub requests_pause: Duration,
    /// How often cooling-off is finalized and stuck work recovered.
    pub sweep_interval: Duration,
    /// Outbox rows claimed per round.
    pub batch_size: u64,
    /// How long a claimed job or email belongs to this worker before another may
    /// take it over (a worker that died is recovered after this).
    pub lease: Duration,
    /// Retries of emails and jobs.
    pub retry: RetryPolicy,
    pub mail: MailContext,
}

/// One worker: the outbox dispatcher, the job runner and the sweep.
#[derive(Clone)]
pub struct Worker {
    store: Store,
    mailer: Arc<Mailer>,
    carrier: Arc<dyn Carrier>,
    config: Arc<WorkerConfig>,
    /// With a queue, `execute_release` jobs go through apalis; without one (unit
    /// tests, one-shot drains) they run inline.
    queue: Option<(ReleaseQueue, QueueConfig)>,
    /// Tells this process's apalis worker that a job was just pushed.
    pushed: futures::channel::mpsc::UnboundedSender<()>,
    pushed_rx: Arc<std::sync::Mutex<Option<futures::channel::mpsc::UnboundedReceiver<()>>>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// How much one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub jobs: usize,
    pub emails: usize,
}

impl Round {
    pub fn is_idle(&self) -> bool {
        self.jobs == 0 && self.emails == 0
    }

    /// Whether both claims came back short of `batch_size`, so nothing more was
    /// due when they ran.
    fn is_caught_up(&self, batch_size: u64) -> bool {
        let full = usize::try_from(batch_size).unwrap_or(usize::MAX);
        self.jobs < full && self.emails < full
    }
}

impl Worker {
    pub fn new(
        store: Store,
        mailer: Mailer,
        carrier: Arc<dyn Carrier>,
        config: WorkerConfig,
    ) -> Self {
        let (pushed, pushed_rx) = futures::channel::mpsc::unbounded();
        Self {
            store,
            mailer: Arc::new(mailer),
            carrier,
            config: Arc::new(config),
            queue: None,
            pushed,
            pushed_rx: Arc::new(std::sync::Mutex::new(Some(pushed_rx))),
        }
    }

    /// Runs `execute_release` jobs through apalis on the application's database.
    pub fn with_queue(mut self, config: QueueConfig) -> Self {
        let queue = ReleaseQueue::new(self.store.pool(), &config);
        self.queue = Some((queue, config));
        self
    }

    /// Runs until `shutdown` turns true; the round in flight and the jobs apalis
    /// is running finish first.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let pushed = self.pushed_rx.lock().ok().and_then(|mut rx| rx.take());
        let apalis = self
            .queue
            .clone()
            .zip(pushed)
            .map(|((queue, config), pushed)| {
                let context = JobContext {
                    store: self.store.clone(),
                    carrier: self.carrier.clone(),
                    lease: self.config.lease,
                    retry_after: self.config.retry.base_delay,
                };
                let mut stop = shutdown.clone();
                let name = format!(
                    "{}-{}-execute-release",
                    std::env::var("HOSTNAME").unwrap_or_else(|_| "releasedesk".into()),
                    std::process::id()
                );
                tokio::spawn(async move {
                    let stopped = async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    };
                    if let Err(error) =
                        queue::run_worker(name, queue, &config, context, pushed, stopped).await
                    {
                        tracing::error!(%error, "job queue worker stopped");
                    }
                })
            });
        // PostgreSQL: other processes' outbox rows (an approval in the reviewer
        // process) wake the dispatcher through LISTEN/NOTIFY, not at its next poll.
        let relay = {
            let store = self.store.clone();
            let mut stop = shutdown.clone();
            tokio::spawn(async move {
                store
                    .relay_outbox_notifications(async move {
                        let _ = stop.wait_for(|stop| *stop).await;
                    })
                    .await;
            })
        };
        self.dispatch_loop(shutdown).await;
        let _ = relay.await;
        if let Some(apalis) = apalis {
            let _ = apalis.await;
        }
    }

    async fn dispatch_loop(&self, mut shutdown: watch::Receiver<bool>) {
        // This loop takes the emails this process writes as they commit.
        self.store.adopt_new_emails(self.config.lease);
        tracing::info!("worker started");
        let mut next_sweep = Instant::now();
        while !*shutdown.borrow() {
            let round = self.round().await;
            if Instant::now() >= next_sweep {
                self.sweep().await;
                next_sweep = Instant::now() + self.config.sweep_interval;
            }
            // A batch short of full took everything due: wait for more.
            if round.is_caught_up(self.config.batch_size) {
                self.await_work(&mut shutdown).await;
            }
        }
        tracing::info!("worker stopped");
    }

    /// Until the next poll, new jobs, or new emails and the email linger (so a
    /// stream of filings is sent in batches, not a claim per commit), which
    /// lasts until the requests this process writes for pause.
    async fn await_work(&self, shutdown: &mut watch::Receiver<bool>) {
        tokio::select! {
            () = tokio::time::sleep(self.config.poll_interval) => {}
            written = self.store.outbox_written() => {
                if written == Written::EmailsOnly {
                    let linger = async {
                        tokio::time::sleep(self.config.email_linger).await;
                        self.store
                            .requests_pause(self.config.requests_pause, self.config.email_burst_wait)
                            .await;
                    };
                    tokio::select! {
                        () = linger => {}
                        () = self.store.jobs_written() => {}
                        _ = shutdown.changed() => {}
                    }
                }
            }
            _ = shutdown.changed() => {}
        }
    }

    /// One batch of jobs and one batch of emails. Errors are logged; work that
    /// failed is retried by its row's backoff.
    pub async fn round(&self) -> Round {
        let jobs = self.dispatch_jobs().await.unwrap_or_else(|error| {
            tracing::error!(%error, "could not dispatch jobs");
            0
        });
        let emails = self.dispatch_emails().await.unwrap_or_else(|error| {
            tracing::error!(%error, "could not dispatch emails");
            0
        });
        Round { jobs, emails }
    }

    /// Rounds until there is nothing due (for tests and one-shot runs).
    pub async fn drain(&self) -> Round {
        let mut total = Round::default();
        loop {
            let round = self.round().await;
            if round.is_idle() {
                return total;
            }
            total.jobs += round.jobs;
            total.emails += round.emails;
        }
    }

    /// Runs the periodic sweep once.
    pub async fn sweep(&self) {
        let stale = self.config.sweep_interval.max(self.config.lease);
        match sweep(
            &self.store,
            self.carrier.as_ref(),
            stale,
            self.config.lease,
            self.config.retry.base_delay,
        )
        .await
        {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(
                    made_available = swept.made_available,
                    redriven = swept.redriven,
                    purged_jobs = swept.purged_jobs,
                    expired_keys = swept.expired_keys,
                    "sweep"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::error!(%error, "sweep failed"),
        }
    }

    async fn dispatch_jobs(&self) -> Result<usize, StoreError> {
        let items = self
            .store
            .claim_outbox("job", self.config.batch_size, self.config.lease)
            .await?;
        let mut delivered = Vec::with_capacity(items.len());
        let mut to_queue = Vec::new();
        for item in &items {
            match (&self.queue, item.topic.as_str()) {
                (Some(_), "execute_release") => match release_target(item) {
                    Ok(request_id) => to_queue.push((item, request_id)),
                    Err(error) => self.settle_failed(item, error).await?,
                },
                _ => match self.run_job(item).await {
                    Ok(()) => delivered.push(item.id),
                    Err(error) => self.settle_failed(item, error).await?,
                },
            }
        }
        if let Some((queue, _)) = &self.queue
            && !to_queue.is_empty()
        {
            // One push for the batch, one UPDATE marking it sent.
            let jobs = to_queue
                .iter()
                .map(|&(_, request_id)| ExecuteRelease { request_id })
                .collect();
            match queue.clone().push_all(jobs).await {
                Ok(()) => {
                    delivered.extend(to_queue.iter().map(|(item, _)| item.id));
                    // Nobody listening (no apalis worker in this process) is fine.
                    let _ = self.pushed.unbounded_send(());
                }
                Err(error) => {
                    for (item, _) in to_queue {
                        self.settle_failed(item, JobError::Queue(error.to_string()))
                            .await?;
                    }
                }
            }
        }
        self.settle_sent("job", &delivered).await?;
        Ok(items.len())
    }

    /// Runs a job here (without a queue, `execute_release` too).
    async fn run_job(&self, item: &OutboxItem) -> Result<(), JobError> {
        match item.topic.as_str() {
            "execute_release" => {
                let request_id = release_target(item)?;
                let retry_after = self.config.retry.delay(item.attempts);
                execute_release(
                    &self.store,
                    self.carrier.as_ref(),
                    request_id,
                    self.config.lease,
                    retry_after,
                )
                .await?;
                Ok(())
            }
            "carrier_reclaim" => {
                carrier_reclaim(self.carrier.as_ref(), item.id, &item.payload).await
            }
            other => Err(JobError::Payload(format!("unknown job {other:?}"))),
        }
    }

    /// Sends a batch of emails, [`SENT_FLUSH`] at a time: each part rendered,
    /// delivered together (see [`Mailer::deliver`]) and marked sent in one
    /// statement rather than one commit each; first those this process wrote
    /// claimed for itself, then as many as it can claim of the rest. A crash
    /// between a send and its mark re-sends that email after the lease (with
    /// the same Message-ID, so the receiving side can drop the copy).
    async fn dispatch_emails(&self) -> Result<usize, StoreError> {
        let batch = self.config.batch_size;
        let mut items = self
            .store
            .take_adopted_emails(usize::try_from(batch).unwrap_or(usize::MAX));
        let room = batch.saturating_sub(items.len() as u64);
        if room > 0 {
            match self
                .store
                .claim_outbox("email", room, self.config.lease)
                .await
            {
                Ok(claimed) => items.extend(claimed),
                // Those in hand still go out (theirs is a lease already taken).
                Err(error) if !items.is_empty() => {
                    tracing::error!(%error, "could not claim emails");
                }
                Err(error) => return Err(error),
            }
        }
        let count = items.len();
        let mut items = items.into_iter();
        loop {
            let part: Vec<OutboxItem> = items.by_ref().take(SENT_FLUSH).collect();
            if part.is_empty() {
                break;
            }
            let mut ready = Vec::with_capacity(part.len());
            let mut outgoing = Vec::with_capacity(part.len());
            for (item, prepared) in self.prepare_emails(part).await {
                match prepared {
                    Ok(email) => {
                        ready.push(item);
                        outgoing.push(email);
                    }
                    Err(error) => self.settle_failed(&item, error).await?,
                }
            }
            let outcomes = self.mailer.deliver(outgoing).await;
            let mut sent = Vec::with_capacity(ready.len());
            for (item, outcome) in ready.into_iter().zip(outcomes) {
                match outcome {
                    Ok(()) => sent.push(item.id),
                    Err(error) => self.settle_failed(&item, error.into()).await?,
                }
            }
            self.settle_sent("email", &sent).await?;
        }
        Ok(count)
    }

    /// Renders `part`'s emails and builds their messages on the
    /// [`background`] thread, off the runtime's threads and behind the
    /// requests `serve` answers on them. Should that work panic, the part's
    /// emails stay claimed and go out again when their lease runs out.
    async fn prepare_emails(
        &self,
        part: Vec<OutboxItem>,
    ) -> Vec<(OutboxItem, Result<Outgoing, JobError>)> {
        let mailer = Arc::clone(&self.mailer);
        let config = Arc::clone(&self.config);
        let prepared = background::run(move || {
            part.into_iter()
                .map(|item| {
                    let email = prepare_email(&mailer, &config.mail, &item);
                    (item, email)
                })
                .collect()
        });
        prepared.await.unwrap_or_else(|error| {
            tracing::error!(%error, "emails not prepared; they go out after their lease");
            Vec::new()
        })
    }

    /// Marks delivered rows sent (and counts them; no metric for none).
    async fn settle_sent(&self, kind: &'static str, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.store.outbox_sent(kind, ids).await?;
        metrics::counter!(OUTBOX_METRIC, "kind" => kind, "outcome" => "sent")
            .increment(ids.len() as u64);
        Ok(())
    }

    /// Schedules a failed row's retry, or gives up on it.
    async fn settle_failed(&self, item: &OutboxItem, error: JobError) -> Result<(), StoreError> {
        let kind = if item.recipient.is_some() {
            "email"
        } else {
            "job"
        };
        let permanent = !error.is_transient();
        let status = self
            .store
            .outbox_failed(item, &error.to_string(), permanent, &self.config.retry)
            .await?;
        let outcome = if status == OutboxStatus::Dead {
            "dead"
        } else {
            "failed"
        };
        metrics::counter!(OUTBOX_METRIC, "kind" => kind, "outcome" => outcome).increment(1);
        if status == OutboxStatus::Dead {
            tracing::error!(outbox.id = %item.id, topic = %item.topic, attempts = item.attempts, %error, "gave up");
        } else {
            tracing::warn!(outbox.id = %item.id, topic = %item.topic, attempts = item.attempts, %error, "will retry");
        }
        Ok(())
    }
}

/// How long new emails (and nothing else) may wait for more to gather before a
/// caught-up dispatcher claims them: a batch per linger instead of a claim per
/// commit (under a stream of filings, a claim per commit made 42,762 claims for
/// 60,100 emails; docs/BENCHMARKS.md). Nobody waits on an email; jobs end the
/// wait at once.
pub const EMAIL_LINGER: Duration = Duration::from_millis(25);

/// How long new emails may wait, after [`EMAIL_LINGER`], for a burst of the
/// requests this process writes to pause: `serve` sends a burst's emails once
/// it ends, not beside it on the same cores (PostgreSQL filing through `serve`
/// +12% at 32 clients, docs/BENCHMARKS.md). Under load lasting longer, they go
/// out in its gaps, as each statement of theirs waits for the store's
/// foreground writes only briefly.
pub const EMAIL_BURST_WAIT: Duration = Duration::from_secs(2);

/// The pause in the requests a process writes for that ends a burst of them.
pub const REQUESTS_PAUSE: Duration = Duration::from_millis(20);

/// Emails delivered together and marked sent in one statement, at most: a
/// default batch (`worker.batch_size`) in one. While filings are written the
/// statement waits its turn (the store's background writes), so the larger
/// the part, the more of a burst's emails go out per wait; PostgreSQL's CPU
/// per filing in `serve` fell by a sixth from 32 (docs/BENCHMARKS.md).
const SENT_FLUSH: usize = 100;

/// The request an `execute_release` row is about.
fn release_target(item: &OutboxItem) -> Result<Uuid, JobError> {
    item.payload
        .get("request_id")
        .and_then(|v| v.as_str())
        .and_then(|v| Uuid::parse_str(v).ok())
        .ok_or_else(|| JobError::Payload("execute_release needs request_id".into()))
}

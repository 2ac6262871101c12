//! Group commit: one writer task per process and kind of write, which takes
//! every request waiting and commits them in one transaction. Reads that every
//! request makes (the token look-up) are grouped the same way: one statement
//! for every caller waiting instead of a round trip each.
//!
//! Run one by one, a burst of small write transactions queues on commits: on
//! SQLite each holds the single write lock for all its statements, on
//! PostgreSQL each pays its own round trips and commit. A [`Group`] writes any
//! number of requests with a fixed number of statements instead. Alone, a
//! request is a group of one and waits for nobody.
//!
//! Each request still gets its own answer, decided as if it had run alone. If a
//! group fails as a whole (on PostgreSQL a concurrent process can win a unique
//! index between a check and an INSERT), its requests are retried one per
//! transaction, so one request never fails another.

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
};

use sea_orm::DbErr;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;

/// A kind of write that can be committed in groups.
pub(crate) trait Group: Send + Sync + 'static {
    type Request: Send + Sync + 'static;
    type Answer: Send + 'static;
    /// What the writer is called in errors.
    const NAME: &'static str;
    /// The most requests in one transaction.
    const MAX: usize;
    /// The histogram of requests per transaction.
    const METRIC: &'static str;

    /// Writes `requests` in one transaction (or, for a read, answers them with
    /// one statement). `Ok` holds each request's own answer, refusals included,
    /// in order; `Err` means nothing was written.
    fn perform(
        &self,
        requests: &[Self::Request],
    ) -> impl Future<Output = Result<Vec<Result<Self::Answer, StoreError>>, StoreError>> + Send;
}

struct Waiting<G: Group> {
    request: G::Request,
    answer: oneshot::Sender<Result<G::Answer, StoreError>>,
}

/// The way to this process's writer of one kind, started on first use and
/// again if it ever stopped.
pub(crate) struct GroupQueue<G: Group>(Mutex<Option<mpsc::Sender<Waiting<G>>>>);

impl<G: Group> Default for GroupQueue<G> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<G: Group> GroupQueue<G> {
    /// Queues `request` and waits for its answer, which comes after the commit.
    /// `writer` makes the writer if none is running.
    pub(crate) async fn submit(
        &self,
        request: G::Request,
        writer: impl FnOnce() -> G,
    ) -> Result<G::Answer, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.sender(writer)
            .send(Waiting { request, answer })
            .await
            .map_err(|_| stopped::<G>())?;
        answered.await.map_err(|_| stopped::<G>())?
    }

    fn sender(&self, writer: impl FnOnce() -> G) -> mpsc::Sender<Waiting<G>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(sender) if !sender.is_closed() => sender.clone(),
            _ => {
                // Requests waiting beyond this make callers wait to queue.
                let (sender, queue) = mpsc::channel(4 * G::MAX);
                tokio::spawn(run(writer(), queue));
                *slot = Some(sender.clone());
                sender
            }
        }
    }
}

fn stopped<G: Group>() -> StoreError {
    StoreError::Database(DbErr::Custom(format!("the {} writer stopped", G::NAME)))
}

/// The writer: until every sender is gone, takes what is waiting (at least one
/// request, at most [`Group::MAX`]) and writes it.
async fn run<G: Group>(group: G, mut queue: mpsc::Receiver<Waiting<G>>) {
    let mut batch = Vec::with_capacity(G::MAX);
    while queue.recv_many(&mut batch, G::MAX).await > 0 {
        write(&group, std::mem::take(&mut batch)).await;
    }
}

async fn write<G: Group>(group: &G, batch: Vec<Waiting<G>>) {
    let (requests, answers): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|waiting| (waiting.request, waiting.answer))
        .unzip();
    if requests.len() > 1 {
        match written(group, &requests).await {
            Ok(outcomes) => {
                debug_assert_eq!(answers.len(), outcomes.len());
                for (answer, outcome) in answers.into_iter().zip(outcomes) {
                    // The caller may have gone (a dropped HTTP request); its write stands.
                    let _ = answer.send(outcome);
                }
                return;
            }
            Err(error) => {
                tracing::debug!(%error, writer = G::NAME, requests = requests.len(), "group failed; writing one at a time");
            }
        }
    }
    for (request, answer) in requests.iter().zip(answers) {
        let outcome = written(group, std::slice::from_ref(request))
            .await
            .and_then(|mut outcomes| {
                outcomes.pop().ok_or_else(|| {
                    StoreError::Corrupt(format!("the {} writer gave no answer", G::NAME))
                })
            })
            .and_then(|outcome| outcome);
        let _ = answer.send(outcome);
    }
}

async fn written<G: Group>(
    group: &G,
    requests: &[G::Request],
) -> Result<Vec<Result<G::Answer, StoreError>>, StoreError> {
    let outcomes = group.perform(requests).await?;
    metrics::histogram!(G::METRIC).record(requests.len() as f64);
    Ok(outcomes)
}

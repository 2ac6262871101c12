//! Group commit: one writer task per process and kind of write, which takes
//! every request waiting and commits them in one transaction. Reads that most
//! requests make (the customer token look-up) are grouped the same way: one
//! statement for every caller waiting instead of a round trip each.
//!
//! Run one by one, a burst of small write transactions queues on commits: on
//! SQLite each holds the single write lock for all its statements, on
//! PostgreSQL each pays its own round trips and commit. A [`Group`] writes any
//! number of requests with a fixed number of statements instead. Alone, a
//! request is a group of one and waits for nobody.
//!
//! One group is written at a time, except where [`Group::in_flight`] allows
//! more: then a further group starts only when [`Group::FULL`] requests wait
//! for it. A write's cost in the database is mostly per statement at small
//! sizes, so splitting the waiting requests into more, smaller groups costs
//! more than it gains; a full group waiting for the one in flight is what a
//! second database connection (and core) can take without that.
//!
//! Each request still gets its own answer, decided as if it had run alone. If a
//! group fails as a whole (on PostgreSQL a concurrent process can win a unique
//! index between a check and an INSERT), its requests are retried one per
//! transaction, so one request never fails another.

use std::{
    future::Future,
    sync::{Mutex, PoisonError},
};

use futures::{StreamExt, stream::FuturesUnordered};
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
    /// The fewest waiting requests for which a group starts while others are
    /// in flight (see [`Group::in_flight`]).
    const FULL: usize = Self::MAX;

    /// How many groups may be written at once: one unless the database runs
    /// concurrent writes side by side (`perform` of concurrent groups must
    /// then be correct in any interleaving, as concurrent transactions are).
    fn in_flight(&self) -> usize {
        1
    }

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

/// The writer: until every sender is gone and every write is done, takes what
/// is waiting (at most [`Group::MAX`]) and writes it: at once when nothing is
/// in flight, and while groups are in flight only when [`Group::FULL`] wait
/// and fewer than [`Group::in_flight`] are.
async fn run<G: Group>(group: G, mut queue: mpsc::Receiver<Waiting<G>>) {
    let limit = group.in_flight().max(1);
    let mut waiting = Vec::with_capacity(G::MAX);
    let mut writing = FuturesUnordered::new();
    let mut open = true;
    loop {
        while !waiting.is_empty()
            && (writing.is_empty() || (writing.len() < limit && waiting.len() >= G::FULL))
        {
            // At most `G::MAX`: the queue is read only into the room left.
            writing.push(write(&group, std::mem::take(&mut waiting)));
        }
        let room = G::MAX - waiting.len();
        tokio::select! {
            Some(()) = writing.next(), if !writing.is_empty() => {}
            received = queue.recv_many(&mut waiting, room), if open && room > 0 =>
            {
                open = received > 0;
            }
            else => break,
        }
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

#[cfg(test)]
mod tests {
    use std::{
        sync::{Arc, Mutex},
        time::Duration,
    };

    use tokio::{sync::Semaphore, task::JoinHandle};

    use super::{Group, GroupQueue};
    use crate::StoreError;

    /// A writer whose every group waits for a permit: the sizes of the groups
    /// it started, in order, show when the writer starts one.
    #[derive(Clone)]
    struct Gated {
        started: Arc<Mutex<Vec<usize>>>,
        gate: Arc<Semaphore>,
        in_flight: usize,
    }

    impl Group for Gated {
        type Request = u32;
        type Answer = u32;
        const NAME: &'static str = "gated";
        const MAX: usize = 8;
        const METRIC: &'static str = "releasedesk_test_group_size";
        const FULL: usize = 4;

        fn in_flight(&self) -> usize {
            self.in_flight
        }

        async fn perform(
            &self,
            requests: &[u32],
        ) -> Result<Vec<Result<u32, StoreError>>, StoreError> {
            self.started
                .lock()
                .expect("no test thread panicked")
                .push(requests.len());
            self.gate
                .acquire()
                .await
                .expect("the gate stays open")
                .forget();
            Ok(requests.iter().map(|r| Ok(r * 10)).collect())
        }
    }

    struct Harness {
        queue: Arc<GroupQueue<Gated>>,
        writer: Gated,
    }

    impl Harness {
        fn new(in_flight: usize) -> Self {
            Self {
                queue: Arc::new(GroupQueue::default()),
                writer: Gated {
                    started: Arc::default(),
                    gate: Arc::new(Semaphore::new(0)),
                    in_flight,
                },
            }
        }

        /// Submits `requests`, each from its own task, and lets the writer
        /// take them (the clock is paused: the sleep ends once every task
        /// waits).
        async fn submit(&self, requests: impl IntoIterator<Item = u32>) -> Vec<JoinHandle<u32>> {
            let handles = requests
                .into_iter()
                .map(|request| {
                    let (queue, writer) = (Arc::clone(&self.queue), self.writer.clone());
                    tokio::spawn(async move {
                        queue
                            .submit(request, || writer)
                            .await
                            .expect("the gated writer answers every request")
                    })
                })
                .collect();
            settle().await;
            handles
        }

        fn started(&self) -> Vec<usize> {
            self.writer
                .started
                .lock()
                .expect("no test thread panicked")
                .clone()
        }

        async fn open(&self, groups: usize) {
            self.writer.gate.add_permits(groups);
            settle().await;
        }
    }

    async fn settle() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    async fn answers(handles: Vec<JoinHandle<u32>>) -> Vec<u32> {
        let mut answers = Vec::new();
        for handle in handles {
            answers.push(handle.await.expect("the submitting task ends"));
        }
        answers
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_group_starts_only_when_a_full_one_waits() {
        let writer = Harness::new(2);
        let first = writer.submit([1]).await;
        let waiting = writer.submit([2, 3, 4]).await;
        assert_eq!(writer.started(), [1], "3 waiting are not a full group");

        let full = writer.submit([5]).await;
        assert_eq!(writer.started(), [1, 4], "4 waiting start beside the first");

        let third = writer.submit(6..=13).await;
        assert_eq!(
            writer.started(),
            [1, 4],
            "two groups are the most in flight"
        );

        writer.open(1).await;
        assert_eq!(writer.started(), [1, 4, 8], "the next starts when one ends");
        writer.open(2).await;
        assert_eq!(answers(first).await, [10]);
        assert_eq!(answers(waiting).await, [20, 30, 40]);
        assert_eq!(answers(full).await, [50]);
        assert_eq!(
            answers(third).await,
            (6..=13).map(|r| r * 10).collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn one_group_at_a_time_takes_everything_waiting_next() {
        let writer = Harness::new(1);
        let first = writer.submit([1]).await;
        let rest = writer.submit(2..=7).await;
        assert_eq!(
            writer.started(),
            [1],
            "a full group waits for the one in flight"
        );

        writer.open(1).await;
        assert_eq!(writer.started(), [1, 6]);
        writer.open(1).await;
        assert_eq!(answers(first).await, [10]);
        assert_eq!(answers(rest).await, [20, 30, 40, 50, 60, 70]);
    }
}

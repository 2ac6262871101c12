//! CPU work nobody waits on, behind the work somebody does.
//!
//! Sending an email costs the sending process tens of microseconds of CPU
//! (rendering, building the MIME message, writing the `.eml` file). In `serve`
//! that process also answers requests, on the same cores as the database: run
//! on the runtime's threads, a batch of emails held a thread for a millisecond
//! or more, with the requests queued on it; run at the same priority anywhere,
//! it took the cores from the filings it was sending for. Here it runs on one
//! thread of its own at the lowest CPU priority (Linux niceness 19), so it gets
//! whatever the requests and the database leave, and all of a core when they
//! leave it all. Measured in docs/BENCHMARKS.md ("Changes measured").

use std::{
    panic::AssertUnwindSafe,
    sync::{OnceLock, mpsc},
};

use tokio::sync::oneshot;

/// The niceness of the background thread: the lowest priority, so its work
/// waits while anything else of the host's is runnable (it still gets a
/// share: Linux never starves a thread entirely).
const NICENESS: i32 = 19;

type Job = Box<dyn FnOnce() + Send>;

/// The work could not run to its end: it panicked, or the thread is gone.
#[derive(Debug, thiserror::Error)]
#[error("background work did not finish")]
pub struct Unfinished;

/// Runs `work` on the process's background thread and waits for its result.
/// Jobs run one at a time, in the order they came.
pub async fn run<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Unfinished> {
    let (answer, answered) = oneshot::channel();
    let job: Job = Box::new(move || {
        // A panic ends this job, not the thread (nor the jobs behind it).
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(work));
        let _ = answer.send(outcome.map_err(|_| Unfinished));
    });
    match lane() {
        Some(lane) => lane.send(job).map_err(|_| Unfinished)?,
        // No thread could be started: the blocking pool, at normal priority.
        None => drop(tokio::task::spawn_blocking(job)),
    }
    answered.await.map_err(|_| Unfinished)?
}

/// The background thread's queue, started on first use.
fn lane() -> Option<&'static mpsc::Sender<Job>> {
    static LANE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();
    LANE.get_or_init(|| {
        let (sender, jobs) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("releasedesk-background".into())
            .spawn(move || {
                lower_priority();
                for job in jobs {
                    job();
                }
            })
            .inspect_err(|error| {
                tracing::warn!(%error, "no background thread; background work runs on the blocking pool");
            })
            .ok()
            .map(|_| sender)
    })
    .as_ref()
}

/// Gives the calling thread [`NICENESS`] (raising one's own niceness needs no
/// privilege). Elsewhere than Linux, where niceness is per process, nothing.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if let Err(error) =
        rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICENESS)
    {
        tracing::warn!(%error, "the background thread runs at normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn work_runs_on_the_background_thread_and_a_panic_ends_only_its_job() {
        let thread = run(|| std::thread::current().name().map(str::to_owned))
            .await
            .expect("ran");
        assert_eq!(thread.as_deref(), Some("releasedesk-background"));
        let panicked = run(|| -> u32 { panic!("a job that panics") }).await;
        assert!(panicked.is_err());
        assert_eq!(run(|| 6 * 7).await.expect("the thread is still there"), 42);
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_background_thread_has_the_lowest_priority() {
        let niceness = run(|| rustix::process::getpriority_process(Some(rustix::thread::gettid())))
            .await
            .expect("ran")
            .expect("read its priority");
        assert_eq!(niceness, NICENESS);
    }
}

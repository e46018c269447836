//! Blocking filesystem work with a deadline. A sysfs read or write can sleep uninterruptibly:
//! on 5.10 `driver_override` and `bind` take the device lock, which a `remove` holds while VFIO
//! waits for its group to be released, for as long as user space keeps it. Such work runs on one
//! worker thread; the caller waits at most its deadline. A stuck job cannot be cancelled, so
//! while it is stuck every other job fails at once (`Busy`) instead of piling up threads; the
//! worker takes jobs again when the kernel lets it go.
//!
//! Kept rather than tokio's `spawn_blocking` with a timeout (issue 23): a timed-out blocking
//! task cannot be cancelled either, and each new attempt would take another thread of tokio's
//! pool (up to 512) stuck on the same device lock, where this keeps one thread and answers
//! `Busy` at once (the unit tests below hold a job stuck and check that).
use std::{
    sync::atomic::{AtomicU64, Ordering},
    sync::{
        mpsc::{self, RecvTimeoutError, SyncSender},
        Arc, Mutex, OnceLock,
    },
    thread,
    time::{Duration, Instant},
};

/// A single attribute read or write.
pub const ATTRIBUTE: Duration = Duration::from_secs(2);
/// A whole scan of sysfs or of every process's fds, or, for a scan that reports its progress
/// ([`run_progressing`]), the longest it may go without any.
pub const SCAN: Duration = Duration::from_secs(10);

/// Bumped by the sysfs scan for every member it reads: a scan of a large tree that keeps moving
/// is slow, not stuck.
pub static SCAN_PROGRESS: AtomicU64 = AtomicU64::new(0);

/// Why a job gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stalled {
    #[error("did not finish within {} ms (the kernel is blocking it; it goes on in the background)", after.as_millis())]
    TimedOut { after: Duration },
    #[error("not tried: `{what}` has been blocked in the kernel for {} ms", since.as_millis())]
    Busy { what: String, since: Duration },
}

impl From<Stalled> for std::io::Error {
    fn from(s: Stalled) -> Self {
        std::io::Error::new(std::io::ErrorKind::TimedOut, s.to_string())
    }
}

type Job = Box<dyn FnOnce() + Send>;

struct Worker {
    jobs: SyncSender<Job>,
    /// The job running now: what it is and when it started.
    running: Arc<Mutex<Option<(String, Instant)>>>,
    /// Held by a caller for the whole of its call: callers on other threads wait their turn
    /// (at most one deadline), so a job still running when a caller gets in is a stuck one.
    calls: Mutex<()>,
}

impl Worker {
    fn start() -> Worker {
        let (jobs, queue) = mpsc::sync_channel::<Job>(1);
        thread::Builder::new()
            .name("sysfs-io".into())
            .spawn(move || {
                for job in queue {
                    job();
                }
            })
            .expect("cannot start the sysfs-io thread");
        Worker {
            jobs,
            running: Arc::new(Mutex::new(None)),
            calls: Mutex::new(()),
        }
    }

    fn stuck(&self) -> Option<(String, Duration)> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        running
            .as_ref()
            .map(|(what, since)| (what.clone(), since.elapsed()))
    }

    fn run<T: Send + 'static>(
        &self,
        what: &str,
        limit: Duration,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stalled> {
        self.run_watching(what, limit, None, job)
    }

    /// [`Self::run`], where `progress` moving within each `limit` extends the wait.
    fn run_watching<T: Send + 'static>(
        &self,
        what: &str,
        limit: Duration,
        progress: Option<&AtomicU64>,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Stalled> {
        let _turn = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((stuck, since)) = running.as_ref() {
                return Err(Stalled::Busy {
                    what: stuck.clone(),
                    since: since.elapsed(),
                });
            }
            *running = Some((what.to_string(), Instant::now()));
        }
        let (reply, result) = mpsc::sync_channel(1);
        let running = Arc::clone(&self.running);
        let sent = self.jobs.send(Box::new(move || {
            let value = job();
            // Free before the reply, so the caller's next job is never refused as busy.
            *running.lock().unwrap_or_else(|p| p.into_inner()) = None;
            // The caller may have given up: a closed reply channel is fine.
            let _ = reply.send(value);
        }));
        if sent.is_err() {
            // The worker thread is gone (only a panicking job ends it): say so, never hang.
            return Err(Stalled::Busy {
                what: "the sysfs-io thread ended".to_string(),
                since: Duration::ZERO,
            });
        }
        let started = Instant::now();
        let mut seen = progress.map(|p| p.load(Ordering::Relaxed));
        loop {
            match result.recv_timeout(limit) {
                Ok(v) => return Ok(v),
                Err(RecvTimeoutError::Timeout) => {
                    let now = progress.map(|p| p.load(Ordering::Relaxed));
                    if now.is_none() || now == seen {
                        return Err(Stalled::TimedOut {
                            after: started.elapsed(),
                        });
                    }
                    seen = now;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Stalled::Busy {
                        what: what.to_string(),
                        since: Duration::ZERO,
                    })
                }
            }
        }
    }
}

fn worker() -> &'static Worker {
    static WORKER: OnceLock<Worker> = OnceLock::new();
    WORKER.get_or_init(Worker::start)
}

/// Runs `job` on the process's sysfs-io worker and waits for it at most `limit`.
pub fn run<T: Send + 'static>(
    what: &str,
    limit: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stalled> {
    worker().run(what, limit, job)
}

/// [`run`] for a job that bumps `progress` as it goes: the wait lasts while it moves, and ends
/// once it stood still for `limit` (a sysfs scan of 100,000 devices takes longer than a stuck
/// read may, and is not stuck).
pub fn run_progressing<T: Send + 'static>(
    what: &str,
    limit: Duration,
    progress: &'static AtomicU64,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Stalled> {
    worker().run_watching(what, limit, Some(progress), job)
}

/// The job the kernel is holding, and for how long. Callers wait for every job they start, so
/// between calls a running job is one that outlived its deadline.
pub fn stuck() -> Option<(String, Duration)> {
    worker().stuck()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn a_job_that_keeps_moving_outlives_the_limit_and_one_that_stops_does_not() {
        let w = Worker::start();
        static MOVED: AtomicU64 = AtomicU64::new(0);
        let slow = w.run_watching("moving", Duration::from_millis(40), Some(&MOVED), || {
            for _ in 0..6 {
                thread::sleep(Duration::from_millis(20));
                MOVED.fetch_add(1, Ordering::Relaxed);
            }
            5
        });
        assert_eq!(slow, Ok(5));
        static STILL: AtomicU64 = AtomicU64::new(0);
        let stuck = w.run_watching("still", Duration::from_millis(40), Some(&STILL), || {
            thread::sleep(Duration::from_millis(300))
        });
        assert!(matches!(stuck, Err(Stalled::TimedOut { .. })), "{stuck:?}");
    }

    #[test]
    fn a_stuck_job_times_out_then_blocks_nothing_else_until_it_ends() {
        // A worker of its own: the process-wide one serves the other tests.
        let w = Worker::start();
        let run = |what: &str, limit, job: Box<dyn FnOnce() -> i32 + Send>| w.run(what, limit, job);
        assert_eq!(run("quick", ATTRIBUTE, Box::new(|| 7)), Ok(7));
        let (release, gate) = channel::<()>();
        let stuck = run(
            "stuck read",
            Duration::from_millis(50),
            Box::new(move || gate.recv().map_or(0, |()| 1)),
        );
        assert!(matches!(stuck, Err(Stalled::TimedOut { .. })), "{stuck:?}");
        assert_eq!(
            w.stuck().map(|(what, _)| what).as_deref(),
            Some("stuck read")
        );
        // Refused before it is queued: nothing waits behind the stuck job.
        match run("next", ATTRIBUTE, Box::new(|| 1)) {
            Err(Stalled::Busy { what, .. }) => assert_eq!(what, "stuck read"),
            other => panic!("expected Busy, got {other:?}"),
        }
        release.send(()).expect("the stuck job is waiting");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match run("after", ATTRIBUTE, Box::new(|| 2)) {
                Ok(v) => {
                    assert_eq!(w.stuck(), None);
                    break assert_eq!(v, 2);
                }
                Err(Stalled::Busy { .. }) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("the worker did not come back: {e}"),
            }
        }
    }
}

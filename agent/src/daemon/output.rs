//! Where the agent's lines go: stdout, one JSON object per line (docs/events.md; nothing else
//! goes to stdout), and in process, as typed values, the metrics and NFD's node labels.
use std::{
    io::{self, Write},
    path::Path,
    sync::{
        atomic::AtomicBool,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc, Condvar, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use log::{info, warn};

use iommu_enforcer_schema::Line;
use serde::Serialize;

use crate::{
    metrics::Metrics,
    nfd::{passthrough_groups, FeatureFile},
    node::NodeState,
    timestamp::rfc3339,
};

/// A line as printed: `time` (RFC 3339, UTC, microseconds: when the agent printed it) first,
/// then the line's own fields.
#[derive(Serialize)]
struct Stamped<'a> {
    time: &'a str,
    #[serde(flatten)]
    line: &'a Line,
}

/// The JSON text of `line` as printed at `at`.
pub fn to_json(line: &Line, at: SystemTime) -> serde_json::Result<String> {
    let time = rfc3339(at);
    serde_json::to_string(&Stamped { time: &time, line })
}

/// Lines the output queue holds while stdout is not read (a stalled log shipper): about a
/// few MB at most.
pub const QUEUE_LINES: usize = 4096;

/// What was lost to a full queue, and what of it the log has said.
#[derive(Debug, Default)]
pub struct Dropped {
    total: AtomicU64,
    said: AtomicU64,
}

impl Dropped {
    /// One more line did not fit.
    pub fn add(&self) {
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Lines dropped since the last call that returned some: what the writer says once it
    /// has caught up.
    pub fn unsaid(&self) -> Option<u64> {
        let total = self.total();
        let said = self.said.swap(total, Ordering::Relaxed);
        (total > said).then_some(total - said)
    }
}

/// How far the writer got: lines written (and flushed) so far, and whether it fell behind.
#[derive(Default)]
struct Progress {
    /// Lines accepted into the queue so far.
    queued: AtomicU64,
    written: Mutex<u64>,
    moved: Condvar,
    /// A [`Sink::flush_within`] timed out and the writer has not caught up since: flushes do
    /// not wait.
    stalled: AtomicBool,
}

/// The bounded queue in front of the writer thread: the event loop never blocks on stdout.
struct Queue {
    tx: Mutex<Option<SyncSender<String>>>,
    progress: Arc<Progress>,
    dropped: Arc<Dropped>,
    /// Signals the writer's end (every queued line written), for [`Sink::close`].
    done: Mutex<Option<Receiver<()>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The writer thread: writes every queued line to `out`, flushing whenever the queue is
/// empty, and once caught up says in the log how many lines did not fit. It may block on `out`
/// as long as it likes; only the queue fills.
fn writer(
    rx: Receiver<String>,
    mut out: Box<dyn Write + Send>,
    dropped: Arc<Dropped>,
    progress: Arc<Progress>,
) {
    let mut n = 0u64;
    while let Ok(first) = rx.recv() {
        let _ = out.write_all(first.as_bytes());
        n += 1;
        while let Ok(more) = rx.try_recv() {
            let _ = out.write_all(more.as_bytes());
            n += 1;
        }
        let _ = out.flush();
        *progress.written.lock().unwrap_or_else(|p| p.into_inner()) = n;
        progress.moved.notify_all();
        // Caught up with everything queued: flushes may wait again. A stdout read slowly
        // (batches written, the queue refilled meanwhile) stays stalled.
        if n >= progress.queued.load(Ordering::Relaxed) {
            progress.stalled.store(false, Ordering::Relaxed);
        }
        if let Some(n) = dropped.unsaid() {
            warn!("output: {n} lines dropped while stdout was not read (queue of {QUEUE_LINES} full); writing again");
        }
    }
}

/// Where output lines go: stdout as JSON, one flush per batch so a reader sees each event as it
/// happens, and the metrics and node labels, which read the same typed lines (no JSON
/// between). In the daemon, stdout is written by a thread of its own behind a bounded queue
/// ([`Sink::queued`]): a stdout nobody reads fills the queue, and the lines that do not fit are
/// counted (`output_lines_dropped_total`) and said in the log once the writer catches up,
/// never silently lost, and never a wait for the agent. A closed stdout is not a reason to stop
/// guarding the node: write errors are dropped.
#[derive(Clone, Default)]
pub struct Sink {
    metrics: Option<Arc<Metrics>>,
    /// NFD's feature file of node labels (`--nfd-features-dir`), fed from the same lines.
    nfd: Option<Arc<Mutex<FeatureFile>>>,
    /// The queue to the writer thread; `None` writes stdout in place (tests, one-shot commands).
    queue: Option<Arc<Queue>>,
}

impl Sink {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            metrics,
            nfd: None,
            queue: None,
        }
    }

    /// Writes stdout from a thread of its own, through a queue of `capacity` lines.
    pub fn queued(self, capacity: usize) -> io::Result<Self> {
        self.queued_to(Box::new(io::stdout()), capacity)
    }

    /// [`Self::queued`] to any writer.
    pub fn queued_to(mut self, out: Box<dyn Write + Send>, capacity: usize) -> io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let (done_tx, done_rx) = mpsc::channel();
        let dropped = Arc::new(Dropped::default());
        let counted = Arc::clone(&dropped);
        let progress = Arc::new(Progress::default());
        let told = Arc::clone(&progress);
        let thread = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || {
                writer(rx, out, counted, told);
                let _ = done_tx.send(());
            })?;
        self.queue = Some(Arc::new(Queue {
            tx: Mutex::new(Some(tx)),
            progress,
            dropped,
            done: Mutex::new(Some(done_rx)),
            thread: Mutex::new(Some(thread)),
        }));
        Ok(self)
    }

    /// Waits at most `patience` for the writer to have written every line emitted so far: what
    /// the ring drain calls before it consumes a record, so that a record is on stdout before
    /// it leaves the ring (an agent killed in between leaves it to the next one). A writer that
    /// misses the deadline is stalled (stdout not read): later calls do not wait until it has
    /// caught up. True when everything was written.
    pub fn flush_within(&self, patience: Duration) -> bool {
        let Some(q) = &self.queue else {
            return true;
        };
        let target = q.progress.queued.load(Ordering::Relaxed);
        let p = &q.progress;
        let written = p.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written >= target {
            return true;
        }
        if p.stalled.load(Ordering::Relaxed) {
            return false;
        }
        let (written, _) = p
            .moved
            .wait_timeout_while(written, patience, |w| *w < target)
            .unwrap_or_else(|e| e.into_inner());
        if *written >= target {
            return true;
        }
        p.stalled.store(true, Ordering::Relaxed);
        warn!(
            "output: stdout not read for {} ms; events are queued ({QUEUE_LINES} lines) and no longer wait for it",
            patience.as_millis()
        );
        false
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.queue.as_ref().map_or(0, |q| q.dropped.total())
    }

    /// Ends the queue and waits at most `patience` for the writer to write what it holds (the
    /// `shutdown` line last); a stdout still not read by then is left behind.
    pub fn close(&self, patience: Duration) {
        let Some(q) = &self.queue else {
            return;
        };
        q.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let done = q.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(done) = done {
            if done.recv_timeout(patience).is_ok() {
                if let Some(t) = q.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    let _ = t.join();
                }
            } else {
                warn!(
                    "output: stdout still not read after {} ms; exiting without the last lines",
                    patience.as_millis()
                );
            }
        }
    }

    /// One line to the queue, or counted as dropped when it is full.
    fn enqueue(&self, q: &Queue, json: String) {
        let tx = q.tx.lock().unwrap_or_else(|p| p.into_inner());
        let Some(tx) = tx.as_ref() else {
            return;
        };
        match tx.try_send(json) {
            Ok(()) => {
                q.progress.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => {
                q.dropped.add();
                if let Some(m) = &self.metrics {
                    m.output_lines_dropped(1);
                }
            }
            // The writer is gone (it cannot be, short of a panic): nothing to write to.
            Err(TrySendError::Disconnected(_)) => q.dropped.add(),
        }
    }

    /// Also keeps NFD's feature file in `dir` current, when given.
    pub fn with_nfd(mut self, dir: Option<&Path>) -> Self {
        self.nfd = dir.map(|d| Arc::new(Mutex::new(FeatureFile::new(d))));
        self
    }

    pub fn emit(&self, lines: &[Line]) {
        if lines.is_empty() {
            return;
        }
        let now = SystemTime::now();
        match &self.queue {
            Some(q) => {
                for line in lines {
                    if let Ok(mut json) = to_json(line, now) {
                        json.push('\n');
                        self.enqueue(q, json);
                    }
                }
            }
            None => {
                let stdout = io::stdout();
                let mut out = stdout.lock();
                for line in lines {
                    if let Ok(json) = to_json(line, now) {
                        let _ = writeln!(out, "{json}");
                    }
                }
                let _ = out.flush();
            }
        }
        if let Some(m) = &self.metrics {
            for line in lines {
                m.observe(line);
            }
        }
        self.with_nfd_file(|file| file.observe(lines));
    }

    /// True when the node labels are kept (`--nfd-features-dir`): only then is their renewal
    /// timer armed.
    pub fn has_nfd(&self) -> bool {
        self.nfd.is_some()
    }

    /// Tells the node labels which groups passthrough uses (reserved, or a member on
    /// vfio-pci), from the node as it is now: call before emitting the lines of a change.
    pub fn track(&self, node: &NodeState) {
        self.with_nfd_file(|file| {
            file.set_passthrough(passthrough_groups(node.map(), node.policy()))
        });
    }

    /// Rewrites the node labels with a fresh expiry (every `nfd::RENEW`).
    pub fn renew_nfd(&self) {
        self.with_nfd_file(FeatureFile::renew);
    }

    fn with_nfd_file(
        &self,
        f: impl FnOnce(&mut FeatureFile) -> Result<bool, crate::nfd::NfdError>,
    ) {
        if let Some(nfd) = &self.nfd {
            // A panic elsewhere while holding the lock leaves plain data: keep using it.
            let mut file = nfd.lock().unwrap_or_else(|p| p.into_inner());
            match f(&mut file) {
                Ok(true) => info!("node labels: wrote {}", file.path().display()),
                Ok(false) => {}
                Err(e) => warn!("node labels: {e}"),
            }
        }
    }

    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    /// A stdout nobody reads: every write blocks until the test lets it go.
    struct Stalled {
        gate: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (lock, cv) = &*self.gate;
            let mut open = lock.lock().expect("gate");
            while !*open {
                open = cv.wait(open).expect("gate");
            }
            self.written.lock().expect("written").extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_stdout_never_blocks_emit_and_what_does_not_fit_is_counted() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let out = Stalled {
            gate: Arc::clone(&gate),
            written: Arc::clone(&written),
        };
        let metrics = Arc::new(Metrics::new().expect("registry"));
        let sink = Sink::new(Some(Arc::clone(&metrics)))
            .queued_to(Box::new(out), 8)
            .expect("writer thread");
        let t = std::time::Instant::now();
        sink.emit(&[Line::Ready { groups: 1 }]);
        assert!(
            !sink.flush_within(Duration::from_millis(50)),
            "a stalled writer misses the deadline"
        );
        assert!(
            !sink.flush_within(Duration::from_secs(60)),
            "and later flushes do not wait for it"
        );
        // The writer took the first line and blocks on it; 8 more fill the queue.
        for i in 0..99 {
            sink.emit(&[Line::Lost { count: i }]);
        }
        assert!(t.elapsed() < Duration::from_secs(1), "emit never waits");
        let dropped = sink.dropped();
        assert!((91..=92).contains(&dropped), "dropped {dropped}");
        let rendered = metrics.render();
        assert!(
            rendered.contains(&format!(
                "iommu_enforcer_output_lines_dropped_total {dropped}"
            )),
            "{rendered}"
        );
        // The metrics still saw every line.
        assert!(rendered.contains("iommu_enforcer_events_lost_total 4851"));
        // stdout is read again: what was queued is written, in order, then the close.
        {
            let (lock, cv) = &*gate;
            *lock.lock().expect("gate") = true;
            cv.notify_all();
        }
        // Wait (bounded) for the writer to catch up, so the queue has room for the last line.
        let kept = 100 - dropped as usize;
        for _ in 0..500 {
            let n = written
                .lock()
                .expect("written")
                .iter()
                .filter(|b| **b == b'\n')
                .count();
            if n >= kept {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        sink.emit(&[Line::Shutdown {
            signal: "SIGTERM".into(),
        }]);
        sink.close(Duration::from_secs(5));
        let text = String::from_utf8(written.lock().expect("written").clone()).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, 100 - dropped + 1, "{text}");
        assert!(lines[0].contains(r#""type":"ready""#), "{}", lines[0]);
        assert!(lines.last().expect("last").contains("shutdown"));
        assert!(sink.flush_within(Duration::from_secs(5)), "caught up");
        assert_eq!(sink.queue.as_ref().map(|q| q.dropped.unsaid()), Some(None));
    }

    #[test]
    fn dropped_lines_are_said_once() {
        let d = Dropped::default();
        assert_eq!(d.unsaid(), None);
        d.add();
        d.add();
        assert_eq!(d.unsaid(), Some(2));
        assert_eq!(d.unsaid(), None);
        d.add();
        assert_eq!((d.unsaid(), d.total()), (Some(1), 3));
    }

    #[test]
    fn every_line_starts_with_its_time() {
        let at = UNIX_EPOCH + Duration::from_micros(1_796_203_805_123_456);
        for line in [
            Line::Ready { groups: 3 },
            Line::Lost { count: 2 },
            Line::Shutdown {
                signal: "SIGTERM".into(),
            },
        ] {
            let json = to_json(&line, at).expect("serializes");
            assert!(
                json.starts_with(r#"{"time":"2026-12-02T09:30:05.123456Z","type":"#),
                "{json}"
            );
            // The line's own fields are unchanged.
            let mut value: serde_json::Value = serde_json::from_str(&json).expect("JSON");
            value.as_object_mut().map(|o| o.remove("time"));
            assert_eq!(value, serde_json::to_value(&line).expect("serializes"));
        }
    }
}

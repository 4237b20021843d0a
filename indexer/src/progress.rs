//! Progress reporting for syncs: events with files done/total, rate and
//! ETA, throttled so a sink (a terminal bar, JSON lines) is not flooded.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::report::SyncReport;

/// Something that happened during a sync.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ProgressEvent {
    /// A repository's sync started; `to_process` files will be read.
    Started {
        /// Repository name.
        repo: String,
        /// Files in the repository that are candidates for indexing.
        total_files: u64,
        /// Files new or changed since the last sync.
        to_process: u64,
        /// Files deleted since the last sync.
        to_delete: u64,
    },
    /// Files processed so far.
    Progress(ProgressSnapshot),
    /// A batch was committed: what is processed so far survives a crash.
    Committed {
        /// Repository name.
        repo: String,
        /// Files processed and committed.
        done: u64,
    },
    /// A file could not be handled as usual; the sync goes on.
    Warning {
        /// Repository name.
        repo: String,
        /// What happened.
        message: String,
    },
    /// A repository's sync finished.
    Finished(Box<SyncReport>),
}

/// Progress of the files of one sync.
#[derive(Debug, Clone, Serialize)]
pub struct ProgressSnapshot {
    /// Repository name.
    pub repo: String,
    /// Files processed.
    pub done: u64,
    /// Files to process in all.
    pub total: u64,
    /// Bytes of content read.
    pub bytes: u64,
    /// Seconds since processing started.
    pub elapsed_secs: f64,
    /// Files per second so far.
    pub files_per_sec: f64,
    /// Estimated seconds left, once a rate is known.
    pub eta_secs: Option<f64>,
}

/// Receives progress events; called from worker threads.
pub trait ProgressSink: Sync {
    /// Handles one event.
    fn event(&self, event: &ProgressEvent);
}

impl<F: Fn(&ProgressEvent) + Sync> ProgressSink for F {
    fn event(&self, event: &ProgressEvent) {
        self(event)
    }
}

/// A sink that drops every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl ProgressSink for NoProgress {
    fn event(&self, _: &ProgressEvent) {}
}

/// Counts processed files and emits throttled [`ProgressEvent::Progress`] events.
pub(crate) struct Tracker<'a> {
    repo: String,
    total: u64,
    start: Instant,
    done: AtomicU64,
    bytes: AtomicU64,
    last_emit: Mutex<Instant>,
    interval: Duration,
    sink: &'a dyn ProgressSink,
}

impl<'a> Tracker<'a> {
    pub(crate) fn new(repo: &str, total: u64, sink: &'a dyn ProgressSink) -> Tracker<'a> {
        let start = Instant::now();
        Tracker {
            repo: repo.to_string(),
            total,
            start,
            done: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            last_emit: Mutex::new(start),
            interval: Duration::from_millis(200),
            sink,
        }
    }

    /// Records one processed file of `bytes` bytes.
    pub(crate) fn file_done(&self, bytes: u64) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        let due = match self.last_emit.try_lock() {
            Ok(mut last) if last.elapsed() >= self.interval || done == self.total => {
                *last = Instant::now();
                true
            }
            _ => false,
        };
        if due {
            self.sink.event(&ProgressEvent::Progress(self.snapshot()));
        }
    }

    pub(crate) fn done(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    pub(crate) fn snapshot(&self) -> ProgressSnapshot {
        let done = self.done.load(Ordering::Relaxed);
        let elapsed = self.start.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            done as f64 / elapsed
        } else {
            0.0
        };
        let eta_secs = (rate > 0.0).then(|| self.total.saturating_sub(done) as f64 / rate);
        ProgressSnapshot {
            repo: self.repo.clone(),
            done,
            total: self.total,
            bytes: self.bytes.load(Ordering::Relaxed),
            elapsed_secs: elapsed,
            files_per_sec: rate,
            eta_secs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_reports_rate_and_final_event() {
        let events = Mutex::new(Vec::new());
        let sink = |e: &ProgressEvent| {
            if let ProgressEvent::Progress(s) = e {
                events.lock().expect("lock").push(s.clone());
            }
        };
        let tracker = Tracker::new("r", 3, &sink);
        for _ in 0..3 {
            tracker.file_done(10);
        }
        let events = events.into_inner().expect("lock");
        let last = events.last().expect("an event for the last file");
        assert_eq!((last.done, last.total, last.bytes), (3, 3, 30));
        assert_eq!(last.eta_secs.map(|e| e == 0.0), Some(true));
        let json = serde_json::to_string(&ProgressEvent::Progress(last.clone())).expect("json");
        assert!(json.contains("\"event\":\"progress\""));
    }
}

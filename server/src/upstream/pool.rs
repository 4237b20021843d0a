//! A backend's replicas: which one takes the next request (least outstanding requests
//! among the healthy ones, the previous keystroke's replica while it is not much busier),
//! and which are out (ejected after a failure, with a back-off that doubles, until a
//! health check or the back-off's end lets them back in).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The first ejection's length; each further failure while out doubles it.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest ejection.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How much busier than the least busy replica the affine one may be and still win.
const AFFINITY_SLACK: usize = 2;
/// Latency histogram bounds (seconds), Prometheus style.
pub const LATENCY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Whether a replica takes requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaState {
    /// Takes requests.
    Healthy,
    /// Out until the instant (or a passing health check).
    Ejected(Instant),
}

#[derive(Debug)]
struct Health {
    state: ReplicaState,
    backoff: Duration,
    last_error: Option<String>,
}

/// One replica of a backend.
#[derive(Debug)]
pub struct Replica {
    /// Its base URL (`http://host:port`, no trailing slash).
    pub url: String,
    in_flight: AtomicUsize,
    health: Mutex<Health>,
    requests: AtomicU64,
    errors: AtomicU64,
    ejections: AtomicU64,
    latency: Mutex<[u64; LATENCY_BUCKETS.len() + 1]>,
    latency_sum_us: AtomicU64,
}

impl Replica {
    fn new(url: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            in_flight: AtomicUsize::new(0),
            health: Mutex::new(Health {
                state: ReplicaState::Healthy,
                backoff: FIRST_BACKOFF,
                last_error: None,
            }),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ejections: AtomicU64::new(0),
            latency: Mutex::new([0; LATENCY_BUCKETS.len() + 1]),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    /// Requests on it now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Whether it takes requests at `now` (an ejection whose back-off ended lets one
    /// request through to try it).
    pub fn is_available(&self, now: Instant) -> bool {
        match self.health.lock().map(|h| h.state) {
            Ok(ReplicaState::Healthy) => true,
            Ok(ReplicaState::Ejected(until)) => now >= until,
            Err(_) => false,
        }
    }

    /// Its state.
    pub fn state(&self) -> ReplicaState {
        self.health
            .lock()
            .map(|h| h.state)
            .unwrap_or(ReplicaState::Ejected(Instant::now()))
    }

    /// Marks it failed (a connection error, a timeout, a 5xx): ejected for the current
    /// back-off, which then doubles.
    pub fn fail(&self, why: &str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut h) = self.health.lock() {
            let was_healthy = h.state == ReplicaState::Healthy;
            h.state = ReplicaState::Ejected(Instant::now() + h.backoff);
            h.backoff = (h.backoff * 2).min(MAX_BACKOFF);
            h.last_error = Some(why.to_string());
            if was_healthy {
                self.ejections.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(replica = %self.url, error = %why, "replica ejected");
            }
        }
    }

    /// Marks it healthy (a request or a health check succeeded).
    pub fn succeed(&self) {
        if let Ok(mut h) = self.health.lock() {
            if h.state != ReplicaState::Healthy {
                tracing::info!(replica = %self.url, "replica re-admitted");
            }
            h.state = ReplicaState::Healthy;
            h.backoff = FIRST_BACKOFF;
            h.last_error = None;
        }
    }

    /// Records a finished request's time to its end.
    pub fn observe(&self, elapsed: Duration) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Ok(mut l) = self.latency.lock() {
            l[bucket] += 1;
        }
        self.latency_sum_us
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// Its counters for `/metrics`: requests, errors, ejections, in flight, the
    /// latency histogram (per bucket, not cumulative) and its sum in seconds.
    pub fn counters(&self) -> ReplicaCounters {
        ReplicaCounters {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            ejections: self.ejections.load(Ordering::Relaxed),
            in_flight: self.in_flight() as u64,
            latency: self.latency.lock().map(|l| l.to_vec()).unwrap_or_default(),
            latency_sum_secs: self.latency_sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Its state for `/v1/health`.
    pub fn status(&self) -> Value {
        let (state, retry_in_ms, error) = match self.health.lock() {
            Ok(h) => match h.state {
                ReplicaState::Healthy => ("healthy", None, h.last_error.clone()),
                ReplicaState::Ejected(until) => (
                    "ejected",
                    Some(until.saturating_duration_since(Instant::now()).as_millis() as u64),
                    h.last_error.clone(),
                ),
            },
            Err(_) => ("ejected", None, None),
        };
        json!({"url": self.url, "state": state, "in_flight": self.in_flight(),
               "retry_in_ms": retry_in_ms, "last_error": error})
    }
}

/// A replica's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplicaCounters {
    /// Requests answered (successfully or not, once they reached the replica).
    pub requests: u64,
    /// Failures (connection errors, timeouts, 5xx).
    pub errors: u64,
    /// Times it was ejected.
    pub ejections: u64,
    /// Requests on it now.
    pub in_flight: u64,
    /// Requests per latency bucket ([`LATENCY_BUCKETS`], then +Inf).
    pub latency: Vec<u64>,
    /// Sum of latencies in seconds.
    pub latency_sum_secs: f64,
}

/// A request's hold on a replica: counted in its in-flight requests until dropped.
#[derive(Debug)]
pub struct Pick {
    /// The replica.
    pub replica: Arc<Replica>,
    /// Its index in the pool.
    pub index: usize,
}

impl Drop for Pick {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The replicas of one backend.
#[derive(Debug)]
pub struct Pool {
    replicas: Vec<Arc<Replica>>,
    max_in_flight: usize,
    /// The replica that served each affinity key last (a small table, by hash).
    affinity: Mutex<Vec<(u64, usize)>>,
    next: AtomicUsize,
}

/// Affinity keys remembered (the oldest is forgotten first).
const AFFINITY_KEYS: usize = 4096;

impl Pool {
    /// A pool of `urls`, each taking at most `max_in_flight` requests at once.
    pub fn new(urls: &[String], max_in_flight: usize) -> Self {
        Self {
            replicas: urls.iter().map(|u| Arc::new(Replica::new(u))).collect(),
            max_in_flight: max_in_flight.max(1),
            affinity: Mutex::new(Vec::new()),
            next: AtomicUsize::new(0),
        }
    }

    /// The replicas, in configuration order.
    pub fn replicas(&self) -> &[Arc<Replica>] {
        &self.replicas
    }

    /// Takes a replica for a request: among those available and below their limit, the
    /// one `affinity` last used unless it has `AFFINITY_SLACK` more requests than the
    /// least busy, else the least busy (ties rotate). `avoid` excludes replicas (a
    /// retry's first choice). `None` when every replica is out or full.
    pub fn pick(&self, affinity: Option<u64>, avoid: &[usize]) -> Option<Pick> {
        let now = Instant::now();
        let candidates: Vec<usize> = (0..self.replicas.len())
            .filter(|i| !avoid.contains(i))
            .filter(|&i| {
                let r = &self.replicas[i];
                r.is_available(now) && r.in_flight() < self.max_in_flight
            })
            .collect();
        let least = candidates
            .iter()
            .map(|&i| self.replicas[i].in_flight())
            .min()?;
        let affine = affinity.and_then(|key| {
            self.affinity
                .lock()
                .ok()
                .and_then(|t| t.iter().rev().find(|(k, _)| *k == key).map(|(_, i)| *i))
        });
        let chosen = match affine {
            Some(i)
                if candidates.contains(&i)
                    && self.replicas[i].in_flight() <= least + AFFINITY_SLACK =>
            {
                i
            }
            _ => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let n = candidates.len();
                (0..n)
                    .map(|k| candidates[(start + k) % n])
                    .find(|&i| self.replicas[i].in_flight() == least)
                    .unwrap_or(candidates[0])
            }
        };
        let replica = self.replicas[chosen].clone();
        replica.in_flight.fetch_add(1, Ordering::SeqCst);
        if let Some(key) = affinity
            && let Ok(mut t) = self.affinity.lock()
        {
            t.retain(|(k, _)| *k != key);
            t.push((key, chosen));
            if t.len() > AFFINITY_KEYS {
                t.remove(0);
            }
        }
        Some(Pick {
            replica,
            index: chosen,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, max: usize) -> Pool {
        let urls: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}/", 9000 + i))
            .collect();
        Pool::new(&urls, max)
    }

    #[test]
    fn the_least_busy_replica_takes_the_next_request() {
        let p = pool(3, 8);
        let a = p.pick(None, &[]).expect("pick");
        let b = p.pick(None, &[]).expect("pick");
        let c = p.pick(None, &[]).expect("pick");
        let mut used = vec![a.index, b.index, c.index];
        used.sort();
        assert_eq!(used, vec![0, 1, 2], "one each while all are equal");
        drop(b);
        let d = p.pick(None, &[]).expect("pick");
        assert_eq!(d.replica.in_flight(), 1);
        assert_eq!(
            p.replicas()[0].url,
            "http://127.0.0.1:9000",
            "no trailing slash"
        );
    }

    #[test]
    fn full_and_ejected_replicas_are_skipped_and_come_back() {
        let p = pool(2, 1);
        let first = p.pick(None, &[]).expect("pick");
        let second = p.pick(None, &[]).expect("pick");
        assert_ne!(first.index, second.index);
        assert!(p.pick(None, &[]).is_none(), "both full");
        drop(second);
        p.replicas()[first.index].fail("connection refused");
        drop(first);
        for _ in 0..4 {
            let q = p.pick(None, &[]).expect("the healthy one");
            assert_eq!(p.replicas()[q.index].state(), ReplicaState::Healthy);
        }
        let out = p
            .replicas()
            .iter()
            .position(|r| r.state() != ReplicaState::Healthy)
            .expect("one is out");
        assert_eq!(p.replicas()[out].counters().ejections, 1);
        assert!(
            p.pick(None, &[1 - out]).is_none(),
            "only the ejected one is left"
        );
        p.replicas()[out].succeed();
        assert!(p.pick(None, &[1 - out]).is_some(), "re-admitted");
    }

    #[test]
    fn back_off_doubles_and_ends() {
        let r = Replica::new("http://x");
        r.fail("a");
        let ReplicaState::Ejected(first) = r.state() else {
            panic!("ejected");
        };
        r.fail("b");
        let ReplicaState::Ejected(second) = r.state() else {
            panic!("ejected");
        };
        assert!(second > first + Duration::from_millis(900), "doubled");
        assert_eq!(r.counters().ejections, 1, "one ejection, two errors");
        assert_eq!(r.counters().errors, 2);
        assert!(!r.is_available(Instant::now()));
        assert!(r.is_available(Instant::now() + Duration::from_secs(3)));
    }

    #[test]
    fn a_key_stays_on_its_replica_unless_it_is_much_busier() {
        let p = pool(2, 16);
        let first = p.pick(Some(7), &[]).expect("pick");
        let home = first.index;
        drop(first);
        let mut held = Vec::new();
        for _ in 0..3 {
            let again = p.pick(Some(7), &[]).expect("pick");
            assert_eq!(again.index, home, "affinity");
            held.push(again);
        }
        // Three on the home replica, none on the other: past the slack.
        let moved = p.pick(Some(7), &[]).expect("pick");
        assert_ne!(moved.index, home, "overloaded: least busy wins");
    }

    #[test]
    fn latency_lands_in_its_bucket() {
        let r = Replica::new("http://x");
        r.observe(Duration::from_millis(3));
        r.observe(Duration::from_millis(300));
        r.observe(Duration::from_secs(20));
        let c = r.counters();
        assert_eq!(c.requests, 3);
        assert_eq!(c.latency[0], 1);
        assert_eq!(c.latency[6], 1);
        assert_eq!(c.latency[LATENCY_BUCKETS.len()], 1);
    }
}

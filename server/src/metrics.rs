//! Prometheus metrics: requests by route and status, latency histograms,
//! tokens, queue depth, prefix-cache hit rate and completion acceptance events.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use engine::EngineCounters;

/// Upper bounds of the latency histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    events: BTreeMap<String, u64>,
    completions: BTreeMap<String, u64>,
}

/// Request counts since start, for the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Every request answered.
    pub requests: u64,
    /// Answers with a 5xx status.
    pub server_errors: u64,
}

/// The server's metrics registry.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
    /// (when, requests so far), sampled about once a second for the request rate.
    samples: Mutex<std::collections::VecDeque<(std::time::Instant, u64)>>,
}

/// How far back the request rate looks.
const RATE_WINDOW: Duration = Duration::from_secs(60);

impl Metrics {
    /// Counts a finished request of `route` with `status` that took `elapsed`.
    pub fn observe(&self, route: &str, status: u16, elapsed: Duration) {
        let Ok(mut m) = self.inner.lock() else { return };
        *m.requests.entry((route.to_string(), status)).or_default() += 1;
        let h = m.latency.entry(route.to_string()).or_default();
        let secs = elapsed.as_secs_f64();
        for (i, &le) in BUCKETS.iter().enumerate() {
            if secs <= le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Requests and server errors since start.
    pub fn totals(&self) -> Totals {
        let Ok(m) = self.inner.lock() else {
            return Totals::default();
        };
        m.requests
            .iter()
            .fold(Totals::default(), |mut t, ((_, status), n)| {
                t.requests += n;
                if *status >= 500 {
                    t.server_errors += n;
                }
                t
            })
    }

    /// Records the request count now (the server's refresh thread calls it every
    /// second), for [`Metrics::requests_per_minute`].
    pub fn sample(&self) {
        let total = self.totals().requests;
        self.sample_at(std::time::Instant::now(), total);
    }

    fn sample_at(&self, at: std::time::Instant, total: u64) {
        if let Ok(mut s) = self.samples.lock() {
            s.push_back((at, total));
            while s
                .front()
                .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
            {
                s.pop_front();
            }
        }
    }

    /// Requests per minute over the last minute (or as long as samples go back);
    /// `None` before two samples a second apart exist.
    pub fn requests_per_minute(&self) -> Option<f64> {
        let s = self.samples.lock().ok()?;
        let (first, last) = (s.front()?, s.back()?);
        let secs = last.0.duration_since(first.0).as_secs_f64();
        (secs >= 1.0).then(|| (last.1 - first.1) as f64 * 60.0 / secs)
    }

    /// Counts a telemetry event (`view`, `select`, `dismiss`, …).
    pub fn event(&self, kind: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.events.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Counts a completion outcome (`shown`, `empty`, `cancelled`).
    pub fn completion(&self, outcome: &str) {
        if let Ok(mut m) = self.inner.lock() {
            *m.completions.entry(outcome.to_string()).or_default() += 1;
        }
    }

    /// The Prometheus text exposition of everything, each loaded model's engine
    /// counters included (labelled `model="<id>"`).
    pub fn render(&self, engines: &[(&str, &EngineCounters)], index_docs: Option<u64>) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        out.push_str("# HELP souffleur_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE souffleur_requests_total counter\n");
        for ((route, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "souffleur_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP souffleur_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE souffleur_request_duration_seconds histogram\n");
        for (route, h) in &m.latency {
            for (le, c) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "souffleur_request_duration_seconds_bucket{{route=\"{route}\",le=\"{le}\"}} {c}"
                );
            }
            let _ = writeln!(
                out,
                "souffleur_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "souffleur_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "souffleur_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.count
            );
        }
        out.push_str("# HELP souffleur_completion_events_total Editor telemetry events.\n");
        out.push_str("# TYPE souffleur_completion_events_total counter\n");
        for (kind, n) in &m.events {
            let _ = writeln!(
                out,
                "souffleur_completion_events_total{{type=\"{kind}\"}} {n}"
            );
        }
        out.push_str("# HELP souffleur_completions_total Completion outcomes.\n");
        out.push_str("# TYPE souffleur_completions_total counter\n");
        for (kind, n) in &m.completions {
            let _ = writeln!(out, "souffleur_completions_total{{outcome=\"{kind}\"}} {n}");
        }
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let per_engine = engines.iter().map(|(model, engine)| {
            let lookups = load(&engine.prefix_lookups);
            let hits = load(&engine.prefix_hits);
            let gauges: [(&str, &str, &str, f64); 13] = [
                (
                    "souffleur_queue_depth",
                    "gauge",
                    "Requests waiting for the engine.",
                    load(&engine.waiting) as f64,
                ),
                (
                    "souffleur_active_sequences",
                    "gauge",
                    "Sequences being generated.",
                    load(&engine.active) as f64,
                ),
                (
                    "souffleur_generated_tokens_total",
                    "counter",
                    "Tokens generated.",
                    load(&engine.generated_tokens) as f64,
                ),
                (
                    "souffleur_prompt_tokens_total",
                    "counter",
                    "Prompt tokens computed.",
                    load(&engine.prompt_tokens) as f64,
                ),
                (
                    "souffleur_reused_prompt_tokens_total",
                    "counter",
                    "Prompt tokens served from the prefix cache.",
                    load(&engine.reused_prompt_tokens) as f64,
                ),
                (
                    "souffleur_forward_passes_total",
                    "counter",
                    "Model forward passes.",
                    load(&engine.forward_passes) as f64,
                ),
                (
                    "souffleur_drafted_tokens_total",
                    "counter",
                    "Tokens proposed by speculative drafting.",
                    load(&engine.drafted_tokens) as f64,
                ),
                (
                    "souffleur_accepted_draft_tokens_total",
                    "counter",
                    "Drafted tokens the model confirmed.",
                    load(&engine.accepted_tokens) as f64,
                ),
                (
                    "souffleur_prefix_cache_lookups_total",
                    "counter",
                    "Requests that looked up the prefix cache.",
                    lookups as f64,
                ),
                (
                    "souffleur_prefix_cache_hits_total",
                    "counter",
                    "Requests that reused cached state.",
                    hits as f64,
                ),
                (
                    "souffleur_prefix_cache_hit_ratio",
                    "gauge",
                    "Prefix cache hits per lookup.",
                    if lookups == 0 {
                        0.0
                    } else {
                        hits as f64 / lookups as f64
                    },
                ),
                (
                    "souffleur_prefix_cache_bytes",
                    "gauge",
                    "Memory held by the prefix cache.",
                    load(&engine.prefix_cache_bytes) as f64,
                ),
                (
                    "souffleur_kv_cache_bytes",
                    "gauge",
                    "Memory held by the key/value state of running sequences.",
                    load(&engine.kv_cache_bytes) as f64,
                ),
            ];
            (*model, gauges)
        });
        let per_engine: Vec<_> = per_engine.collect();
        if let Some((_, first)) = per_engine.first() {
            for (at, (name, kind, help, _)) in first.iter().enumerate() {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for (model, gauges) in &per_engine {
                    let _ = writeln!(out, "{name}{{model=\"{model}\"}} {}", gauges[at].3);
                }
            }
        }
        if let Some(docs) = index_docs {
            let _ = writeln!(
                out,
                "# HELP souffleur_index_documents Documents in the code index.\n# TYPE souffleur_index_documents gauge\nsouffleur_index_documents {docs}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_rate_is_over_the_last_minute() {
        let m = Metrics::default();
        assert_eq!(m.requests_per_minute(), None);
        let t0 = std::time::Instant::now();
        m.sample_at(t0, 100);
        m.sample_at(t0 + Duration::from_secs(30), 130);
        assert_eq!(m.requests_per_minute(), Some(60.0));
        // Samples older than a minute drop out.
        m.sample_at(t0 + Duration::from_secs(90), 130);
        assert_eq!(m.requests_per_minute(), Some(0.0));
    }

    #[test]
    fn histogram_is_cumulative_and_text_is_prometheus() {
        let m = Metrics::default();
        m.observe("/v1/completions", 200, Duration::from_millis(30));
        m.observe("/v1/completions", 200, Duration::from_millis(300));
        m.observe("/v1/completions", 413, Duration::from_millis(1));
        let counters = EngineCounters::default();
        counters.generated_tokens.store(7, Ordering::Relaxed);
        let text = m.render(
            &[("a", &counters), ("b", &EngineCounters::default())],
            Some(5),
        );
        assert!(
            text.contains("souffleur_generated_tokens_total{model=\"a\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("souffleur_generated_tokens_total{model=\"b\"} 0"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE souffleur_generated_tokens_total")
                .count(),
            1
        );
        assert!(
            text.contains("souffleur_requests_total{route=\"/v1/completions\",status=\"200\"} 2")
        );
        assert!(text.contains(
            "souffleur_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"0.05\"} 2"
        ));
        assert!(text.contains(
            "souffleur_request_duration_seconds_bucket{route=\"/v1/completions\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains("souffleur_index_documents 5"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().expect("value");
            assert!(value.parse::<f64>().is_ok(), "bad sample line {line}");
        }
    }
}

//! Usage as the console plots it: every completion, chat and review request counted
//! per minute, kind, language, user and mode, with its latency and tokens, and the
//! editors' acceptance events (`view`, `select`, `dismiss`) attributed to the
//! completion they name. Counted in memory and written to `usage_minutes`
//! ([`crate::store::usage`]) every few seconds by the server's refresh thread.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use crate::store::usage::{self, UsageCounts, UsageKey};

/// Completion ids remembered for their events.
const REMEMBERED: usize = 50_000;

/// What a handler tells the usage counts about its request (kept in the request's
/// audit information).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageNote {
    /// The completion's language.
    pub language: String,
    /// `single` or `multi`.
    pub mode: String,
    /// Whether a completion came back with text.
    pub shown: bool,
    /// The completion's id, which the editor's events name.
    pub completion_id: Option<String>,
}

/// Counts not yet written, and recent completions' attributes.
#[derive(Default)]
pub struct Usage {
    pending: Mutex<HashMap<UsageKey, UsageCounts>>,
    recent: Mutex<(HashMap<String, UsageKey>, VecDeque<String>)>,
}

/// Minutes since the epoch now.
pub fn minute_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64 / 60)
        .unwrap_or(0)
}

impl Usage {
    /// Counts a finished request of `kind` by `user`.
    pub fn request(
        &self,
        kind: &str,
        note: &UsageNote,
        user: &str,
        status: u16,
        latency_ms: u64,
        tokens: u64,
    ) {
        let key = UsageKey {
            minute: minute_now(),
            kind: kind.to_string(),
            language: note.language.clone(),
            user: user.to_string(),
            mode: note.mode.clone(),
        };
        if let (Some(id), Ok(mut recent)) = (&note.completion_id, self.recent.lock()) {
            let (map, order) = &mut *recent;
            map.insert(id.clone(), key.clone());
            order.push_back(id.clone());
            while order.len() > REMEMBERED {
                if let Some(old) = order.pop_front() {
                    map.remove(&old);
                }
            }
        }
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let c = pending.entry(key).or_default();
        if (200..300).contains(&status) {
            c.requests += 1;
            c.shown += u64::from(note.shown);
            c.tokens += tokens;
            c.observe(latency_ms);
        } else {
            c.errors += 1;
        }
    }

    /// Counts an editor's event (`view`, `select`, `dismiss`) on the completion
    /// `completion_id`; gives whether that completion is known.
    pub fn event(&self, completion_id: &str, event: &str) -> bool {
        let Some(mut key) = self
            .recent
            .lock()
            .ok()
            .and_then(|r| r.0.get(completion_id).cloned())
        else {
            return false;
        };
        key.minute = minute_now();
        if let Ok(mut pending) = self.pending.lock() {
            let c = pending.entry(key).or_default();
            match event {
                "view" => c.viewed += 1,
                "select" => c.accepted += 1,
                "dismiss" => c.dismissed += 1,
                _ => {}
            }
        }
        true
    }

    /// Writes the counts so far to the database at `db`; they are kept for the next
    /// try if the write fails.
    pub fn flush(&self, db: &Path) {
        let rows: Vec<(UsageKey, UsageCounts)> = match self.pending.lock() {
            Ok(mut p) => p.drain().collect(),
            Err(_) => return,
        };
        if rows.is_empty() {
            return;
        }
        if let Err(e) = usage::add(db, &rows) {
            tracing::error!(error = %e, "cannot write usage counts");
            if let Ok(mut p) = self.pending.lock() {
                for (k, c) in rows {
                    p.entry(k).or_default().add(&c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_their_events_are_counted_together() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("u.db");
        let u = Usage::default();
        let note = UsageNote {
            language: "rust".into(),
            mode: "single".into(),
            shown: true,
            completion_id: Some("cmpl-1".into()),
        };
        u.request("completion", &note, "alice", 200, 120, 7);
        u.request("completion", &UsageNote::default(), "alice", 429, 1, 0);
        assert!(u.event("cmpl-1", "view"));
        assert!(u.event("cmpl-1", "select"));
        assert!(!u.event("cmpl-unknown", "select"));
        u.flush(&db);
        let rows = usage::read(&db, 0).expect("read");
        let mut total = UsageCounts::default();
        for (k, c) in &rows {
            assert_eq!(k.user, "alice");
            total.add(c);
        }
        assert_eq!(
            (
                total.requests,
                total.errors,
                total.shown,
                total.viewed,
                total.accepted,
                total.tokens
            ),
            (1, 1, 1, 1, 1, 7)
        );
        let rust: Vec<_> = rows.iter().filter(|(k, _)| k.language == "rust").collect();
        assert_eq!(
            rust[0].1.accepted, 1,
            "the event counts under the completion's language"
        );
    }
}

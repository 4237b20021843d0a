//! Per-minute usage aggregates (`usage_minutes`): requests, errors, completions shown,
//! viewed, accepted and dismissed, tokens generated and a latency histogram per
//! minute, kind (`completion`, `chat`, `review`), language, user and mode (single- or
//! multi-line). No prompt or code is ever in them; the console's plots read them.

use std::path::Path;

use rusqlite::{OptionalExtension, params};

use super::db::{Result, open_db};

/// Upper bounds (ms) of the latency histogram's buckets; one more counts the rest.
pub const LATENCY_BUCKETS_MS: [u64; 16] = [
    10, 25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1000, 2000, 5000, 10_000, 30_000,
];

/// What one row counts.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    /// Minutes since the epoch.
    pub minute: i64,
    /// `completion`, `chat` or `review`.
    pub kind: String,
    /// The completion's language (empty for others).
    pub language: String,
    /// The token (user) name.
    pub user: String,
    /// `single` or `multi` for completions (empty for others).
    pub mode: String,
}

/// The counts of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageCounts {
    /// Requests answered 2xx.
    pub requests: u64,
    /// Requests answered otherwise.
    pub errors: u64,
    /// Completions returned with text.
    pub shown: u64,
    /// Completions the editor reported shown (`view` events).
    pub viewed: u64,
    /// Completions accepted (`select` events).
    pub accepted: u64,
    /// Completions dismissed (`dismiss` events).
    pub dismissed: u64,
    /// Tokens generated.
    pub tokens: u64,
    /// Latency histogram: counts per [`LATENCY_BUCKETS_MS`] bucket, then the rest.
    pub latency: Vec<u64>,
}

impl Default for UsageCounts {
    fn default() -> Self {
        Self {
            requests: 0,
            errors: 0,
            shown: 0,
            viewed: 0,
            accepted: 0,
            dismissed: 0,
            tokens: 0,
            latency: vec![0; LATENCY_BUCKETS_MS.len() + 1],
        }
    }
}

impl UsageCounts {
    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: &UsageCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.shown += other.shown;
        self.viewed += other.viewed;
        self.accepted += other.accepted;
        self.dismissed += other.dismissed;
        self.tokens += other.tokens;
        if self.latency.len() < other.latency.len() {
            self.latency.resize(other.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            *a += b;
        }
    }

    /// Counts a latency of `ms`.
    pub fn observe(&mut self, ms: u64) {
        let i = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms <= b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        if let Some(slot) = self.latency.get_mut(i) {
            *slot += 1;
        }
    }

    /// The `q` quantile (0..1) of the latency in ms: the upper bound of the bucket it
    /// falls in (the last bucket reports its lower bound); `None` without samples.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.latency.iter().enumerate() {
            seen += n;
            if seen >= wanted {
                return Some(
                    LATENCY_BUCKETS_MS
                        .get(i)
                        .copied()
                        .unwrap_or(LATENCY_BUCKETS_MS[LATENCY_BUCKETS_MS.len() - 1]),
                );
            }
        }
        None
    }
}

fn histogram_text(latency: &[u64]) -> String {
    latency
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn histogram_of(text: &str) -> Vec<u64> {
    let mut out: Vec<u64> = text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(0))
        .collect();
    out.resize(LATENCY_BUCKETS_MS.len() + 1, 0);
    out
}

/// Adds `rows` to the table (rows of the same key are summed).
pub fn add(db: &Path, rows: &[(UsageKey, UsageCounts)]) -> Result<()> {
    let conn = open_db(db)?;
    let tx = conn.unchecked_transaction()?;
    for (k, c) in rows {
        let key = params![k.minute, k.kind, k.language, k.user, k.mode];
        let before: Option<String> = tx
            .query_row(
                "SELECT latency FROM usage_minutes WHERE minute = ?1 AND kind = ?2 AND language = ?3 AND user = ?4 AND mode = ?5",
                key,
                |r| r.get(0),
            )
            .optional()?;
        let mut latency = c.latency.clone();
        if let Some(text) = before {
            for (a, b) in latency.iter_mut().zip(histogram_of(&text)) {
                *a += b;
            }
        }
        tx.execute(
            "INSERT INTO usage_minutes (minute, kind, language, user, mode, requests, errors, shown, viewed, accepted, dismissed, tokens, latency)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
             ON CONFLICT (minute, kind, language, user, mode) DO UPDATE SET
               requests = requests + excluded.requests, errors = errors + excluded.errors,
               shown = shown + excluded.shown, viewed = viewed + excluded.viewed,
               accepted = accepted + excluded.accepted, dismissed = dismissed + excluded.dismissed,
               tokens = tokens + excluded.tokens, latency = excluded.latency",
            params![
                k.minute,
                k.kind,
                k.language,
                k.user,
                k.mode,
                c.requests as i64,
                c.errors as i64,
                c.shown as i64,
                c.viewed as i64,
                c.accepted as i64,
                c.dismissed as i64,
                c.tokens as i64,
                histogram_text(&latency)
            ],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// Rows from minute `from` on.
pub fn read(db: &Path, from: i64) -> Result<Vec<(UsageKey, UsageCounts)>> {
    let conn = open_db(db)?;
    let mut stmt = conn.prepare(
        "SELECT minute, kind, language, user, mode, requests, errors, shown, viewed, accepted, dismissed, tokens, latency
         FROM usage_minutes WHERE minute >= ?1 ORDER BY minute",
    )?;
    let rows = stmt.query_map([from], |r| {
        let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
        Ok((
            UsageKey {
                minute: r.get(0)?,
                kind: r.get(1)?,
                language: r.get(2)?,
                user: r.get(3)?,
                mode: r.get(4)?,
            },
            UsageCounts {
                requests: n(5)?,
                errors: n(6)?,
                shown: n(7)?,
                viewed: n(8)?,
                accepted: n(9)?,
                dismissed: n(10)?,
                tokens: n(11)?,
                latency: histogram_of(&r.get::<_, String>(12)?),
            },
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// Deletes rows before minute `before`; gives how many.
pub fn prune(db: &Path, before: i64) -> Result<usize> {
    let conn = open_db(db)?;
    Ok(conn.execute("DELETE FROM usage_minutes WHERE minute < ?1", [before])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(minute: i64, user: &str) -> UsageKey {
        UsageKey {
            minute,
            kind: "completion".into(),
            language: "python".into(),
            user: user.into(),
            mode: "single".into(),
        }
    }

    #[test]
    fn rows_add_up_and_quantiles_come_from_the_histogram() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("u.db");
        let mut c = UsageCounts {
            requests: 2,
            shown: 1,
            ..UsageCounts::default()
        };
        c.observe(40);
        c.observe(900);
        add(
            &db,
            &[(key(100, "a"), c.clone()), (key(101, "b"), c.clone())],
        )
        .expect("add");
        add(&db, &[(key(100, "a"), c.clone())]).expect("add again");
        let rows = read(&db, 0).expect("read");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].1.requests, 4);
        assert_eq!(rows[0].1.latency.iter().sum::<u64>(), 4);
        assert_eq!(rows[0].1.latency_quantile(0.5), Some(50));
        assert_eq!(rows[0].1.latency_quantile(0.99), Some(1000));
        assert_eq!(UsageCounts::default().latency_quantile(0.5), None);
        assert_eq!(read(&db, 101).expect("read").len(), 1);
        assert_eq!(prune(&db, 101).expect("prune"), 1);
        assert_eq!(read(&db, 0).expect("read").len(), 1);
    }
}

//! The audit log: who called what, when, with what outcome and how many tokens.
//! Code (prompts and completions) is stored only when the config says so.
//! Rows are written by a background thread, so requests never wait on the disk.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};

use rusqlite::params;
use serde::Serialize;

use super::db::{Result, StoreError, open_db};

/// One audited request.
#[derive(Debug, Clone, Default)]
pub struct AuditRecord {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Name of the token (or `local`).
    pub token: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Time to respond.
    pub latency_ms: i64,
    /// Prompt tokens, for model calls.
    pub prompt_tokens: Option<i64>,
    /// Generated tokens, for model calls.
    pub completion_tokens: Option<i64>,
    /// Model used, for model calls (its id).
    pub model: Option<String>,
    /// That model's SHA-256.
    pub model_sha256: Option<String>,
    /// The prompt, only with `audit.store_code`.
    pub prompt: Option<String>,
    /// The completion, only with `audit.store_code`.
    pub completion: Option<String>,
    /// The request's id (sent back in `x-request-id`, and in its log lines).
    pub request_id: Option<String>,
    /// What an admin did (console actions: `create token alice (user, *)`).
    pub action: Option<String>,
}

/// What the writer thread is sent.
enum Message {
    /// A row to write.
    Record(Box<AuditRecord>),
    /// Answer once every row queued before this one is written.
    Flush(Sender<()>),
}

/// Sends records to the writer thread; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: Sender<Message>,
    store_code: bool,
}

impl AuditLog {
    /// Starts the writer thread on the database at `db`.
    pub fn start(db: &Path, store_code: bool) -> Result<Self> {
        let conn = open_db(db)?;
        let (tx, rx) = channel();
        std::thread::Builder::new()
            .name("souffleur-audit".into())
            .spawn(move || write_loop(conn, rx))
            .map_err(|error| StoreError::File {
                what: "start the audit writer for",
                path: db.to_path_buf(),
                error,
            })?;
        Ok(Self { tx, store_code })
    }

    /// Whether prompts and completions are recorded.
    pub fn stores_code(&self) -> bool {
        self.store_code
    }

    /// Queues a record; code fields are dropped unless storing code is on.
    pub fn record(&self, mut record: AuditRecord) {
        if !self.store_code {
            record.prompt = None;
            record.completion = None;
        }
        // A stopped writer thread only happens at shutdown; nothing to do then.
        let _ = self.tx.send(Message::Record(Box::new(record)));
    }

    /// Waits (at most `timeout`) until every record queued so far is on disk; false
    /// when the writer did not answer in time.
    pub fn flush(&self, timeout: std::time::Duration) -> bool {
        let (tx, rx) = channel();
        self.tx.send(Message::Flush(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }
}

fn write_loop(conn: rusqlite::Connection, rx: Receiver<Message>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut waiting = Vec::new();
        for message in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match message {
                Message::Record(r) => batch.push(*r),
                Message::Flush(done) => waiting.push(done),
            }
        }
        if !batch.is_empty()
            && let Err(e) = write_batch(&conn, &batch)
        {
            tracing::error!(error = %e, "audit log write failed");
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

fn write_batch(conn: &rusqlite::Connection, batch: &[AuditRecord]) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO audit (at_ms, token, method, path, status, latency_ms, prompt_tokens,
                completion_tokens, model, prompt, completion, request_id, model_sha256, action)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?;
        for r in batch {
            stmt.execute(params![
                r.at_ms,
                r.token,
                r.method,
                r.path,
                r.status,
                r.latency_ms,
                r.prompt_tokens,
                r.completion_tokens,
                r.model,
                r.prompt,
                r.completion,
                r.request_id,
                r.model_sha256,
                r.action
            ])?;
        }
    }
    tx.commit()
}

/// Which audit rows to read back: each set field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// The token (user) name.
    pub user: Option<String>,
    /// The request path.
    pub path: Option<String>,
    /// The model id.
    pub model: Option<String>,
    /// Rows at or after this time (ms since the epoch).
    pub from_ms: Option<i64>,
    /// Rows before this time (ms since the epoch).
    pub to_ms: Option<i64>,
    /// Rows older than this id (paging back).
    pub before_id: Option<i64>,
}

/// An audit row as read back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRow {
    /// Row id.
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// Token (user) name.
    pub token: Option<String>,
    /// HTTP method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Response status.
    pub status: i64,
    /// Time to respond.
    pub latency_ms: i64,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// Model id.
    pub model: Option<String>,
    /// Model SHA-256.
    pub model_sha256: Option<String>,
    /// Request id.
    pub request_id: Option<String>,
    /// An admin's action.
    pub action: Option<String>,
    /// The prompt, when code is stored.
    pub prompt: Option<String>,
    /// The completion, when code is stored.
    pub completion: Option<String>,
}

/// Reads audit rows matching `filter`, newest first, at most `limit`.
pub fn read_rows(db: &Path, filter: &AuditFilter, limit: usize) -> Result<Vec<AuditRow>> {
    let conn = open_db(db)?;
    let mut sql = String::from(
        "SELECT id, at_ms, token, method, path, status, latency_ms, prompt_tokens,
                completion_tokens, model, model_sha256, request_id, action, prompt, completion
         FROM audit WHERE 1 = 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    for (column, value) in [
        ("token", &filter.user),
        ("path", &filter.path),
        ("model", &filter.model),
    ] {
        if let Some(v) = value {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {column} = ?{}", args.len()));
        }
    }
    for (test, value) in [
        ("at_ms >=", filter.from_ms),
        ("at_ms <", filter.to_ms),
        ("id <", filter.before_id),
    ] {
        if let Some(v) = value {
            args.push(v.into());
            sql.push_str(&format!(" AND {test} ?{}", args.len()));
        }
    }
    args.push((limit as i64).into());
    sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", args.len()));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
        Ok(AuditRow {
            id: r.get(0)?,
            at_ms: r.get(1)?,
            token: r.get(2)?,
            method: r.get(3)?,
            path: r.get(4)?,
            status: r.get(5)?,
            latency_ms: r.get(6)?,
            prompt_tokens: r.get(7)?,
            completion_tokens: r.get(8)?,
            model: r.get(9)?,
            model_sha256: r.get(10)?,
            request_id: r.get(11)?,
            action: r.get(12)?,
            prompt: r.get(13)?,
            completion: r.get(14)?,
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// The distinct values of the audit log's `column` (`token`, `path` or `model`), for
/// the console's filters.
pub fn distinct(db: &Path, column: &str) -> Result<Vec<String>> {
    if !matches!(column, "token" | "path" | "model") {
        return Err(StoreError::Invalid(format!("no filter on `{column}`")));
    }
    let conn = open_db(db)?;
    let mut stmt = conn.prepare(&format!(
        "SELECT DISTINCT {column} FROM audit WHERE {column} IS NOT NULL ORDER BY {column} LIMIT 500"
    ))?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

/// Deletes rows older than `before_ms`; gives how many.
pub fn prune(db: &Path, before_ms: i64) -> Result<usize> {
    let conn = open_db(db)?;
    Ok(conn.execute("DELETE FROM audit WHERE at_ms < ?1", [before_ms])?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(db: &Path) -> Vec<(String, Option<String>)> {
        let conn = open_db(db).expect("db");
        let mut stmt = conn
            .prepare("SELECT path, prompt FROM audit ORDER BY id")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("rows")
    }

    fn wait_for(db: &Path, n: usize) -> Vec<(String, Option<String>)> {
        for _ in 0..200 {
            let r = rows(db);
            if r.len() >= n {
                return r;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        rows(db)
    }

    #[test]
    fn code_is_not_stored_unless_configured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a.db");
        let log = AuditLog::start(&db, false).expect("start");
        log.record(AuditRecord {
            path: "/v1/completions".into(),
            prompt: Some("secret code".into()),
            ..AuditRecord::default()
        });
        let r = wait_for(&db, 1);
        assert_eq!(r, vec![("/v1/completions".to_string(), None)]);

        let log = AuditLog::start(&db, true).expect("start");
        log.record(AuditRecord {
            path: "/v1/chat/completions".into(),
            prompt: Some("kept".into()),
            ..AuditRecord::default()
        });
        let r = wait_for(&db, 2);
        assert_eq!(r[1].1.as_deref(), Some("kept"));
    }

    #[test]
    fn rows_are_read_back_by_filter_and_pruned_by_age() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("a.db");
        let log = AuditLog::start(&db, false).expect("start");
        for (i, (token, path)) in [
            ("alice", "/v1/completions"),
            ("bob", "/v1/completions"),
            ("alice", "/v1/chat/completions"),
            ("root", "/admin/tokens"),
        ]
        .into_iter()
        .enumerate()
        {
            log.record(AuditRecord {
                at_ms: 1000 * (i as i64 + 1),
                token: Some(token.into()),
                path: path.into(),
                action: (token == "root").then(|| "create token x".into()),
                ..AuditRecord::default()
            });
        }
        assert!(log.flush(std::time::Duration::from_secs(5)));
        let all = read_rows(&db, &AuditFilter::default(), 10).expect("read");
        assert_eq!(all.len(), 4);
        assert!(all[0].id > all[3].id, "newest first");
        assert_eq!(all[0].action.as_deref(), Some("create token x"));
        let alice = AuditFilter {
            user: Some("alice".into()),
            ..AuditFilter::default()
        };
        assert_eq!(read_rows(&db, &alice, 10).expect("read").len(), 2);
        let chat_of_alice = AuditFilter {
            path: Some("/v1/chat/completions".into()),
            ..alice.clone()
        };
        assert_eq!(read_rows(&db, &chat_of_alice, 10).expect("read").len(), 1);
        let window = AuditFilter {
            from_ms: Some(2000),
            to_ms: Some(4000),
            ..AuditFilter::default()
        };
        let rows = read_rows(&db, &window, 10).expect("read");
        assert_eq!(
            rows.iter().map(|r| r.at_ms).collect::<Vec<_>>(),
            vec![3000, 2000]
        );
        let injected = AuditFilter {
            user: Some("alice' OR '1'='1".into()),
            ..AuditFilter::default()
        };
        assert!(read_rows(&db, &injected, 10).expect("read").is_empty());
        assert_eq!(
            distinct(&db, "token").expect("distinct"),
            vec!["alice", "bob", "root"]
        );
        assert!(distinct(&db, "prompt").is_err());
        assert_eq!(prune(&db, 2500).expect("prune"), 2);
        assert_eq!(
            read_rows(&db, &AuditFilter::default(), 10)
                .expect("read")
                .len(),
            2
        );
    }
}

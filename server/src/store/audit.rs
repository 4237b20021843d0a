//! The audit log: who called what, when, with what outcome and how many tokens.
//! Code (prompts and completions) is stored only when the config says so.
//! Rows are written by a background thread, so requests never wait on the disk.

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};

use rusqlite::params;

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
                completion_tokens, model, prompt, completion, request_id, model_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
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
                r.model_sha256
            ])?;
        }
    }
    tx.commit()
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
}

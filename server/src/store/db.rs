//! The one owner of `souffleur.db`'s schema: opening the file (owner-only permissions,
//! WAL, busy timeout) and the numbered migrations that bring any earlier database up to
//! date. Tokens ([`super::tokens`]) and the audit log ([`super::audit`]) only read and
//! write rows.

use std::path::{Path, PathBuf};

use rusqlite::Connection;

/// A failure of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file or its folder could not be created, opened or restricted.
    #[error("cannot {what} {}: {error}", path.display())]
    File {
        /// What was being done (`create`, `open`, `restrict the permissions of`).
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// SQLite refused a statement.
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database was written by a newer release than this one.
    #[error(
        "the database is at schema version {found}, newer than this release's {known}: upgrade souffleur"
    )]
    TooNew {
        /// `PRAGMA user_version` of the file.
        found: i64,
        /// The newest version this release knows.
        known: i64,
    },
    /// A value given for a row is not acceptable (a name, a role).
    #[error("{0}")]
    Invalid(String),
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The schema's migrations, in order: migration `i` (0-based) brings the database from
/// `user_version` `i` to `i + 1`. Never edit one that has shipped; add a new one.
/// Every statement is idempotent, so databases made before versions were recorded
/// (their `user_version` is 0 but the tables exist) migrate cleanly.
const MIGRATIONS: &[&str] = &[
    // 1: tokens and the audit log.
    "CREATE TABLE IF NOT EXISTS tokens (
         id INTEGER PRIMARY KEY,
         name TEXT NOT NULL UNIQUE,
         hash TEXT NOT NULL UNIQUE,
         role TEXT NOT NULL,
         repos TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         revoked_at INTEGER
     );
     CREATE TABLE IF NOT EXISTS audit (
         id INTEGER PRIMARY KEY,
         at_ms INTEGER NOT NULL,
         token TEXT,
         method TEXT NOT NULL,
         path TEXT NOT NULL,
         status INTEGER NOT NULL,
         latency_ms INTEGER NOT NULL,
         prompt_tokens INTEGER,
         completion_tokens INTEGER,
         model TEXT,
         prompt TEXT,
         completion TEXT
     );",
    // 2: the request id (also sent as `x-request-id`) in every audit row.
    "ALTER TABLE audit ADD COLUMN request_id TEXT;",
    // 3: the SHA-256 of the model that answered (several models may share a name over
    // time: a reload can bring a new version under the old name).
    "ALTER TABLE audit ADD COLUMN model_sha256 TEXT;",
    // 4: token expiry and last use (seconds since the epoch), and what an admin did
    // (console actions: who is the row's token, what is this text).
    "ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
     ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
     ALTER TABLE audit ADD COLUMN action TEXT;",
    // 5: per-minute usage aggregates for the console (no prompts, no code).
    "CREATE TABLE IF NOT EXISTS usage_minutes (
         minute INTEGER NOT NULL,
         kind TEXT NOT NULL,
         language TEXT NOT NULL,
         user TEXT NOT NULL,
         mode TEXT NOT NULL,
         requests INTEGER NOT NULL DEFAULT 0,
         errors INTEGER NOT NULL DEFAULT 0,
         shown INTEGER NOT NULL DEFAULT 0,
         viewed INTEGER NOT NULL DEFAULT 0,
         accepted INTEGER NOT NULL DEFAULT 0,
         dismissed INTEGER NOT NULL DEFAULT 0,
         tokens INTEGER NOT NULL DEFAULT 0,
         latency TEXT NOT NULL DEFAULT '',
         PRIMARY KEY (minute, kind, language, user, mode)
     );",
    // 6: the directory user a personal token belongs to (revoked with them).
    "ALTER TABLE tokens ADD COLUMN owner TEXT;",
];

/// The schema version this release writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Opens (and creates) the database at `path` and migrates it to [`SCHEMA_VERSION`].
pub fn open_db(path: &Path) -> Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|error| StoreError::File {
            what: "create",
            path: dir.to_path_buf(),
            error,
        })?;
    }
    let conn = Connection::open(path)?;
    // Tokens' hashes and the audit log are for the owner only (also for databases
    // made by earlier releases, which were created world-readable).
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
            |error| StoreError::File {
                what: "restrict the permissions of",
                path: path.to_path_buf(),
                error,
            },
        )?;
    }
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")?;
    migrate(&conn)?;
    Ok(conn)
}

/// Applies the migrations the database has not seen, each in its own transaction
/// (several processes may open the database at once: the CLI and a running server).
fn migrate(conn: &Connection) -> Result<()> {
    loop {
        // An immediate transaction takes the write lock before reading the version, so
        // two processes cannot both apply the same migration.
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| {
            let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    found: version,
                    known: SCHEMA_VERSION,
                });
            }
            let Some(sql) = MIGRATIONS.get(version as usize) else {
                return Ok(false);
            };
            apply(conn, version, sql)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", version + 1))?;
            Ok(true)
        })();
        match step {
            Ok(more) => {
                conn.execute_batch("COMMIT")?;
                if !more {
                    return Ok(());
                }
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
    }
}

/// Runs one migration; a column added by an earlier run of the same migration (a
/// database from a development build) is not an error.
fn apply(conn: &Connection, version: i64, sql: &str) -> Result<()> {
    match conn.execute_batch(sql) {
        Err(rusqlite::Error::SqliteFailure(_, Some(message)))
            if message.contains("duplicate column name") =>
        {
            tracing::debug!(version, "migration already applied");
            Ok(())
        }
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_database_is_at_the_newest_version_and_opens_again() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("souffleur.db");
        let conn = open_db(&path).expect("open");
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .expect("version");
        assert_eq!(v, SCHEMA_VERSION);
        drop(conn);
        open_db(&path).expect("opens again");
    }

    #[test]
    fn a_database_of_the_first_release_is_migrated_keeping_its_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("souffleur.db");
        {
            // What releases before numbered migrations created: version 0, tables there.
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(MIGRATIONS[0]).expect("old schema");
            conn.execute(
                "INSERT INTO tokens (name, hash, role, repos, created_at) VALUES ('ci', 'h', 'user', '*', 1)",
                [],
            )
            .expect("row");
        }
        let conn = open_db(&path).expect("migrates");
        let name: String = conn
            .query_row("SELECT name FROM tokens", [], |r| r.get(0))
            .expect("row kept");
        assert_eq!(name, "ci");
        conn.execute(
            "INSERT INTO audit (at_ms, method, path, status, latency_ms, request_id) VALUES (1, 'GET', '/', 200, 1, 'r1')",
            [],
        )
        .expect("the new column exists");
    }

    #[test]
    fn a_database_from_a_newer_release_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("souffleur.db");
        {
            let conn = Connection::open(&path).expect("open");
            conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
                .expect("version");
        }
        let err = open_db(&path).expect_err("refused");
        assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    }
}

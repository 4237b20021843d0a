//! API tokens in SQLite (`<home>/souffleur.db`): stored as SHA-256 hashes, with a
//! role and the repositories whose code the token may receive as context.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::db::{Result, StoreError, open_db};

/// Every token starts with this, so leaked tokens are easy to find in logs and code.
pub const TOKEN_PREFIX: &str = "sfl_";

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Completions, chat, reviews, events.
    User,
    /// Also metrics and the audit log.
    Admin,
}

impl Role {
    /// Parses `user` or `admin`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "user" => Ok(Role::User),
            "admin" => Ok(Role::Admin),
            other => Err(StoreError::Invalid(format!(
                "unknown role `{other}` (expected `user` or `admin`)"
            ))),
        }
    }

    /// The role's name (`user`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// Repositories a token may receive snippets from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RepoScope {
    /// Every indexed repository.
    All,
    /// Only these repositories (by index name).
    Only(Vec<String>),
}

impl RepoScope {
    /// Parses `*` or a comma-separated list of repository names.
    pub fn parse(s: &str) -> Self {
        if s.trim() == "*" {
            return RepoScope::All;
        }
        RepoScope::Only(
            s.split(',')
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(String::from)
                .collect(),
        )
    }

    /// Whether `repo` is inside the scope.
    pub fn allows(&self, repo: &str) -> bool {
        match self {
            RepoScope::All => true,
            RepoScope::Only(list) => list.iter().any(|r| r == repo),
        }
    }

    /// The scope as written (`*` or `a,b,c`).
    pub fn to_db(&self) -> String {
        match self {
            RepoScope::All => "*".into(),
            RepoScope::Only(list) => list.join(","),
        }
    }
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, Serialize)]
pub struct TokenRecord {
    /// Row id.
    pub id: i64,
    /// Unique name (a person or a CI pipeline).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// Which repositories' code it may receive.
    pub repos: RepoScope,
    /// Creation time, seconds since the Unix epoch.
    pub created_at: i64,
    /// Revocation time, if revoked.
    pub revoked_at: Option<i64>,
    /// When it stops working, if it expires (seconds since the epoch).
    pub expires_at: Option<i64>,
    /// When it was last used (recorded at most about once a minute).
    pub last_used_at: Option<i64>,
    /// The directory user whose personal token it is.
    pub owner: Option<String>,
}

impl TokenRecord {
    /// Whether the token has expired at `now` (seconds since the epoch).
    pub fn expired_at(&self, now: i64) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

/// The token table.
pub struct TokenStore {
    conn: Connection,
}

/// SHA-256 of a token's secret, as stored.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl TokenStore {
    /// Opens the token table in the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Ok(Self {
            conn: open_db(path)?,
        })
    }

    /// Creates a token and returns its secret (shown once, stored only as a hash).
    pub fn create(&self, name: &str, role: Role, repos: &RepoScope) -> Result<String> {
        self.create_expiring(name, role, repos, None)
    }

    /// Creates a token that stops working at `expires_at` (seconds since the epoch),
    /// or never; returns its secret.
    pub fn create_expiring(
        &self,
        name: &str,
        role: Role,
        repos: &RepoScope,
        expires_at: Option<i64>,
    ) -> Result<String> {
        self.create_owned(name, role, repos, expires_at, None)
    }

    /// Creates a token, the personal token of directory user `owner` if given (revoked
    /// with [`TokenStore::revoke_owned`]); returns its secret.
    pub fn create_owned(
        &self,
        name: &str,
        role: Role,
        repos: &RepoScope,
        expires_at: Option<i64>,
        owner: Option<&str>,
    ) -> Result<String> {
        if name.trim().is_empty() {
            return Err(StoreError::Invalid("a token needs a non-empty name".into()));
        }
        if name.chars().any(|c| c.is_control()) || name.chars().count() > 64 {
            return Err(StoreError::Invalid(
                "a token name has at most 64 characters and no control characters".into(),
            ));
        }
        if expires_at.is_some_and(|e| e <= now()) {
            return Err(StoreError::Invalid(
                "the expiry must be in the future".into(),
            ));
        }
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes)
            .map_err(|e| StoreError::Invalid(format!("no randomness: {e}")))?;
        let secret = format!("{TOKEN_PREFIX}{}", hex::encode(bytes));
        let inserted = self.conn.execute(
            "INSERT INTO tokens (name, hash, role, repos, created_at, expires_at, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                name,
                hash_token(&secret),
                role.as_str(),
                repos.to_db(),
                now(),
                expires_at,
                owner
            ],
        );
        match inserted {
            Ok(_) => Ok(secret),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(StoreError::Invalid(format!(
                    "a token named `{name}` already exists"
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Every token, newest last.
    pub fn list(&self) -> Result<Vec<TokenRecord>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY id"))?;
        let rows = stmt.query_map([], |r| RawRecord::read(r, 0))?;
        rows.map(|row| row?.into_record()).collect()
    }

    /// Revokes the token called `name`; errors if there is none.
    pub fn revoke(&self, name: &str) -> Result<()> {
        let n = self.conn.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
            params![now(), name],
        )?;
        if n == 0 {
            let exists: Option<i64> = self
                .conn
                .query_row("SELECT id FROM tokens WHERE name = ?1", [name], |r| {
                    r.get(0)
                })
                .optional()?;
            return Err(StoreError::Invalid(match exists {
                Some(_) => format!("token `{name}` is already revoked"),
                None => format!("no token named `{name}`"),
            }));
        }
        Ok(())
    }

    /// Revokes every active token of directory user `owner`; gives their names.
    pub fn revoke_owned(&self, owner: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM tokens WHERE owner = ?1 AND revoked_at IS NULL")?;
        let names = stmt
            .query_map([owner], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        self.conn.execute(
            "UPDATE tokens SET revoked_at = ?1 WHERE owner = ?2 AND revoked_at IS NULL",
            params![now(), owner],
        )?;
        Ok(names)
    }

    /// The directory users with active tokens.
    pub fn owners(&self) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare(
            "SELECT DISTINCT owner FROM tokens WHERE owner IS NOT NULL AND revoked_at IS NULL ORDER BY owner",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records when tokens were last used (`(name, seconds since the epoch)`).
    pub fn touch(&self, used: &[(String, i64)]) -> Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        for (name, at) in used {
            tx.execute(
                "UPDATE tokens SET last_used_at = ?1 WHERE name = ?2 AND (last_used_at IS NULL OR last_used_at < ?1)",
                params![at, name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The active (not revoked, not expired) token with this hash, if any.
    pub fn find_active(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM tokens WHERE hash = ?1 AND revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?2)"
                ),
                params![hash, now()],
                |r| RawRecord::read(r, 0),
            )
            .optional()?
            .map(RawRecord::into_record)
            .transpose()
    }

    /// Active tokens with their hashes, for the server's in-memory table.
    pub fn active(&self) -> Result<Vec<(String, TokenRecord)>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT hash, {COLUMNS} FROM tokens WHERE revoked_at IS NULL AND (expires_at IS NULL OR expires_at > ?1)"
        ))?;
        let rows = stmt.query_map([now()], |r| {
            Ok((r.get::<_, String>(0)?, RawRecord::read(r, 1)?))
        })?;
        rows.map(|row| {
            let (hash, raw) = row?;
            Ok((hash, raw.into_record()?))
        })
        .collect()
    }
}

/// The columns [`RawRecord::read`] reads, in its order.
const COLUMNS: &str =
    "id, name, role, repos, created_at, revoked_at, expires_at, last_used_at, owner";

/// A token row as stored, before its role and scope are parsed.
struct RawRecord {
    id: i64,
    name: String,
    role: String,
    repos: String,
    created_at: i64,
    revoked_at: Option<i64>,
    expires_at: Option<i64>,
    last_used_at: Option<i64>,
    owner: Option<String>,
}

impl RawRecord {
    /// Reads [`COLUMNS`] starting at column `first`.
    fn read(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            id: r.get(first)?,
            name: r.get(first + 1)?,
            role: r.get(first + 2)?,
            repos: r.get(first + 3)?,
            created_at: r.get(first + 4)?,
            revoked_at: r.get(first + 5)?,
            expires_at: r.get(first + 6)?,
            last_used_at: r.get(first + 7)?,
            owner: r.get(first + 8)?,
        })
    }

    fn into_record(self) -> Result<TokenRecord> {
        Ok(TokenRecord {
            id: self.id,
            name: self.name,
            role: Role::parse(&self.role)?,
            repos: RepoScope::parse(&self.repos),
            created_at: self.created_at,
            revoked_at: self.revoked_at,
            expires_at: self.expires_at,
            last_used_at: self.last_used_at,
            owner: self.owner,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("s.db");
        let store = TokenStore::open(&db).expect("open");
        let secret = store
            .create("ci", Role::User, &RepoScope::parse("app, lib"))
            .expect("create");
        assert!(secret.starts_with(TOKEN_PREFIX));
        let raw = std::fs::read(&db).expect("db bytes");
        let wal = std::fs::read(dir.path().join("s.db-wal")).unwrap_or_default();
        let needle = secret.as_bytes();
        for bytes in [&raw, &wal] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret stored in clear"
            );
        }
        let active = store.active().expect("active");
        assert_eq!(active.len(), 1);
        assert_eq!(active[0].0, hash_token(&secret));
        assert_eq!(
            active[0].1.repos,
            RepoScope::Only(vec!["app".into(), "lib".into()])
        );
        assert!(store.create("ci", Role::User, &RepoScope::All).is_err());
        store.revoke("ci").expect("revoke");
        assert!(store.active().expect("active").is_empty());
        assert!(store.revoke("ci").is_err());
        assert!(store.revoke("nobody").is_err());
        assert_eq!(store.list().expect("list").len(), 1);

        // Expiring tokens work until their time; use is recorded.
        let soon = store
            .create_expiring("temp", Role::User, &RepoScope::All, Some(now() + 3600))
            .expect("create");
        let found = store
            .find_active(&hash_token(&soon))
            .expect("find")
            .expect("active");
        assert_eq!(found.expires_at, Some(now() + 3600));
        assert!(!found.expired_at(now()) && found.expired_at(now() + 3600));
        assert!(
            store
                .create_expiring("past", Role::User, &RepoScope::All, Some(now() - 1))
                .is_err()
        );
        store
            .touch(&[("temp".into(), 1_800_000_000)])
            .expect("touch");
        store
            .touch(&[("temp".into(), 1_700_000_000)])
            .expect("touch");
        let temp = store.list().expect("list").pop().expect("temp");
        assert_eq!(temp.last_used_at, Some(1_800_000_000), "never goes back");
        store
            .conn
            .execute(
                "UPDATE tokens SET expires_at = ?1 WHERE name = 'temp'",
                [now() - 5],
            )
            .expect("expire");
        assert!(
            store
                .find_active(&hash_token(&soon))
                .expect("find")
                .is_none()
        );
        assert!(store.active().expect("active").is_empty());
    }
}

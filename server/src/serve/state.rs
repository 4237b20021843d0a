//! What every request handler shares: the engine, the index, tokens, limits, metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use engine::{CancelToken, Engine};
use indexer::{CodeIndex, RepoRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::config::Config;
use super::error::ApiError;
use super::keystrokes::RecentCompletions;
use super::metrics::Metrics;
use crate::audit::AuditLog;
use crate::tokens::{RepoScope, Role, TokenRecord, TokenStore, hash_token};

/// The model being served.
#[derive(Debug, Clone)]
pub struct ServedModel {
    /// The id clients pass as `model`.
    pub id: String,
    /// SHA-256 of the model's files.
    pub sha256: String,
    /// Seconds since the Unix epoch when the server loaded it.
    pub loaded_at: u64,
}

/// Shared state of the server.
pub struct AppState {
    /// The inference engine.
    pub engine: Engine,
    /// The model being served.
    pub model: ServedModel,
    /// The code index, when there is one.
    pub index: Option<Arc<CodeIndex>>,
    /// The index's repositories, refreshed in the background.
    pub repos: RwLock<Vec<KnownRepo>>,
    /// Active tokens by hash, refreshed in the background.
    pub tokens: RwLock<HashMap<String, TokenRecord>>,
    /// Serving without tokens.
    pub local: bool,
    /// The configuration.
    pub config: Config,
    /// The audit log.
    pub audit: AuditLog,
    /// Metrics.
    pub metrics: Metrics,
    /// Generations in flight per (caller, file), so a newer keystroke cancels the older one.
    pub inflight: Mutex<HashMap<(String, String), (u64, CancelToken)>>,
    /// The latest raw completion per (caller, file): the next keystroke's hint.
    pub recent: RecentCompletions,
    /// Concurrency limit per caller.
    pub per_caller: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Source of response ids.
    pub next_id: AtomicU64,
    /// When the server started.
    pub started: Instant,
    /// Speculative decoding for every request.
    pub speculation: engine::Speculation,
    /// KiB of prompt text being tokenized, over all requests (`limits.max_tokenizing_bytes`).
    pub tokenizing: Arc<Semaphore>,
    /// The token table on disk, asked when a token is not (yet) in memory.
    pub token_db: Mutex<TokenStore>,
    /// Bounds how often unknown tokens reach the database.
    pub token_misses: Mutex<MissBudget>,
}

/// Database lookups of unknown tokens: at most [`MissBudget::PER_SECOND`] a second,
/// so random tokens cannot hammer the database.
#[derive(Debug)]
pub struct MissBudget {
    window: Instant,
    used: u32,
}

impl Default for MissBudget {
    fn default() -> Self {
        Self {
            window: Instant::now(),
            used: 0,
        }
    }
}

impl MissBudget {
    /// Lookups allowed per second.
    pub const PER_SECOND: u32 = 20;

    /// Takes one lookup if this second has one left.
    fn take(&mut self) -> bool {
        if self.window.elapsed().as_secs_f64() >= 1.0 {
            self.window = Instant::now();
            self.used = 0;
        }
        if self.used < Self::PER_SECOND {
            self.used += 1;
            true
        } else {
            false
        }
    }
}

/// An indexed repository as the completion path needs it (no disk access per request).
#[derive(Debug, Clone)]
pub struct KnownRepo {
    /// Name in the index.
    pub name: String,
    /// Working directory.
    pub path: std::path::PathBuf,
    /// `origin` URL, normalized.
    pub url: Option<String>,
}

impl KnownRepo {
    /// Reads what the completion path needs about `record` (opens the repository).
    pub fn from_record(record: &RepoRecord) -> Self {
        Self {
            name: record.name.clone(),
            path: record.path.clone(),
            url: repo_url(record).map(|u| normalize_git_url(&u)),
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Token name (`local` in local mode).
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Repositories it may see.
    pub repos: RepoScope,
}

impl AppState {
    /// Identifies the caller from the `Authorization: Bearer` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if self.local {
            return Ok(Caller {
                name: "local".into(),
                role: Role::Admin,
                repos: RepoScope::All,
            });
        }
        let value = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "missing `Authorization: Bearer <token>` header (create one with `souffleur token create`)",
                )
            })?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let hash = hash_token(secret);
        let known = self
            .tokens
            .read()
            .map_err(|_| ApiError::internal("token table unavailable"))?
            .get(&hash)
            .cloned();
        let record = match known {
            Some(r) => r,
            None => self.token_from_db(&hash).ok_or_else(|| {
                ApiError::new(StatusCode::UNAUTHORIZED, "invalid or revoked token")
            })?,
        };
        Ok(Caller {
            name: record.name,
            role: record.role,
            repos: record.repos,
        })
    }

    /// A token created since the last refresh of the in-memory table (`souffleur token
    /// create` in a CI script, used at once): looked up in the database, within the
    /// per-second budget, and remembered until the next refresh.
    fn token_from_db(&self, hash: &str) -> Option<TokenRecord> {
        if !self.token_misses.lock().ok()?.take() {
            return None;
        }
        let record = self.token_db.lock().ok()?.find_active(hash).ok()??;
        if let Ok(mut table) = self.tokens.write() {
            table.insert(hash.to_string(), record.clone());
        }
        Some(record)
    }

    /// Waits for room to tokenize `bytes` of text (the server-wide budget keeps many
    /// large prompts from taking all memory and CPU at once).
    pub async fn tokenizing_slot(&self, bytes: usize) -> Result<OwnedSemaphorePermit, ApiError> {
        let total = (self.config.limits.max_tokenizing_bytes / 1024).max(1);
        let kib = (bytes / 1024).clamp(1, total);
        self.tokenizing
            .clone()
            .acquire_many_owned(kib as u32)
            .await
            .map_err(|_| ApiError::internal("the tokenizer budget is closed"))
    }

    /// Refuses a caller without the admin role.
    pub fn require_admin(&self, caller: &Caller) -> Result<(), ApiError> {
        if caller.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("token `{}` is not an admin token", caller.name),
            ));
        }
        Ok(())
    }

    /// Takes one of the caller's concurrent-request slots, or fails with 429.
    pub fn admit(&self, caller: &Caller) -> Result<OwnedSemaphorePermit, ApiError> {
        let limit = self.config.limits.max_concurrent_per_token;
        let sem = {
            let mut map = self
                .per_caller
                .lock()
                .map_err(|_| ApiError::internal("limiter unavailable"))?;
            map.entry(caller.name.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(limit)))
                .clone()
        };
        sem.try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "token `{}` already has {limit} requests in flight",
                    caller.name
                ),
            )
        })
    }

    /// Checks the `model` field of a request; `None` means the served model.
    pub fn check_model(&self, requested: Option<&str>) -> Result<(), ApiError> {
        match requested {
            None => Ok(()),
            Some(m) if m.is_empty() || m == self.model.id || m == "default" => Ok(()),
            Some(m) if m.len() >= 12 && self.model.sha256.starts_with(m) => Ok(()),
            Some(m) => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "model `{m}` not found; this server serves `{}`",
                    self.model.id
                ),
            )),
        }
    }

    /// A fresh response id with `prefix`.
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}-{n}", self.model.loaded_at)
    }

    /// The repositories a caller's completion may draw snippets from, narrowed to the
    /// request's repository when it can be found by git URL or file path.
    pub fn repos_for(&self, caller: &Caller, git_url: Option<&str>, filepath: &str) -> Vec<String> {
        let Ok(repos) = self.repos.read() else {
            return Vec::new();
        };
        let visible: Vec<&KnownRepo> = repos
            .iter()
            .filter(|r| caller.repos.allows(&r.name))
            .collect();
        let by_url = git_url.filter(|u| !u.is_empty()).and_then(|url| {
            let wanted = normalize_git_url(url);
            visible.iter().find(|r| {
                r.url.as_deref() == Some(wanted.as_str())
                    || wanted.ends_with(&format!("/{}", r.name))
            })
        });
        let by_path = || {
            visible
                .iter()
                .filter(|r| std::path::Path::new(filepath).starts_with(&r.path))
                .max_by_key(|r| r.path.as_os_str().len())
        };
        match by_url.or_else(by_path) {
            Some(r) => vec![r.name.clone()],
            None => visible.iter().map(|r| r.name.clone()).collect(),
        }
    }

    /// Registers a generation for (caller, file), cancelling the one before it.
    pub fn start_generation(&self, caller: &str, file: &str, cancel: &CancelToken) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.inflight.lock()
            && let Some((_, older)) =
                map.insert((caller.to_string(), file.to_string()), (id, cancel.clone()))
        {
            older.cancel();
        }
        id
    }

    /// Forgets a finished generation unless a newer one replaced it.
    pub fn end_generation(&self, caller: &str, file: &str, id: u64) {
        if let Ok(mut map) = self.inflight.lock() {
            let key = (caller.to_string(), file.to_string());
            if map.get(&key).is_some_and(|(current, _)| *current == id) {
                map.remove(&key);
            }
        }
    }
}

/// The origin URL of a repository, read from its git config once at refresh.
fn repo_url(record: &RepoRecord) -> Option<String> {
    let repo = git2::Repository::open(&record.path).ok()?;
    let remote = repo.find_remote("origin").ok()?;
    remote.url().ok().map(String::from)
}

/// `git@host:org/repo.git`, `https://host/org/repo` and `ssh://git@host/org/repo.git`
/// all become `host/org/repo`.
pub fn normalize_git_url(url: &str) -> String {
    let mut u = url
        .trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_string();
    for scheme in ["https://", "http://", "ssh://", "git://", "file://"] {
        if let Some(rest) = u.strip_prefix(scheme) {
            u = rest.to_string();
        }
    }
    if let Some(at) = u.find('@')
        && !u[..at].contains('/')
    {
        u = u[at + 1..].to_string();
    }
    if let Some(colon) = u.find(':')
        && !u[..colon].contains('/')
    {
        u.replace_range(colon..=colon, "/");
    }
    u.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::normalize_git_url;

    #[test]
    fn git_urls_normalize_to_host_and_path() {
        for u in [
            "git@github.com:Org/App.git",
            "https://github.com/org/app",
            "ssh://git@github.com/org/app.git",
            "https://github.com/org/app.git/",
        ] {
            assert_eq!(normalize_git_url(u), "github.com/org/app", "{u}");
        }
    }
}

//! What every request handler shares: the engine, the index, tokens, limits, metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use engine::CancelToken;
use indexer::{CodeIndex, RepoRecord};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::app::ServeError;
use crate::completion::keystrokes::RecentCompletions;
use crate::config::{Config, ModelRole};
use crate::error::ApiError;
use crate::http::observe::AuditSlot;
use crate::metrics::Metrics;
use crate::models::{self, ModelLease, ModelLoader, ModelSet, ReloadReport};
use crate::store::audit::AuditLog;
use crate::store::tokens::{RepoScope, Role, TokenRecord, TokenStore, hash_token};

/// Shared state of the server.
pub struct AppState {
    /// The models being served (replaced as a whole by a reload).
    pub models: RwLock<Arc<ModelSet>>,
    /// Loads models for reloads and after idle unloads (the binary's).
    pub loader: Arc<dyn ModelLoader>,
    /// Held while a reload runs (one at a time).
    pub reloading: Mutex<()>,
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
    /// Seconds since the Unix epoch when the server started (in response ids).
    pub started_at: u64,
    /// KiB of prompt text being tokenized, over all requests (`limits.max_tokenizing_bytes`).
    pub tokenizing: Arc<Semaphore>,
    /// The token table on disk, asked when a token is not (yet) in memory.
    pub token_db: Mutex<TokenStore>,
    /// Bounds how often unknown tokens reach the database.
    pub token_misses: Mutex<MissBudget>,
    /// The database file (tokens, audit log), for readers of their own.
    pub db_path: std::path::PathBuf,
    /// The web console's sessions and sign-in limits.
    pub console: crate::console::Sessions,
    /// Usage counts for the console's plots.
    pub usage: crate::usage::Usage,
    /// Repository syncs started from the console.
    pub console_jobs: crate::console::repos_page::Jobs,
    /// The company directory (`[auth.ldap]`), when configured.
    pub directory: Option<Arc<crate::directory::Directory>>,
    /// Token uses not yet written to the database (name → seconds since the epoch).
    token_use: Mutex<HashMap<String, i64>>,
    /// When each token's use was last written.
    token_use_written: Mutex<HashMap<String, i64>>,
}

/// Seconds between writes of one token's last use.
const TOKEN_USE_EVERY_SECS: i64 = 60;

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

/// (Caller, file) pairs whose latest completion is kept as the next keystroke's hint
/// (a few hundred bytes each).
const RECENT_COMPLETIONS: usize = 4096;

impl AppState {
    /// The state serving `models` with `config`: opens the token table and starts the
    /// audit writer on `db`.
    pub fn new(
        config: Config,
        models: ModelSet,
        loader: Arc<dyn ModelLoader>,
        index: Option<Arc<CodeIndex>>,
        db: &std::path::Path,
    ) -> Result<Self, ServeError> {
        let token_db = TokenStore::open(db)?;
        let directory = match &config.auth.ldap {
            Some(section) => Some(Arc::new(
                crate::directory::Directory::new(section)
                    .map_err(|e| ServeError::Config(crate::config::ConfigError::Invalid(e)))?,
            )),
            None => None,
        };
        let audit = AuditLog::start(db, config.audit.store_code)?;
        Ok(Self {
            models: RwLock::new(Arc::new(models)),
            loader,
            reloading: Mutex::new(()),
            index,
            repos: RwLock::new(Vec::new()),
            tokens: RwLock::new(HashMap::new()),
            local: config.server.local,
            audit,
            metrics: Metrics::default(),
            inflight: Mutex::new(HashMap::new()),
            recent: RecentCompletions::new(RECENT_COMPLETIONS),
            per_caller: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            started: Instant::now(),
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            tokenizing: Arc::new(Semaphore::new(
                (config.limits.max_tokenizing_bytes / 1024).max(1),
            )),
            token_db: Mutex::new(token_db),
            token_misses: Mutex::new(MissBudget::default()),
            db_path: db.to_path_buf(),
            console: crate::console::Sessions::default(),
            usage: crate::usage::Usage::default(),
            console_jobs: crate::console::repos_page::Jobs::default(),
            directory,
            token_use: Mutex::new(HashMap::new()),
            token_use_written: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// Reloads tokens and the index's repositories (the CLI may change both while
    /// the server runs), and writes when tokens were last used.
    pub fn refresh(&self, store: &TokenStore) {
        let used: Vec<(String, i64)> = self
            .token_use
            .lock()
            .map(|mut m| m.drain().collect())
            .unwrap_or_default();
        if !used.is_empty() {
            match store.touch(&used) {
                Ok(()) => {
                    if let Ok(mut written) = self.token_use_written.lock() {
                        written.extend(used);
                    }
                }
                Err(e) => tracing::error!(error = %e, "cannot record token use"),
            }
        }
        match store.active() {
            Ok(active) => {
                if let Ok(mut t) = self.tokens.write() {
                    *t = active.into_iter().collect();
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read tokens"),
        }
        self.reload_repos();
    }

    /// Reads the index's repositories again (after the CLI or the console changed them).
    pub fn reload_repos(&self) {
        if let Some(index) = &self.index {
            let _ = index.reload();
            if let Ok(status) = index.status() {
                let known: Vec<KnownRepo> = status
                    .repos
                    .iter()
                    .map(|r| KnownRepo::from_record(&r.record))
                    .collect();
                if let Ok(mut r) = self.repos.write() {
                    *r = known;
                }
            }
        }
    }

    /// Identifies the caller from the `Authorization: Bearer` header.
    pub async fn authenticate(self: &Arc<Self>, headers: &HeaderMap) -> Result<Caller, ApiError> {
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
            // SQLite may wait on a writer (the CLI): never on the async runtime.
            None => {
                let state = self.clone();
                tokio::task::spawn_blocking(move || state.token_from_db(&hash))
                    .await?
                    .ok_or_else(|| {
                        ApiError::new(StatusCode::UNAUTHORIZED, "invalid or revoked token")
                    })?
            }
        };
        let now = crate::store::tokens::now();
        if record.expired_at(now) {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!("token `{}` has expired", record.name),
            ));
        }
        self.note_use(&record.name, now);
        Ok(Caller {
            name: record.name,
            role: record.role,
            repos: record.repos,
        })
    }

    /// Whether the token with this hash is active (in the table refreshed every second).
    pub fn token_is_active(&self, hash: &str) -> bool {
        let now = crate::store::tokens::now();
        self.tokens
            .read()
            .ok()
            .and_then(|t| t.get(hash).map(|r| !r.expired_at(now)))
            .unwrap_or(false)
    }

    /// Remembers that token `name` was used at `now`, to be written by the next
    /// refresh (at most once a minute per token).
    pub fn note_use(&self, name: &str, now: i64) {
        let recent = self
            .token_use_written
            .lock()
            .ok()
            .and_then(|w| w.get(name).copied())
            .is_some_and(|at| now - at < TOKEN_USE_EVERY_SECS);
        if !recent && let Ok(mut pending) = self.token_use.lock() {
            pending.insert(name.to_string(), now);
        }
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

    /// The models being served now.
    pub fn model_set(&self) -> Arc<ModelSet> {
        match self.models.read() {
            Ok(set) => set.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A lease on the model a request for `role` gets: the one named by its `model`
    /// field, else the role's default (loaded again first if it was unloaded while
    /// idle). The model's name and checksum go into the request's audit row.
    pub async fn lease(
        &self,
        role: ModelRole,
        requested: Option<&str>,
        audit: &AuditSlot,
    ) -> Result<ModelLease, ApiError> {
        let set = self.model_set();
        let lease = models::lease(&set, &self.loader, role, requested).await?;
        audit.update(|a| {
            a.model = Some(lease.model.id.clone());
            // A model on a remote backend has no checksum here.
            a.model_sha256 = (!lease.model.sha256.is_empty()).then(|| lease.model.sha256.clone());
        });
        Ok(lease)
    }

    /// Reads the configuration again and serves its models: unchanged models are kept,
    /// new ones (or new versions) loaded beside the old, which finish the requests they
    /// have and are dropped after. Blocking (loads models): call it off the runtime.
    pub fn reload(&self) -> Result<ReloadReport, crate::models::LoadError> {
        let _one = self
            .reloading
            .try_lock()
            .map_err(|_| crate::models::LoadError("a reload is already running".into()))?;
        let config = Arc::new(self.loader.reread_config()?);
        let current = self.model_set();
        let (set, mut report) = models::build_set(&*self.loader, &config, Some(&current))?;
        report.restart_needed = self.config.sections_differing(&config);
        if let Ok(mut models) = self.models.write() {
            *models = Arc::new(set);
        }
        tracing::info!(loaded = ?report.loaded, kept = ?report.kept, removed = ?report.removed,
            restart_needed = ?report.restart_needed, "configuration reloaded");
        Ok(report)
    }

    /// A fresh response id with `prefix`.
    pub fn new_id(&self, prefix: &str) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}-{n}", self.started_at)
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

//! The models the server serves, side by side: each with its own engine (thread,
//! scheduler, key/value and prefix-cache budget), found by name or by role, replaced by a
//! reload without dropping requests in flight, and — where configured — unloaded when
//! idle and loaded again by the next request.
//!
//! Loading is the binary's: it hands over a [`ModelLoader`], which this module calls at
//! reloads and after idle unloads. A request holds a [`ModelLease`] for as long as it
//! uses a model; a model replaced by a reload stays alive until its last lease ends.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use engine::{Engine, ModelInfo};
use serde_json::{Value, json};

use crate::config::{Config, ModelEntry, ModelRole};
use crate::error::ApiError;

/// Why a model could not be identified, loaded or fitted into memory (the message is
/// for the administrator: it names the model, the file and what to do).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(pub String);

/// A model's identity before it is loaded: the id clients use and its checksum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelIdentity {
    /// The id clients pass as `model` (the configured name, or the file's stem for `[model]`).
    pub id: String,
    /// SHA-256 of the model's files, checked against any pin.
    pub sha256: String,
}

/// A model loaded by a [`ModelLoader`], its engine running.
pub struct LoadedModel {
    /// Who it is.
    pub identity: ModelIdentity,
    /// The engine serving it (with its draft model, if configured).
    pub engine: Engine,
    /// Bytes its weights (and any draft model's) occupy in memory.
    pub weights_bytes: u64,
}

/// What the server needs from the binary to load models while it runs.
pub trait ModelLoader: Send + Sync + 'static {
    /// Reads the configuration again (its file with the command line's overrides), validated.
    fn reread_config(&self) -> Result<Config, LoadError>;
    /// Resolves `entry`'s file and its SHA-256 (checked against its pin) without loading it.
    fn identify(&self, entry: &ModelEntry) -> Result<ModelIdentity, LoadError>;
    /// Refuses `config` when its models do not fit the memory budget, naming the model
    /// that does not fit and the numbers.
    fn check_memory(&self, config: &Config) -> Result<(), LoadError>;
    /// Loads and verifies `entry` and starts its engine with `config`'s scheduler settings.
    fn load(&self, entry: &ModelEntry, config: &Config) -> Result<LoadedModel, LoadError>;
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One model the server serves (loaded, or unloaded while idle).
pub struct ServedModel {
    /// The id clients pass as `model`.
    pub id: String,
    /// SHA-256 of its files.
    pub sha256: String,
    /// How it was configured (path, draft, limits, idle unloading).
    pub entry: ModelEntry,
    /// The configuration it was loaded with (scheduler settings for a reload after idle).
    pub config: Arc<Config>,
    /// Speculative decoding its requests get unless they ask otherwise.
    pub speculation: engine::Speculation,
    /// Facts about the model (kept while it is unloaded); `None` for a model on a
    /// remote backend.
    pub info: Option<ModelInfo>,
    /// The remote backend serving it, instead of the built-in engine.
    pub upstream: Option<Arc<crate::upstream::Upstream>>,
    /// Whether a draft model is loaded beside it.
    pub has_draft: bool,
    /// Bytes its weights occupy when loaded.
    pub weights_bytes: u64,
    engine: Mutex<Option<Engine>>,
    loading: tokio::sync::Mutex<()>,
    loaded_at_ms: AtomicU64,
    last_used_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("id", &self.id)
            .field("sha256", &self.sha256)
            .finish()
    }
}

impl ServedModel {
    /// A served model around what `loaded` brought.
    pub fn new(
        loaded: LoadedModel,
        entry: ModelEntry,
        config: Arc<Config>,
    ) -> Result<Self, LoadError> {
        let speculation = engine::Speculation::parse(entry.speculation(&config.scheduler))
            .ok_or_else(|| {
                LoadError(format!(
                    "model `{}`: invalid speculation",
                    loaded.identity.id
                ))
            })?;
        let info = loaded.engine.model().info().clone();
        let now = now_ms();
        Ok(Self {
            id: loaded.identity.id,
            sha256: loaded.identity.sha256,
            has_draft: loaded.engine.draft_model().is_some(),
            weights_bytes: loaded.weights_bytes,
            entry,
            config,
            speculation,
            info: Some(info),
            upstream: None,
            engine: Mutex::new(Some(loaded.engine)),
            loading: tokio::sync::Mutex::new(()),
            loaded_at_ms: AtomicU64::new(now),
            last_used_ms: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// A model served by the remote backend of `entry` (its replicas are not contacted
    /// here: the health checks and the first request do that).
    pub fn remote(entry: ModelEntry, config: Arc<Config>) -> Result<Self, LoadError> {
        let kind = entry
            .remote_kind()
            .map_err(|e| LoadError(e.to_string()))?
            .ok_or_else(|| LoadError(format!("model `{}` is not remote", entry.name)))?;
        let section = entry
            .backend
            .clone()
            .ok_or_else(|| LoadError(format!("model `{}` has no `backend`", entry.name)))?;
        let upstream = crate::upstream::Upstream::new(&entry.name, kind, &section)
            .map_err(|e| LoadError(e.to_string()))?;
        let now = now_ms();
        Ok(Self {
            id: entry.name.clone(),
            sha256: String::new(),
            has_draft: false,
            weights_bytes: 0,
            speculation: engine::Speculation::Off,
            info: None,
            upstream: Some(Arc::new(upstream)),
            entry,
            config,
            engine: Mutex::new(None),
            loading: tokio::sync::Mutex::new(()),
            loaded_at_ms: AtomicU64::new(now),
            last_used_ms: AtomicU64::new(now),
            in_flight: AtomicUsize::new(0),
        })
    }

    /// Seconds since the Unix epoch when the model was (last) loaded.
    pub fn loaded_at(&self) -> u64 {
        self.loaded_at_ms.load(Ordering::Relaxed) / 1000
    }

    /// The running engine, if the model is loaded now.
    pub fn engine_now(&self) -> Option<Engine> {
        self.engine.lock().ok().and_then(|e| e.clone())
    }

    /// Requests using the model now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// `loaded`, `unloaded` (idle) or `remote`.
    pub fn state(&self) -> &'static str {
        if self.upstream.is_some() {
            "remote"
        } else if self.engine_now().is_some() {
            "loaded"
        } else {
            "unloaded"
        }
    }

    /// Memory the model uses now: weights, key/value state of running sequences and
    /// the prefix cache (all zero while unloaded).
    pub fn memory(&self) -> Value {
        let Some(engine) = self.engine_now() else {
            return json!({"weights": 0, "kv_cache": 0, "prefix_cache": 0, "total": 0});
        };
        let counters = engine.counters();
        let kv = counters.kv_cache_bytes.load(Ordering::Relaxed);
        let prefix = counters.prefix_cache_bytes.load(Ordering::Relaxed);
        json!({"weights": self.weights_bytes, "kv_cache": kv, "prefix_cache": prefix,
               "total": self.weights_bytes + kv + prefix})
    }

    /// Takes a lease: counts the request in and gives it the engine, loading the model
    /// again first if it was unloaded while idle.
    async fn lease(
        self: &Arc<Self>,
        loader: &Arc<dyn ModelLoader>,
    ) -> Result<ModelLease, ApiError> {
        let guard = InFlight::new(self.clone());
        if let Some(upstream) = &self.upstream {
            return Ok(ModelLease {
                model: self.clone(),
                backend: Backend::Remote(upstream.clone()),
                _in_flight: guard,
            });
        }
        if let Some(engine) = self.engine_now() {
            return Ok(ModelLease {
                model: self.clone(),
                backend: Backend::Builtin(engine),
                _in_flight: guard,
            });
        }
        let _one_loader = self.loading.lock().await;
        if let Some(engine) = self.engine_now() {
            return Ok(ModelLease {
                model: self.clone(),
                backend: Backend::Builtin(engine),
                _in_flight: guard,
            });
        }
        tracing::info!(model = %self.id, "loading the model again (it was unloaded while idle)");
        let (loader, entry, config) = (loader.clone(), self.entry.clone(), self.config.clone());
        let loaded = tokio::task::spawn_blocking(move || loader.load(&entry, &config))
            .await?
            .map_err(|e| {
                tracing::error!(model = %self.id, error = %e, "cannot load the model again");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "model `{}` could not be loaded again; the server's log says why",
                        self.id
                    ),
                )
            })?;
        if loaded.identity.sha256 != self.sha256 {
            tracing::error!(model = %self.id, was = %self.sha256, now = %loaded.identity.sha256,
                "the model's file changed since it was first loaded");
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "model `{}`'s file changed since it was loaded; an administrator must reload the configuration",
                    self.id
                ),
            ));
        }
        let engine = loaded.engine;
        if let Ok(mut slot) = self.engine.lock() {
            *slot = Some(engine.clone());
        }
        self.loaded_at_ms.store(now_ms(), Ordering::Relaxed);
        Ok(ModelLease {
            model: self.clone(),
            backend: Backend::Builtin(engine),
            _in_flight: guard,
        })
    }

    /// Drops the engine when the model is configured to unload after being idle, has
    /// been idle that long and no request uses it. Returns whether it unloaded.
    pub fn unload_if_idle(&self) -> bool {
        let Some(after) = self.entry.unload_after_secs else {
            return false;
        };
        let Ok(mut slot) = self.engine.lock() else {
            return false;
        };
        let idle_ms = now_ms().saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
        if slot.is_none() || self.in_flight() > 0 || idle_ms < after.saturating_mul(1000) {
            return false;
        }
        *slot = None;
        tracing::info!(model = %self.id, idle_secs = idle_ms / 1000, "unloaded the idle model");
        true
    }
}

/// Counts a request in on a model while it lives; marks the model used when dropped.
struct InFlight(Arc<ServedModel>);

impl InFlight {
    fn new(model: Arc<ServedModel>) -> Self {
        model.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(model)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.last_used_ms.store(now_ms(), Ordering::Relaxed);
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What runs a leased model.
#[derive(Clone)]
pub enum Backend {
    /// Souffleur's engine.
    Builtin(Engine),
    /// A remote engine's replicas.
    Remote(Arc<crate::upstream::Upstream>),
}

/// A request's hold on a model: its engine stays up (not unloaded, not dropped by a
/// reload) until the lease is dropped.
pub struct ModelLease {
    /// The model.
    pub model: Arc<ServedModel>,
    /// What runs it.
    pub backend: Backend,
    _in_flight: InFlight,
}

impl ModelLease {
    /// The built-in engine running the model; a model on a remote backend serves only
    /// what its kind supports (Tabby-shape completions; chat completions and reviews),
    /// and anything else is a 422 naming the model.
    pub fn engine(&self) -> Result<&Engine, ApiError> {
        match &self.backend {
            Backend::Builtin(engine) => Ok(engine),
            Backend::Remote(up) => Err(ApiError::unprocessable(format!(
                "model `{}` runs on a remote `{}` backend, which serves {} here (Tabby-shape `segments` completions, chat completions, reviews), not this request",
                self.model.id,
                up.wire.kind.name(),
                up.wire.kind.role_names()
            ))
            .with_param("model")),
        }
    }
}

impl std::fmt::Debug for ModelLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelLease")
            .field("model", &self.model.id)
            .finish()
    }
}

/// A model in a [`ModelSet`] with the roles it serves there.
#[derive(Debug, Clone)]
pub struct SetEntry {
    /// The model.
    pub model: Arc<ServedModel>,
    /// Roles it serves.
    pub roles: Vec<ModelRole>,
}

/// The models being served and each role's default; replaced as a whole by a reload.
#[derive(Debug, Clone)]
pub struct ModelSet {
    /// In configuration order.
    pub entries: Vec<SetEntry>,
    defaults: Vec<(ModelRole, usize)>,
}

impl ModelSet {
    /// The set of `entries` with `config`'s role defaults (with `[model]`, the one model
    /// serves every role).
    pub fn new(entries: Vec<SetEntry>, config: &Config) -> Self {
        let defaults = ModelRole::ALL
            .into_iter()
            .filter_map(|role| {
                let index = match config.role_default(role) {
                    Some(name) => entries.iter().position(|e| e.model.id == name),
                    None => entries.iter().position(|e| e.roles.contains(&role)),
                };
                index.map(|i| (role, i))
            })
            .collect();
        Self { entries, defaults }
    }

    /// The default model of `role`, if a model serves it.
    pub fn default_for(&self, role: ModelRole) -> Option<&Arc<ServedModel>> {
        self.defaults
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, i)| &self.entries[*i].model)
    }

    /// The roles `model` is the default of.
    pub fn default_roles(&self, model: &ServedModel) -> Vec<ModelRole> {
        self.defaults
            .iter()
            .filter(|(_, i)| std::ptr::eq(Arc::as_ptr(&self.entries[*i].model), model))
            .map(|(r, _)| *r)
            .collect()
    }

    /// The model a request for `role` gets: the one it names (by id, or by a SHA-256
    /// prefix of at least 12 digits), or the role's default when it names none (or
    /// `default`). Unknown names are a 404 listing what is served.
    pub fn find(
        &self,
        role: ModelRole,
        requested: Option<&str>,
    ) -> Result<Arc<ServedModel>, ApiError> {
        let wanted = requested.filter(|m| !m.is_empty() && *m != "default");
        let found = match wanted {
            None => self.default_for(role).cloned(),
            Some(m) => self
                .entries
                .iter()
                .find(|e| e.model.id == m)
                .or_else(|| {
                    (m.len() >= 12)
                        .then(|| self.entries.iter().find(|e| e.model.sha256.starts_with(m)))
                        .flatten()
                })
                .map(|e| e.model.clone()),
        };
        found.ok_or_else(|| {
            let served = self
                .entries
                .iter()
                .map(|e| {
                    let roles: Vec<&str> = e.roles.iter().map(|r| r.name()).collect();
                    format!("`{}` ({})", e.model.id, roles.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let what = match wanted {
                Some(m) => format!("model `{m}` not found"),
                None => format!(
                    "no model serves `{}` here; name one with `model`",
                    role.name()
                ),
            };
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("{what}; this server serves {served}"),
            )
        })
    }

    /// Every model's description for `/v1/models` and `/v1/health`.
    pub fn describe(&self) -> Vec<Value> {
        self.entries
            .iter()
            .map(|e| {
                let m = &e.model;
                let roles: Vec<&str> = e.roles.iter().map(|r| r.name()).collect();
                let default_for: Vec<&str> =
                    self.default_roles(m).iter().map(|r| r.name()).collect();
                let mut described = json!({
                    "id": m.id,
                    "object": "model",
                    "created": m.loaded_at(),
                    "owned_by": "souffleur",
                    "roles": roles,
                    "default_for": default_for,
                    "state": m.state(),
                    "in_flight": m.in_flight(),
                });
                let more = match &m.info {
                    None => json!({"backend": m.upstream.as_ref().map(|u| u.status())}),
                    Some(info) => {
                        let quantisation: Vec<Value> = info
                            .tensor_types
                            .iter()
                            .map(|(t, n)| json!({"type": t, "tensors": n}))
                            .collect();
                        json!({
                            "sha256": m.sha256,
                            "name": info.name,
                            "format": format!("{:?}", info.format),
                            "parameters": info.parameters,
                            "quantisation": quantisation,
                            "context_length": info.config.context_length,
                            "fim": info.fim.name(),
                            "device": info.device,
                            "kernels": info.kernels,
                            "draft_model": m.has_draft,
                            "unload_after_secs": m.entry.unload_after_secs,
                            "memory_bytes": m.memory(),
                        })
                    }
                };
                if let (Some(all), Some(extra)) = (described.as_object_mut(), more.as_object()) {
                    all.extend(extra.clone());
                }
                described
            })
            .collect()
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Models loaded by this reload (new, or a new version under a known name).
    pub loaded: Vec<String>,
    /// Models kept as they were.
    pub kept: Vec<String>,
    /// Models no longer served (dropped once their requests finish).
    pub removed: Vec<String>,
    /// Configuration sections that changed but only take effect at a restart.
    pub restart_needed: Vec<String>,
}

impl ReloadReport {
    /// The report as JSON, with the served models.
    pub fn to_json(&self, set: &ModelSet) -> Value {
        json!({
            "loaded": self.loaded,
            "kept": self.kept,
            "removed": self.removed,
            "restart_needed": self.restart_needed,
            "models": set.describe(),
        })
    }
}

/// Builds the model set for `config` after `current` (None at start-up): a model whose
/// id, checksum and settings are unchanged is kept (its engine and caches too), any
/// other is loaded. Nothing is swapped here; the caller installs the result.
pub fn build_set(
    loader: &dyn ModelLoader,
    config: &Arc<Config>,
    current: Option<&ModelSet>,
) -> Result<(ModelSet, ReloadReport), LoadError> {
    loader.check_memory(config)?;
    let mut report = ReloadReport::default();
    let mut entries = Vec::new();
    for entry in config.served_models() {
        if entry
            .remote_kind()
            .map_err(|e| LoadError(e.to_string()))?
            .is_some()
        {
            let kept = current.and_then(|set| {
                set.entries
                    .iter()
                    .find(|e| e.model.upstream.is_some() && e.model.entry == entry)
            });
            let model = match kept {
                Some(e) => {
                    report.kept.push(entry.name.clone());
                    e.model.clone()
                }
                None => {
                    report.loaded.push(entry.name.clone());
                    Arc::new(ServedModel::remote(entry.clone(), config.clone())?)
                }
            };
            entries.push(SetEntry {
                model,
                roles: entry.roles.clone(),
            });
            continue;
        }
        let identity = loader.identify(&entry)?;
        let same = current.and_then(|set| {
            set.entries.iter().find(|e| {
                let m = &e.model;
                m.id == identity.id
                    && m.sha256 == identity.sha256
                    && same_settings(&m.entry, &m.config, &entry, config)
            })
        });
        let model = match same {
            Some(e) => {
                report.kept.push(identity.id.clone());
                e.model.clone()
            }
            None => {
                let started = Instant::now();
                let loaded = loader.load(&entry, config)?;
                if loaded.identity != identity {
                    return Err(LoadError(format!(
                        "model `{}` changed on disk while it was being loaded; try again",
                        identity.id
                    )));
                }
                tracing::info!(model = %identity.id, sha256 = %identity.sha256,
                    secs = started.elapsed().as_secs_f32(), "loaded");
                report.loaded.push(identity.id.clone());
                Arc::new(ServedModel::new(loaded, entry.clone(), config.clone())?)
            }
        };
        entries.push(SetEntry {
            model,
            roles: entry.roles.clone(),
        });
    }
    if let Some(set) = current {
        for e in &set.entries {
            if !entries.iter().any(|n| Arc::ptr_eq(&n.model, &e.model)) {
                report.removed.push(e.model.id.clone());
            }
        }
    }
    Ok((ModelSet::new(entries, config), report))
}

/// Whether a kept model would be loaded the same way under the new configuration.
fn same_settings(
    old: &ModelEntry,
    old_config: &Config,
    new: &ModelEntry,
    new_config: &Config,
) -> bool {
    let (a, b) = (&old_config.scheduler, &new_config.scheduler);
    old.path == new.path
        && old.draft == new.draft
        && old.draft_sha256 == new.draft_sha256
        && old.speculation(a) == new.speculation(b)
        && old.max_active.unwrap_or(a.max_active) == new.max_active.unwrap_or(b.max_active)
        && old.prefix_cache_mib.unwrap_or(a.prefix_cache_mib)
            == new.prefix_cache_mib.unwrap_or(b.prefix_cache_mib)
        && a.max_batch_tokens == b.max_batch_tokens
        && old.unload_after_secs == new.unload_after_secs
}

/// A lease on the model a request for `role` gets (see [`ModelSet::find`]).
pub async fn lease(
    set: &ModelSet,
    loader: &Arc<dyn ModelLoader>,
    role: ModelRole,
    requested: Option<&str>,
) -> Result<ModelLease, ApiError> {
    set.find(role, requested)?.lease(loader).await
}

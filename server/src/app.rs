//! The server as a whole: [`app`] is the router (every route with its middleware) over
//! the shared [`AppState`]; [`serve`] binds, serves until SIGINT or SIGTERM and shuts
//! down gracefully; SIGHUP (or `POST /v1/admin/reload`) reloads the models. Loading and
//! verifying models and opening the index are the caller's (the `souffleur` binary),
//! which hands over [`Resources`]: a [`ModelLoader`] and the index.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use indexer::CodeIndex;

use crate::config::{Config, ConfigError};
use crate::http::{gate, listen, observe};
use crate::models::{self, LoadError, ModelLoader};
use crate::routes::{admin, completions, meta, openai, review, tabby_compat};
use crate::state::AppState;
use crate::store::StoreError;
use crate::store::tokens::TokenStore;

/// What start-up hands the server.
pub struct Resources {
    /// Loads the configured models (at start-up, reloads and after idle unloads).
    pub loader: Arc<dyn ModelLoader>,
    /// The code index, when there is one.
    pub index: Option<Arc<CodeIndex>>,
    /// `souffleur.db`: tokens and the audit log.
    pub db: PathBuf,
}

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `souffleur.db` could not be opened or migrated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A model could not be loaded, or the models do not fit the memory budget.
    #[error(transparent)]
    Models(#[from] LoadError),
    /// The operating system refused something start-up needs.
    #[error("cannot {what}: {error}")]
    System {
        /// What was being done (`bind 127.0.0.1:8347`, …).
        what: String,
        /// Why.
        error: std::io::Error,
    },
}

impl ServeError {
    fn system(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |error| ServeError::System { what, error }
    }
}

/// All routes with the body limit, the gate (auth, limits) and observation (request id,
/// log span, metrics, audit row) around them.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/review", post(review::review))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{id}", get(openai::model))
        .route("/v1/events", post(meta::events))
        .route("/v1/health", get(meta::health))
        .route("/v1/admin/reload", post(admin::reload))
        .route("/v1beta/server_setting", get(tabby_compat::server_setting))
        .route("/v1beta/models", get(tabby_compat::models))
        .route("/metrics", get(meta::metrics_text))
        .merge(crate::console::router())
        .fallback(meta::not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// Loads `config`'s models and serves them with `resources` until SIGINT or SIGTERM,
/// then lets requests in flight finish (`limits.shutdown_grace_secs`) and flushes the
/// audit log. SIGHUP reloads the models. `ready` is called with the bound address and
/// the served models' ids once the server accepts connections.
pub fn serve(
    config: Config,
    resources: Resources,
    ready: impl FnOnce(SocketAddr, Vec<String>),
) -> Result<(), ServeError> {
    config.validate()?;
    let refresh_store = TokenStore::open(&resources.db)?;
    let shared = Arc::new(config.clone());
    let (set, _) = models::build_set(&*resources.loader, &shared, None)?;
    let ids: Vec<String> = set.entries.iter().map(|e| e.model.id.clone()).collect();
    let state = Arc::new(AppState::new(
        config.clone(),
        set,
        resources.loader,
        resources.index,
        &resources.db,
    )?);
    state.refresh(&refresh_store);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(ServeError::system("start the async runtime"))?;
    let audit = state.audit.clone();
    let state_for_exit = state.clone();
    let limits = &config.limits;
    let listen_limits = listen::ListenLimits {
        header_timeout: Duration::from_secs(limits.header_timeout_secs),
        per_address: limits.max_connections_per_address,
        grace: Duration::from_secs(limits.shutdown_grace_secs),
    };
    let finished = runtime.block_on(async move {
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(ServeError::system(format!("bind {addr}")))?;
        let bound = listener
            .local_addr()
            .map_err(ServeError::system("read the bound address"))?;
        let shutdown = listen::shutdown_signal().map_err(ServeError::system("watch signals"))?;
        // A plain thread: it must not keep the runtime from shutting down.
        let background = state.clone();
        std::thread::Builder::new()
            .name("souffleur-refresh".into())
            .spawn(move || {
                let mut pruned: Option<std::time::Instant> = None;
                let mut tick: u64 = 0;
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    background.refresh(&refresh_store);
                    background.metrics.sample();
                    tick += 1;
                    if tick.is_multiple_of(5) {
                        background.usage.flush(&background.db_path);
                    }
                    if pruned.is_none_or(|t| t.elapsed() >= Duration::from_secs(3600)) {
                        pruned = Some(std::time::Instant::now());
                        prune_audit(&background);
                        prune_usage(&background);
                    }
                    for entry in &background.model_set().entries {
                        entry.model.unload_if_idle();
                    }
                }
            })
            .map_err(ServeError::system("start the refresh thread"))?;
        reload_on_hangup(state.clone()).map_err(ServeError::system("watch SIGHUP"))?;
        crate::console::personal::check_directory(state.clone());
        check_backends(state.clone());
        tracing::info!(models = ?ids, address = %bound, local = state.local, "serving");
        ready(bound, ids);
        Ok::<_, ServeError>(listen::serve(listener, app(state), listen_limits, shutdown).await)
    })?;
    if !finished {
        tracing::warn!(
            grace_secs = listen_limits.grace.as_secs(),
            "requests still running after the grace time were cut"
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    if !audit.flush(Duration::from_secs(5)) {
        tracing::error!("the audit log could not be flushed in time");
    }
    state_for_exit.usage.flush(&state_for_exit.db_path);
    tracing::info!("stopped");
    Ok(())
}

/// Deletes audit rows older than `audit.retention_days`, if set.
fn prune_audit(state: &AppState) {
    let Some(days) = state.config.audit.retention_days else {
        return;
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let before = now_ms - (days as i64) * 86_400_000;
    match crate::store::audit::prune(&state.db_path, before) {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, days, "deleted audit rows past their retention"),
        Err(e) => tracing::error!(error = %e, "cannot delete old audit rows"),
    }
}

/// Deletes usage counts older than `console.usage_retention_days`.
fn prune_usage(state: &AppState) {
    let days = state.config.console.usage_retention_days;
    let before = crate::usage::minute_now() - days as i64 * 1440;
    if let Err(e) = crate::store::usage::prune(&state.db_path, before) {
        tracing::error!(error = %e, "cannot delete old usage counts");
    }
}

/// Runs the remote backends' health checks (each backend's own interval) for the
/// models being served, whatever reloads do to them.
fn check_backends(state: Arc<AppState>) {
    tokio::spawn(async move {
        loop {
            for entry in &state.model_set().entries {
                if let Some(upstream) = entry.model.upstream.clone() {
                    tokio::spawn(async move { upstream.health_tick().await });
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
}

/// Reloads the models on every SIGHUP (one at a time, off the runtime; a failed
/// reload keeps the models being served and logs why).
fn reload_on_hangup(state: Arc<AppState>) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reloading the configuration");
            let state = state.clone();
            match tokio::task::spawn_blocking(move || state.reload()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "reload refused; serving the models as before")
                }
                Err(e) => tracing::error!(error = %e, "the reload task failed"),
            }
        }
    });
    Ok(())
}

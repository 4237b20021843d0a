//! `souffleur serve`: the HTTP API for editors, CI and agents.

mod completions;
pub mod config;
mod error;
mod gate;
mod generate;
mod keystrokes;
mod listen;
mod metrics;
mod observe;
mod openai;
pub mod postprocess;
pub mod prompt;
mod review_api;
mod state;
mod tabby_compat;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use engine::{Engine, SchedulerConfig};
use indexer::CodeIndex;
use serde_json::{Value, json};

use crate::audit::AuditLog;
use crate::home::Home;
use crate::tokens::TokenStore;
use config::Config;
use error::ApiError;
use state::{AppState, Caller, KnownRepo, ServedModel};

/// (Caller, file) pairs whose latest completion is kept as the next keystroke's hint
/// (a few hundred bytes each).
const RECENT_COMPLETIONS: usize = 4096;

/// Options of `souffleur serve` (they override the config file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML configuration file (default: `<home>/config.toml` if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind.
    #[arg(long)]
    host: Option<std::net::IpAddr>,
    /// Port to bind (0: any free port, printed on start).
    #[arg(long)]
    port: Option<u16>,
    /// Single-user mode without tokens; binds loopback only.
    #[arg(long)]
    local: bool,
    /// Model file or directory (default: the built-in default model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Exit when standard input closes (for supervisors and tests that own the process).
    #[arg(long, hide = true)]
    exit_on_stdin_close: bool,
}

pub use observe::{AuditInfo, AuditSlot};

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(home: &Home, args: ServeArgs) -> Result<()> {
    let config_path = args
        .config
        .clone()
        .or_else(|| Some(home.root().join("config.toml")).filter(|p| p.is_file()));
    let mut config = match &config_path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(h) = args.host {
        config.server.host = h;
    }
    if let Some(p) = args.port {
        config.server.port = p;
    }
    if args.local {
        config.server.local = true;
    }
    if let Some(m) = args.model {
        config.model.path = Some(m);
    }
    config.validate()?;

    if args.exit_on_stdin_close {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let model_path = crate::model_store::resolve(home, config.model.path.as_deref())?;
    let (model, sha256) = crate::model_store::load_verified(
        home,
        &model_path,
        config.model.sha256.as_deref(),
        "model.sha256",
    )?;
    let model = Arc::new(model);
    let scheduler = SchedulerConfig {
        max_batch_tokens: config.scheduler.max_batch_tokens,
        prefill_chunk: 128.min(config.scheduler.max_batch_tokens),
        max_active: config.scheduler.max_active,
        prefix_cache_bytes: config.scheduler.prefix_cache_mib << 20,
    };
    let engine = match &config.model.draft {
        Some(draft) => {
            let path = crate::model_store::resolve(home, Some(draft))?;
            let (draft, _) = crate::model_store::load_verified(
                home,
                &path,
                config.model.draft_sha256.as_deref(),
                "model.draft_sha256",
            )?;
            Engine::start_with_draft(model.clone(), Arc::new(draft), scheduler)?
        }
        None => Engine::start(model.clone(), scheduler)?,
    };
    let index_dir = config
        .index
        .path
        .clone()
        .unwrap_or_else(|| home.root().join("index"));
    let index = if index_dir.join(indexer::TANTIVY_DIR).exists() {
        Some(Arc::new(CodeIndex::open(&index_dir).with_context(
            || format!("cannot open the code index at {}", index_dir.display()),
        )?))
    } else {
        eprintln!(
            "souffleur: no code index at {} (completions get no repository context; see `souffleur index add`)",
            index_dir.display()
        );
        None
    };
    let db = home.root().join("souffleur.db");
    let token_store = TokenStore::open(&db)?;
    let token_db = TokenStore::open(&db)?;
    let audit = AuditLog::start(&db, config.audit.store_code)?;
    let loaded_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let local = config.server.local;
    let state = Arc::new(AppState {
        engine,
        model: ServedModel {
            id: model_id(&model_path),
            sha256,
            loaded_at,
        },
        index,
        repos: RwLock::new(Vec::new()),
        tokens: RwLock::new(HashMap::new()),
        local,
        config: config.clone(),
        audit,
        metrics: metrics::Metrics::default(),
        inflight: Mutex::new(HashMap::new()),
        recent: keystrokes::RecentCompletions::new(RECENT_COMPLETIONS),
        per_caller: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        started: Instant::now(),
        speculation: config.scheduler.speculation()?,
        tokenizing: Arc::new(tokio::sync::Semaphore::new(
            (config.limits.max_tokenizing_bytes / 1024).max(1),
        )),
        token_db: Mutex::new(token_db),
        token_misses: Mutex::new(state::MissBudget::default()),
    });
    refresh(&state, &token_store);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let audit = state.audit.clone();
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
            .with_context(|| format!("cannot bind {addr}"))?;
        let bound = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        // A plain thread: it must not keep the runtime from shutting down.
        let background = state.clone();
        std::thread::Builder::new()
            .name("souffleur-refresh".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_secs(1));
                    refresh(&background, &token_store);
                }
            })
            .context("cannot start the refresh thread")?;
        println!(
            "souffleur: serving {} on http://{bound}{}",
            state.model.id,
            if local {
                " (local mode: no tokens)"
            } else {
                ""
            }
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        anyhow::Ok(listen::serve(listener, router(state), listen_limits, shutdown).await)
    })?;
    if !finished {
        eprintln!(
            "souffleur: requests still running after {} s were cut",
            listen_limits.grace.as_secs()
        );
    }
    runtime.shutdown_timeout(Duration::from_secs(2));
    if !audit.flush(Duration::from_secs(5)) {
        eprintln!("souffleur: the audit log could not be flushed in time");
    }
    eprintln!("souffleur: stopped");
    Ok(())
}

/// Completes on the first SIGINT or SIGTERM (and says so).
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    Ok(async move {
        let name = tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        };
        eprintln!("souffleur: {name}: no new connections; finishing requests in flight");
        // A second signal does not wait for the grace time.
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {},
                _ = terminate.recv() => {},
            }
            eprintln!("souffleur: second signal: exiting now");
            std::process::exit(130);
        });
    })
}

/// The id clients use for the model: its file name without `.gguf`, or its directory's name.
fn model_id(path: &std::path::Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

/// Reloads tokens and the index's repositories (the CLI may change both while serving).
fn refresh(state: &AppState, store: &TokenStore) {
    match store.active() {
        Ok(active) => {
            if let Ok(mut t) = state.tokens.write() {
                *t = active.into_iter().collect();
            }
        }
        Err(e) => eprintln!("souffleur: cannot read tokens: {e:#}"),
    }
    if let Some(index) = &state.index {
        let _ = index.reload();
        if let Ok(status) = index.status() {
            let known: Vec<KnownRepo> = status
                .repos
                .iter()
                .map(|r| KnownRepo::from_record(&r.record))
                .collect();
            if let Ok(mut r) = state.repos.write() {
                *r = known;
            }
        }
    }
}

/// All routes with the body limit, metrics and audit around them.
pub fn router(state: Arc<AppState>) -> Router {
    let limit = state.config.limits.max_body_bytes;
    Router::new()
        .route("/v1/completions", post(completions::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/review", post(review_api::review))
        .route("/v1/models", get(openai::models))
        .route("/v1/events", post(events))
        .route("/v1/health", get(health))
        .route("/v1beta/server_setting", get(tabby_compat::server_setting))
        .route("/v1beta/models", get(tabby_compat::models))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(state.clone(), gate::gate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            observe::observe,
        ))
        .with_state(state)
}

/// The speculation a request asks for, or the server's default.
fn request_speculation(
    state: &AppState,
    requested: Option<&str>,
) -> Result<engine::Speculation, ApiError> {
    match requested {
        None => Ok(state.speculation),
        Some(s) => match engine::Speculation::parse(s) {
            Some(mode) if mode.uses_draft_model() && state.engine.draft_model().is_none() => {
                Err(ApiError::unprocessable(
                    "`speculation: draft` needs a draft model; this server has none (`model.draft`)",
                ))
            }
            Some(mode) => Ok(mode),
            None => Err(ApiError::unprocessable(format!(
                "`speculation` must be `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft`, not `{s}`"
            ))),
        },
    }
}

/// Refuses a temperature outside OpenAI's range, the same way on every route.
fn check_temperature(temperature: f32) -> Result<(), ApiError> {
    if (0.0..=2.0).contains(&temperature) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "`temperature` must be between 0 and 2, not {temperature}"
        )))
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// `GET /v1/health`: without a valid token only the status and version (what
/// Tabby's agents check); with one, the model, the index and the server's settings.
async fn health(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<Caller>>,
) -> Json<Value> {
    let version = json!({"souffleur": env!("CARGO_PKG_VERSION")});
    if caller.is_none() {
        return Json(json!({"status": "ok", "version": version}));
    }
    let info = state.engine.model().info();
    let repos: Vec<Value> = state
        .repos
        .read()
        .map(|r| r.iter().map(|k| json!(k.name)).collect())
        .unwrap_or_default();
    let index = match &state.index {
        Some(i) => json!({"available": true, "dir": i.dir(), "repositories": repos}),
        None => json!({"available": false}),
    };
    Json(json!({
        "status": "ok",
        "model": state.model.id,
        "models": [{"id": state.model.id, "sha256": state.model.sha256,
                    "format": format!("{:?}", info.format), "fim": info.fim.name(),
                    "parameters": info.parameters}],
        "device": "cpu",
        "arch": std::env::consts::ARCH,
        "cpu_count": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "version": version,
        "uptime_seconds": state.started.elapsed().as_secs(),
        "index": index,
        "auth": if state.local { "local" } else { "token" },
        "audit": {"stores_code": state.audit.stores_code()},
    }))
}

/// `POST /v1/events`: Tabby's acceptance telemetry (`view`, `select`, `dismiss`).
/// Only the event type is counted; code in the event is never stored.
async fn events(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let value: Value = error::parse_json(&body)?;
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::unprocessable("an event needs a string `type`"))?;
    let kind = match kind {
        "view" | "select" | "dismiss" | "completion" | "chat_completion" => kind,
        _ => "other",
    };
    state.metrics.event(kind);
    Ok(StatusCode::OK)
}

/// `GET /metrics` in Prometheus text format (admin tokens only).
async fn metrics_text(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.require_admin(&caller)?;
    let docs = state
        .index
        .as_ref()
        .and_then(|i| i.status().ok())
        .map(|s| s.documents);
    let text = state.metrics.render(state.engine.counters(), docs);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

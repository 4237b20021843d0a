//! `souffleur serve`: the HTTP API for editors, CI and agents.

mod completions;
pub mod config;
mod error;
mod generate;
mod metrics;
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

use anyhow::{Context, Result, bail};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Args;
use engine::{Engine, Model, SchedulerConfig};
use indexer::CodeIndex;
use serde_json::{Value, json};

use crate::audit::{AuditLog, AuditRecord};
use crate::home::Home;
use crate::tokens::TokenStore;
use config::Config;
use error::ApiError;
use state::{AppState, KnownRepo, ServedModel};

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

/// What a handler tells the audit middleware about a model call.
#[derive(Debug, Clone, Default)]
pub struct AuditInfo {
    /// Token name.
    pub caller: Option<String>,
    /// Prompt tokens.
    pub prompt_tokens: Option<i64>,
    /// Generated tokens.
    pub completion_tokens: Option<i64>,
    /// The prompt (kept only with `audit.store_code`).
    pub prompt: Option<String>,
    /// The completion (kept only with `audit.store_code`).
    pub completion: Option<String>,
}

/// Runs the server until Ctrl-C.
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
    let (model, sha256) = load_pinned(&model_path, config.model.sha256.as_deref(), "model.sha256")?;
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
            let (draft, _) = load_pinned(
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
        per_caller: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        started: Instant::now(),
        speculation: config.scheduler.speculation()?,
    });
    refresh(&state, &token_store);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let addr = SocketAddr::new(config.server.host, config.server.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind {addr}"))?;
        let bound = listener.local_addr()?;
        let background = state.clone();
        tokio::task::spawn_blocking(move || {
            loop {
                std::thread::sleep(Duration::from_secs(1));
                refresh(&background, &token_store);
            }
        });
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
        axum::serve(listener, router(state))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .context("server error")
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
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

/// Loads a model after checking its SHA-256 against `pin` (the config key `key`);
/// returns it with its SHA-256.
fn load_pinned(path: &std::path::Path, pin: Option<&str>, key: &str) -> Result<(Model, String)> {
    let sha256 = crate::model_store::checksum(path)?;
    if let Some(pin) = pin
        && !pin.eq_ignore_ascii_case(&sha256)
    {
        bail!(
            "model {} has SHA-256 {sha256}, but `{key}` pins {pin}; refusing to serve it",
            path.display()
        );
    }
    let model = Model::load(path).with_context(|| format!("cannot load {}", path.display()))?;
    Ok((model, sha256))
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

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// Records metrics and an audit row for every request, and turns axum's own
/// plain-text rejections (body too large, wrong method) into JSON errors.
async fn observe(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let mut response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json")
                || v.starts_with("text/event-stream")
                || v.starts_with("text/plain; version")
        });
    if !status.is_success() && !is_json {
        let message = match status {
            StatusCode::PAYLOAD_TOO_LARGE => format!(
                "request body exceeds the limit of {} bytes",
                state.config.limits.max_body_bytes
            ),
            StatusCode::METHOD_NOT_ALLOWED => format!("{method} is not allowed on {path}"),
            other => other
                .canonical_reason()
                .unwrap_or("request failed")
                .to_string(),
        };
        response = ApiError::new(status, message).into_response();
    }
    let elapsed = started.elapsed();
    let route = match path.as_str() {
        "/v1/completions"
        | "/v1/chat/completions"
        | "/v1/models"
        | "/v1/events"
        | "/v1/health"
        | "/v1/review"
        | "/metrics" => path.clone(),
        _ => "other".into(),
    };
    state.metrics.observe(&route, status.as_u16(), elapsed);
    let info = response
        .extensions()
        .get::<AuditInfo>()
        .cloned()
        .unwrap_or_default();
    state.audit.record(AuditRecord {
        at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        token: info.caller,
        method,
        path,
        status: status.as_u16(),
        latency_ms: elapsed.as_millis() as i64,
        prompt_tokens: info.prompt_tokens,
        completion_tokens: info.completion_tokens,
        model: info.prompt_tokens.map(|_| state.model.id.clone()),
        prompt: info.prompt,
        completion: info.completion,
    });
    response
}

/// `GET /v1/health`: no token needed; nothing secret in it.
async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
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
        "version": {"souffleur": env!("CARGO_PKG_VERSION")},
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state.authenticate(&headers)?;
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
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.authenticate_admin(&headers)?;
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

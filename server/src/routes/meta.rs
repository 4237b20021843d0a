//! What is not a model call: `GET /v1/health`, `POST /v1/events` (Tabby's telemetry),
//! `GET /metrics`, and the JSON 404 for unknown paths.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::ModelRole;
use crate::error::{ApiError, JsonBody};
use crate::state::{AppState, Caller};

/// Any path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such endpoint")
}

/// `GET /v1/health`: without a valid token only the status and version (what
/// Tabby's agents check); with one, each model (roles, state, memory), the index and
/// the server's settings.
pub async fn health(
    State(state): State<Arc<AppState>>,
    caller: Option<axum::Extension<Caller>>,
) -> Json<Value> {
    let version = json!({"souffleur": env!("CARGO_PKG_VERSION")});
    if caller.is_none() {
        return Json(json!({"status": "ok", "version": version}));
    }
    let set = state.model_set();
    let repos: Vec<Value> = state
        .repos
        .read()
        .map(|r| r.iter().map(|k| json!(k.name)).collect())
        .unwrap_or_default();
    let index = match &state.index {
        Some(i) => json!({"available": true, "dir": i.dir(), "repositories": repos}),
        None => json!({"available": false}),
    };
    // Where the default completion model computes: `cpu`, `cuda:N`, or `remote` for a
    // backend (each model's device and kernels are in `models`).
    let device = match set.default_for(ModelRole::Completion) {
        Some(m) => match &m.info {
            Some(info) => info
                .device
                .split_whitespace()
                .next()
                .unwrap_or("cpu")
                .to_string(),
            None => "remote".to_string(),
        },
        None => "cpu".to_string(),
    };
    Json(json!({
        "status": "ok",
        "model": set.default_for(ModelRole::Completion).map(|m| m.id.clone()),
        "models": set.describe(),
        "device": device,
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
/// Only the event type is counted (and, for the console's usage plots, attributed to
/// the completion its `completion_id` names); code in the event is never stored.
pub async fn events(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    JsonBody(value): JsonBody<Value>,
) -> Result<StatusCode, ApiError> {
    let kind = value
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::unprocessable("an event needs a string `type`"))?;
    let kind = match kind {
        "view" | "select" | "dismiss" | "completion" | "chat_completion" => kind,
        _ => "other",
    };
    state.metrics.event(kind);
    if let Some(id) = value.get("completion_id").and_then(Value::as_str) {
        state.usage.event(id, kind);
    }
    Ok(StatusCode::OK)
}

/// `GET /metrics` in Prometheus text format (admin tokens only).
pub async fn metrics_text(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    state.require_admin(&caller)?;
    // The index's status reads its manifest from disk: not on the async runtime.
    let index = state.index.clone();
    let docs = tokio::task::spawn_blocking(move || {
        index.and_then(|i| i.status().ok()).map(|s| s.documents)
    })
    .await?;
    let set = state.model_set();
    let engines: Vec<(String, engine::Engine)> = set
        .entries
        .iter()
        .filter_map(|e| {
            e.model
                .engine_now()
                .map(|engine| (e.model.id.clone(), engine))
        })
        .collect();
    let counters: Vec<(&str, &engine::EngineCounters)> = engines
        .iter()
        .map(|(id, engine)| (id.as_str(), engine.counters()))
        .collect();
    let mut text = state.metrics.render(&counters, docs);
    let backends: Vec<(&str, &crate::upstream::Upstream)> = set
        .entries
        .iter()
        .filter_map(|e| {
            e.model
                .upstream
                .as_deref()
                .map(|u| (e.model.id.as_str(), u))
        })
        .collect();
    text.push_str(&crate::upstream::render_metrics(&backends));
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

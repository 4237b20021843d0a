//! Metrics and the audit log around every request. The audit row is written when the
//! response body has been sent (or the client went away), so streamed answers record
//! their token counts too.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};

use super::error::ApiError;
use super::state::AppState;
use crate::audit::AuditRecord;

/// What a handler tells the audit log about a request.
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

/// The audit information of one request, shared by the middleware (which knows the
/// caller) and a handler or its response stream (which know the token counts).
#[derive(Debug, Clone, Default)]
pub struct AuditSlot(Arc<Mutex<AuditInfo>>);

impl AuditSlot {
    /// Changes the recorded information.
    pub fn update(&self, f: impl FnOnce(&mut AuditInfo)) {
        if let Ok(mut info) = self.0.lock() {
            f(&mut info);
        }
    }

    fn take(&self) -> AuditInfo {
        self.0
            .lock()
            .map(|mut i| std::mem::take(&mut *i))
            .unwrap_or_default()
    }

    /// Adds what a handler attached to its response (fields it left empty stay).
    fn merge(&self, from: AuditInfo) {
        self.update(|info| {
            info.caller = from.caller.or(info.caller.take());
            info.prompt_tokens = from.prompt_tokens.or(info.prompt_tokens);
            info.completion_tokens = from.completion_tokens.or(info.completion_tokens);
            info.prompt = from.prompt.or(info.prompt.take());
            info.completion = from.completion.or(info.completion.take());
        });
    }
}

/// Records metrics for every request, turns axum's own plain-text rejections (wrong
/// method, body too large) into JSON errors, and writes one audit row per request once
/// its response body is finished.
pub async fn observe(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_string();
    let slot = AuditSlot::default();
    request.extensions_mut().insert(slot.clone());
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
    state
        .metrics
        .observe(&route, status.as_u16(), started.elapsed());
    if let Some(info) = response.extensions_mut().remove::<AuditInfo>() {
        slot.merge(info);
    }
    let guard = AuditOnEnd {
        state: state.clone(),
        slot,
        started,
        method,
        path,
        status: status.as_u16(),
    };
    response.map(|body| {
        Body::new(AuditedBody {
            inner: body,
            _guard: guard,
        })
    })
}

/// Writes the request's audit row when dropped (the body was sent, or the client left).
struct AuditOnEnd {
    state: Arc<AppState>,
    slot: AuditSlot,
    started: Instant,
    method: String,
    path: String,
    status: u16,
}

impl Drop for AuditOnEnd {
    fn drop(&mut self) {
        let info = self.slot.take();
        let model = (info.prompt_tokens.is_some() || info.completion_tokens.is_some())
            .then(|| self.state.model.id.clone());
        self.state.audit.record(AuditRecord {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            token: info.caller,
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status,
            latency_ms: self.started.elapsed().as_millis() as i64,
            prompt_tokens: info.prompt_tokens,
            completion_tokens: info.completion_tokens,
            model,
            prompt: info.prompt,
            completion: info.completion,
        });
    }
}

/// A response body that carries the audit guard until it is finished or dropped.
struct AuditedBody {
    inner: Body,
    _guard: AuditOnEnd,
}

impl HttpBody for AuditedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

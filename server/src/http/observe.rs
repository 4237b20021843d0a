//! What happens around every request: a request id (the client's `x-request-id` when
//! it sends a valid one, else a new one; returned in the `x-request-id` header), a log
//! span carrying it, metrics, and the audit row with the same id. The audit row is
//! written when the response body has been sent (or the client went away), so streamed
//! answers record their token counts too.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use tracing::Instrument;

use crate::error::ApiError;
use crate::state::AppState;
use crate::store::audit::AuditRecord;

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
    /// The model that answered (its id).
    pub model: Option<String>,
    /// That model's SHA-256.
    pub model_sha256: Option<String>,
    /// What an admin did, in words.
    pub action: Option<String>,
    /// What the usage counts need to know of a completion.
    pub usage: Option<crate::usage::UsageNote>,
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
            info.model = from.model.or(info.model.take());
            info.model_sha256 = from.model_sha256.or(info.model_sha256.take());
            info.action = from.action.or(info.action.take());
            info.usage = from.usage.or(info.usage.take());
        });
    }
}

/// The header that carries a request's id, both ways.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest request id accepted from a client.
const MAX_REQUEST_ID: usize = 128;

/// A request's id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// The client's id if it sent one, else a new random one; a malformed one is an error
    /// (an id that reaches logs and the audit table must be plain text).
    fn of(request: &Request) -> Result<Self, ApiError> {
        let Some(value) = request.headers().get(&REQUEST_ID) else {
            return Ok(Self::fresh());
        };
        match value.to_str() {
            Ok(id)
                if (1..=MAX_REQUEST_ID).contains(&id.len())
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) =>
            {
                Ok(Self(id.to_string()))
            }
            _ => Err(ApiError::bad_request(format!(
                "`x-request-id` must be 1 to {MAX_REQUEST_ID} letters, digits, `-`, `_`, `.` or `:`"
            ))),
        }
    }

    /// 16 random hex digits.
    fn fresh() -> Self {
        let mut bytes = [0u8; 8];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness: time and a counter still tell requests apart.
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let t = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            bytes = (t ^ n.rotate_left(48)).to_be_bytes();
        }
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

/// Gives every request an id and a log span, records metrics, turns axum's own plain-text rejections (wrong
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
    let (id, refused) = match RequestId::of(&request) {
        Ok(id) => (id, None),
        Err(e) => (RequestId::fresh(), Some(e)),
    };
    let span = tracing::info_span!("request", id = %id.0, method = %method, path = %path);
    request.extensions_mut().insert(slot.clone());
    request.extensions_mut().insert(id.clone());
    let mut response = match refused {
        Some(e) => span.in_scope(|| e.into_response()),
        None => next.run(request).instrument(span.clone()).await,
    };
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.starts_with("application/json")
                || v.starts_with("text/event-stream")
                || v.starts_with("text/plain; version")
                // The console's pages.
                || v.starts_with("text/html")
        });
    if !status.is_success() && !status.is_redirection() && !is_json {
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
    if let Ok(value) = HeaderValue::from_str(&id.0) {
        response.headers_mut().insert(REQUEST_ID.clone(), value);
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
        span,
        id: id.0,
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
    span: tracing::Span,
    id: String,
    started: Instant,
    method: String,
    path: String,
    status: u16,
}

impl Drop for AuditOnEnd {
    fn drop(&mut self) {
        let info = self.slot.take();
        let latency_ms = self.started.elapsed().as_millis() as i64;
        self.span.in_scope(|| {
            tracing::debug!(
                status = self.status,
                latency_ms,
                caller = info.caller.as_deref().unwrap_or("-"),
                prompt_tokens = info.prompt_tokens,
                completion_tokens = info.completion_tokens,
                "finished"
            )
        });
        let kind = match self.path.as_str() {
            "/v1/completions" => Some("completion"),
            "/v1/chat/completions" => Some("chat"),
            "/v1/review" => Some("review"),
            _ => None,
        };
        if let Some(kind) = kind {
            self.state.usage.request(
                kind,
                &info.usage.clone().unwrap_or_default(),
                info.caller.as_deref().unwrap_or("-"),
                self.status,
                latency_ms as u64,
                info.completion_tokens.unwrap_or(0).max(0) as u64,
            );
        }
        self.state.audit.record(AuditRecord {
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0),
            token: info.caller,
            method: std::mem::take(&mut self.method),
            path: std::mem::take(&mut self.path),
            status: self.status,
            latency_ms,
            prompt_tokens: info.prompt_tokens,
            completion_tokens: info.completion_tokens,
            model: info.model,
            model_sha256: info.model_sha256,
            prompt: info.prompt,
            completion: info.completion,
            request_id: Some(std::mem::take(&mut self.id)),
            action: info.action,
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

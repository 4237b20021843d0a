//! What a request must pass before anything reads its body: header size, the token,
//! the declared `Content-Length`; then the body itself is read under a deadline.
//! A refused request costs the server almost nothing, and an `Expect: 100-continue`
//! client is refused without being asked for its body. A client that sends an
//! oversized body without asking first gets it read and discarded (up to
//! 16 MiB) before the 413, so that it sees the answer instead of a broken
//! pipe while still writing.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::http::observe::AuditSlot;
use crate::state::{AppState, Caller};

/// Routes that answer without a token (what they say without one is not secret).
const PUBLIC: &[&str] = &["/v1/health", "/v1beta/server_setting"];

/// Most header fields of one request (431 above).
const MAX_HEADER_FIELDS: usize = 100;

/// Most bytes of an oversized body read and thrown away before answering 413.
/// Clients that write the whole body before reading (most libraries) would otherwise
/// fail with a broken pipe and never see why; a body declared larger than this is
/// refused at once and the connection closed.
const DRAIN_LIMIT: usize = 16 << 20;

/// Refuses requests early, identifies the caller (kept in the request's extensions for
/// handlers and the audit log), and reads the body within the configured time and size.
pub async fn gate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    match admit_request(&state, request).await {
        Ok(request) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

async fn admit_request(state: &Arc<AppState>, mut request: Request) -> Result<Request, ApiError> {
    let limits = &state.config.limits;
    let headers = request.headers();
    let header_bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > limits.max_header_bytes || headers.len() > MAX_HEADER_FIELDS {
        return Err(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!(
                "request headers are too large ({header_bytes} bytes in {} fields; the limits are {} bytes and {MAX_HEADER_FIELDS} fields)",
                headers.len(),
                limits.max_header_bytes
            ),
        ));
    }
    let path = request.uri().path();
    // The console signs its users in with a session cookie of its own.
    let public = PUBLIC.contains(&path) || path == "/admin" || path.starts_with("/admin/");
    match state.authenticate(request.headers()).await {
        Ok(caller) => {
            if let Some(slot) = request.extensions().get::<AuditSlot>() {
                slot.update(|info| info.caller = Some(caller.name.clone()));
            }
            request.extensions_mut().insert(caller);
        }
        Err(e) if !public => return Err(e),
        Err(_) => {}
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "request body exceeds the limit of {} bytes",
                limits.max_body_bytes
            ),
        )
    };
    let asks_first = request.headers().contains_key(header::EXPECT);
    let (parts, body) = request.into_parts();
    let deadline = Duration::from_secs(limits.body_timeout_secs);
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        if !asks_first && declared.is_some_and(|n| n <= DRAIN_LIMIT as u64) {
            let _ = tokio::time::timeout(deadline, read_body(body, 0, DRAIN_LIMIT)).await;
        }
        return Err(too_large());
    }
    let read = read_body(body, limits.max_body_bytes, DRAIN_LIMIT);
    let bytes = match tokio::time::timeout(deadline, read).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout_secs
                ),
            ));
        }
        Ok(Err(BodyError::TooLarge)) => return Err(too_large()),
        Ok(Err(BodyError::Broken(e))) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the request body: {e}"
            )));
        }
        Ok(Ok(bytes)) => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Why a request body could not be taken.
enum BodyError {
    /// It is longer than the limit (what followed was drained, up to the drain limit).
    TooLarge,
    /// The connection failed while it was read.
    Broken(axum::Error),
}

/// Reads a body of at most `limit` bytes. A longer one is read on, and thrown away,
/// until it ends or `drain` bytes have come, so the client has finished writing when
/// the refusal is sent.
async fn read_body(body: Body, limit: usize, drain: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            kept.extend_from_slice(&chunk);
        } else if seen > drain {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge);
    }
    Ok(Bytes::from(kept))
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None => state.authenticate(&parts.headers).await,
        }
    }
}

/// One of the caller's concurrent-request slots (429 when all are taken), held for as
/// long as the handler keeps it. An extractor that runs before the body is parsed, so
/// a caller with every slot busy costs nothing more.
#[derive(Debug)]
pub struct Slot(pub OwnedSemaphorePermit);

impl FromRequestParts<Arc<AppState>> for Slot {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        state.admit(&caller).map(Slot)
    }
}

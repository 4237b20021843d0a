//! API errors: every failure is a JSON body `{"error": {"message", "type", "code"}}`
//! (OpenAI's shape, which Tabby clients also read) with the right HTTP status.
//! Every engine, index, review and store error maps here exhaustively (a new variant
//! does not compile until it is given a status). Internal failures are logged with
//! their details; the client gets only a generic message and the request id.

use axum::Json;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::EngineError;
use indexer::IndexError;
use review::ReviewError;
use serde::de::DeserializeOwned;

use crate::store::StoreError;

/// What a client is told about an internal failure (the details are in the log).
const INTERNAL_MESSAGE: &str = "internal server error; the server's log has the details under this request's id (x-request-id)";

/// A failed request.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable reason, sent to the client.
    pub message: String,
    /// The request field at fault, when one is (OpenAI's `param`).
    pub param: Option<String>,
    /// What went wrong inside (internal errors only): logged, never sent.
    detail: Option<String>,
}

impl ApiError {
    /// An error with `status` and `message`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            detail: None,
        }
    }

    /// The same error, naming the request field at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// 400: the body is not what the endpoint reads.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422: well-formed but invalid values.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 500: our fault. `detail` is logged (with the request id), not sent.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: INTERNAL_MESSAGE.into(),
            param: None,
            detail: Some(detail.into()),
        }
    }

    /// 503: the server cannot take the request now (stopping, a worker gone).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            s if s.is_server_error() => "server_error",
            _ => "invalid_request_error",
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::PromptTooLong { .. } => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            EngineError::InvalidRequest(_) => Self::unprocessable(e.to_string()),
            EngineError::SchedulerStopped => Self::unavailable(e.to_string()),
            // The model was checked at start-up; these during a request are our fault.
            EngineError::Io { .. }
            | EngineError::Truncated { .. }
            | EngineError::InvalidModel { .. }
            | EngineError::UnsupportedArchitecture { .. }
            | EngineError::UnsupportedQuantization { .. }
            | EngineError::ChecksumMismatch { .. }
            | EngineError::Tokenizer(_)
            | EngineError::Compute(_) => Self::internal(e.to_string()),
        }
    }
}

impl From<IndexError> for ApiError {
    fn from(e: IndexError) -> Self {
        match e {
            IndexError::UnknownRepo(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            IndexError::RefNotFound { .. } => Self::unprocessable(e.to_string()),
            // Another process holds the writer: try again later.
            IndexError::Locked { .. } => Self::unavailable(e.to_string()),
            // Requests never name paths or create repositories: anything else is ours.
            IndexError::NoIndex(_)
            | IndexError::IncompatibleFormat { .. }
            | IndexError::NotAGitRepository { .. }
            | IndexError::RepoExists(_)
            | IndexError::InvalidName { .. }
            | IndexError::CorruptManifest { .. }
            | IndexError::Io { .. }
            | IndexError::Git(_)
            | IndexError::Search(_) => Self::internal(e.to_string()),
        }
    }
}

impl From<ReviewError> for ApiError {
    fn from(e: ReviewError) -> Self {
        match e {
            ReviewError::TooLarge { .. } => Self::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            ReviewError::EmptyDiff
            | ReviewError::MalformedDiff { .. }
            | ReviewError::UnsafePath { .. }
            | ReviewError::BinaryOnly(_)
            | ReviewError::UnknownRef(_)
            | ReviewError::Rules(_) => Self::unprocessable(e.to_string()),
            ReviewError::Cancelled => Self::unavailable(e.to_string()),
            ReviewError::Git(_) | ReviewError::Model(_) => Self::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(_) => Self::unprocessable(e.to_string()),
            StoreError::File { .. } | StoreError::Sqlite(_) | StoreError::TooNew { .. } => {
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        Self::internal(format!("a blocking task failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // Inside the request's span: the log line carries the request id.
        if let Some(detail) = &self.detail {
            tracing::error!(status = self.status.as_u16(), %detail, "internal error");
        } else if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), message = %self.message, "request failed");
        }
        let body = serde_json::json!({
            "error": {
                "message": self.message,
                "type": self.kind(),
                "param": self.param,
                "code": self.status.as_u16(),
            }
        });
        (self.status, Json(body)).into_response()
    }
}

/// Parses a JSON body: syntax errors are 400, wrong fields or types 422.
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body is empty; expected JSON",
        ));
    }
    // Syntax first (truncated text, trailing garbage: 400), then the shape (422): one
    // typed pass would report some syntax errors as data errors.
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))?;
    serde_json::from_value(value)
        .map_err(|e| ApiError::unprocessable(format!("invalid request: {e}")))
}

/// A JSON request body, read like [`parse_json`]: every rejection is an [`ApiError`] in
/// the app's shape (400 for syntax, 422 for fields and types). No content type is
/// required: editors' clients send JSON without one.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<T, S> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| ApiError::new(e.status(), e.body_text()))?;
        parse_json(&bytes).map(JsonBody)
    }
}

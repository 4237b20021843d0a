//! The Souffleur server's HTTP API as the adapter uses it (Tabby's shapes):
//! `POST /v1/completions`, `POST /v1/events`, `GET /v1/health`.
//!
//! One HTTP/1.1 connection per call over tokio (loopback or LAN, plain HTTP). Calls are
//! plain futures: dropping one — a cancelled or superseded LSP request — closes the
//! connection at once, and the server cancels the generation of a client that is gone.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::BoxBody};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::net::TcpStream;

use crate::config::Config;

/// Largest response body accepted.
const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// What can go wrong talking to the server.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The configured URL is not a usable `http://` URL.
    #[error("invalid Souffleur server URL `{url}`: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// No TCP connection could be made.
    #[error("cannot reach the Souffleur server at {url}: {source}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// The connection error.
        source: std::io::Error,
    },
    /// The server took longer than the configured timeout.
    #[error("the Souffleur server at {url} did not answer within {timeout:?}")]
    Timeout {
        /// The server's URL.
        url: String,
        /// The limit that passed.
        timeout: Duration,
    },
    /// The HTTP exchange failed (connection closed, malformed response, ...).
    #[error("HTTP error talking to the Souffleur server at {url}: {message}")]
    Http {
        /// The server's URL.
        url: String,
        /// What failed.
        message: String,
    },
    /// The server answered with an error status.
    #[error("the Souffleur server answered {status}: {message}")]
    Status {
        /// HTTP status code.
        status: u16,
        /// The server's `error.message`, or the body.
        message: String,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from the Souffleur server: {0}")]
    Decode(String),
}

/// How an error should be told to the user (each kind is told once per outage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The server is not there or not answering.
    Down,
    /// The token is missing, invalid or lacks the rights.
    Auth,
    /// The configuration is unusable.
    Config,
    /// Anything else.
    Other,
}

impl ClientError {
    /// The kind of problem, for reporting.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => ErrorKind::Down,
            Self::Status {
                status: 401 | 403, ..
            } => ErrorKind::Auth,
            Self::InvalidUrl { .. } => ErrorKind::Config,
            Self::Http { .. } | Self::Status { .. } | Self::Decode(_) => ErrorKind::Other,
        }
    }
}

/// A client snippet in a completion request.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SnippetBody {
    /// File the snippet comes from.
    pub filepath: String,
    /// Its text.
    pub body: String,
    /// Relevance in (0, 1].
    pub score: f32,
}

/// A definition in a completion request.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Declaration {
    /// File the definition comes from.
    pub filepath: String,
    /// Its text.
    pub body: String,
}

/// The text around the cursor and the context (Tabby's `segments`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Segments {
    /// Text before the cursor.
    pub prefix: String,
    /// Text after the cursor.
    pub suffix: String,
    /// Absolute path of the file.
    pub filepath: String,
    /// `origin` remote of the file's repository.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_url: Option<String>,
    /// Definitions of identifiers near the cursor.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub declarations: Vec<Declaration>,
    /// Related code from the editor's other documents and recent edits.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub relevant_snippets_from_changed_files: Vec<SnippetBody>,
}

/// `POST /v1/completions` body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CompletionRequest {
    /// Language id; omitted to let the server guess from the path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Prefix, suffix and context.
    pub segments: Segments,
    /// Optional user name (for the server's per-user cancellation and audit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One proposed completion.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Choice {
    /// Its index (for events).
    #[serde(default)]
    pub index: u32,
    /// The text to insert at the cursor.
    pub text: String,
}

/// `POST /v1/completions` answer.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct CompletionResponse {
    /// Completion id (for events).
    pub id: String,
    /// Proposals; may be empty.
    #[serde(default)]
    pub choices: Vec<Choice>,
}

/// An acceptance event type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The completion was shown.
    View,
    /// The user accepted it.
    Select,
    /// The user dismissed it.
    Dismiss,
}

#[derive(Serialize)]
struct EventBody<'a> {
    #[serde(rename = "type")]
    kind: EventKind,
    completion_id: &'a str,
    choice_index: u32,
}

/// Where the server is: parsed once per call from the configured URL.
#[derive(Debug, Clone)]
struct Endpoint {
    /// For `Host:`.
    authority: String,
    /// For connecting (no IPv6 brackets).
    host: String,
    port: u16,
    /// Path prefix without a trailing slash (usually empty).
    base_path: String,
}

impl Endpoint {
    fn parse(url: &str) -> Result<Self, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(invalid(
                    "https is not supported; use http:// (loopback or a trusted LAN)",
                ));
            }
            _ => return Err(invalid("expected http://HOST:PORT")),
        }
        let authority = uri.authority().ok_or_else(|| invalid("no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(invalid("no host"));
        }
        let authority_text = authority.as_str();
        let authority_text = authority_text
            .rsplit_once('@')
            .map_or(authority_text, |(_, a)| a);
        Ok(Self {
            authority: authority_text.to_string(),
            host: host.to_string(),
            port: authority.port_u16().unwrap_or(80),
            base_path: uri.path().trim_end_matches('/').to_string(),
        })
    }
}

/// A client of one Souffleur server.
#[derive(Debug, Clone)]
pub struct SouffleurClient {
    url: String,
    token: Option<String>,
    timeout: Duration,
}

impl SouffleurClient {
    /// A client for the server `config` names.
    pub fn new(config: &Config) -> Self {
        Self {
            url: config.url.clone(),
            token: config.token.clone(),
            timeout: config.timeout,
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Asks for a completion.
    pub async fn complete(
        &self,
        request: &CompletionRequest,
    ) -> Result<CompletionResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode(e.to_string()))?;
        let bytes = self
            .call(Method::POST, "/v1/completions", Some(body), true)
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// Records an acceptance event (`view`, `select`, `dismiss`).
    pub async fn event(
        &self,
        kind: EventKind,
        completion_id: &str,
        choice_index: u32,
    ) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&EventBody {
            kind,
            completion_id,
            choice_index,
        })
        .map_err(|e| ClientError::Decode(e.to_string()))?;
        self.call(Method::POST, "/v1/events", Some(body), true)
            .await
            .map(drop)
    }

    /// The server's health report (`GET /v1/health`; with the token, when there is one,
    /// it names the model; without, it says only status and version).
    pub async fn health(&self) -> Result<serde_json::Value, ClientError> {
        let bytes = self.call(Method::GET, "/v1/health", None, true).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// One HTTP exchange within the timeout; the body of a 2xx answer.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        authorize: bool,
    ) -> Result<Bytes, ClientError> {
        let endpoint = Endpoint::parse(&self.url)?;
        match tokio::time::timeout(
            self.timeout,
            self.exchange(&endpoint, method, path, body, authorize),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        endpoint: &Endpoint,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        authorize: bool,
    ) -> Result<Bytes, ClientError> {
        let http_error = |message: String| ClientError::Http {
            url: self.url.clone(),
            message,
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path}", endpoint.base_path))
            .header(HOST, &endpoint.authority);
        if let Some(token) = self.token.as_deref().filter(|_| authorize) {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let body: BoxBody<Bytes, std::convert::Infallible> = match body {
            Some(bytes) => {
                builder = builder.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(bytes)).boxed()
            }
            None => Empty::new().boxed(),
        };
        let request = builder
            .body(body)
            .map_err(|e| http_error(format!("cannot build the request: {e}")))?;

        let stream = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.url.clone(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| http_error(e.to_string()))?;
        let exchange = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| http_error(e.to_string()))?;
            let status = response.status().as_u16();
            let bytes = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| http_error(e.to_string()))?
                .to_bytes();
            Ok::<_, ClientError>((status, bytes))
        };
        // The connection future does the I/O; poll it alongside the exchange. Both are
        // dropped together when the caller stops waiting, which closes the socket.
        tokio::pin!(connection, exchange);
        let (status, bytes) = tokio::select! {
            biased;
            out = &mut exchange => out?,
            done = &mut connection => {
                done.map_err(|e| http_error(e.to_string()))?;
                exchange.await?
            }
        };
        if (200..300).contains(&status) {
            Ok(bytes)
        } else {
            Err(ClientError::Status {
                status,
                message: error_message(&bytes),
            })
        }
    }
}

/// `error.message` of an error body, else the body itself (shortened).
fn error_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(message) = parsed
        .as_ref()
        .and_then(|v| v.pointer("/error/message"))
        .and_then(|m| m.as_str())
    {
        return message.to_string();
    }
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn endpoints_parse_and_reject() {
        let e = Endpoint::parse("http://127.0.0.1:8347").expect("plain");
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("127.0.0.1", 8347, "")
        );
        let e = Endpoint::parse("http://[::1]:9/api/").expect("ipv6 + path");
        assert_eq!(
            (e.host.as_str(), e.port, e.base_path.as_str()),
            ("::1", 9, "/api")
        );
        assert_eq!(e.authority, "[::1]:9");
        let e = Endpoint::parse("http://box.lan").expect("default port");
        assert_eq!(e.port, 80);
        for bad in ["https://x:1", "127.0.0.1:8347", "", "http://", "ftp://x"] {
            let err = Endpoint::parse(bad).expect_err(bad);
            assert_eq!(err.kind(), ErrorKind::Config, "{bad}");
        }
    }

    #[test]
    fn request_shape_is_tabbys() {
        let request = CompletionRequest {
            language: Some("python".into()),
            segments: Segments {
                prefix: "def f(".into(),
                suffix: ")\n".into(),
                filepath: "/w/a.py".into(),
                git_url: None,
                declarations: vec![Declaration {
                    filepath: "/w/b.py".into(),
                    body: "def g(): pass".into(),
                }],
                relevant_snippets_from_changed_files: vec![],
            },
            user: None,
        };
        assert_eq!(
            serde_json::to_value(&request).expect("json"),
            json!({"language": "python", "segments": {"prefix": "def f(", "suffix": ")\n",
                "filepath": "/w/a.py",
                "declarations": [{"filepath": "/w/b.py", "body": "def g(): pass"}]}})
        );
        let event = EventBody {
            kind: EventKind::Select,
            completion_id: "cmpl-1",
            choice_index: 0,
        };
        assert_eq!(
            serde_json::to_value(&event).expect("json"),
            json!({"type": "select", "completion_id": "cmpl-1", "choice_index": 0})
        );
    }

    #[test]
    fn error_messages_and_kinds() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad token"}}"#),
            "bad token"
        );
        assert_eq!(error_message(b"plain"), "plain");
        let auth = ClientError::Status {
            status: 401,
            message: String::new(),
        };
        assert_eq!(auth.kind(), ErrorKind::Auth);
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_as_down() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = SouffleurClient::new(&Config {
            url: format!("http://127.0.0.1:{port}"),
            ..Config::default()
        });
        let err = client.health().await.expect_err("nobody listens");
        assert_eq!(err.kind(), ErrorKind::Down, "{err}");
    }
}

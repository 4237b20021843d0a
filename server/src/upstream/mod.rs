//! Remote inference engines behind Souffleur: a model served by llama.cpp servers, vLLM
//! or Ollama instead of the built-in engine. Souffleur keeps everything in front of them
//! (tokens and repository scoping, retrieval, prompt building, post-processing, audit);
//! this module sends the request to one of the backend's replicas and streams the text
//! back.
//!
//! - [`kind`]: each engine's request and streamed-answer format.
//! - [`chat`]: chat requests for the kinds that serve chat, and streamed chat answers
//!   put together.
//! - [`pool`]: replicas, least-outstanding balancing with keystroke affinity, ejection
//!   with back-off, counters.
//! - [`Upstream`]: one backend — its pool, HTTP client, timeouts, bearer token; a
//!   request that could not connect is retried once on another replica (nothing was
//!   sent yet), 4xx answers are never retried; active health checks re-admit replicas.
//!
//! Plain `http://` only: a backend is expected on the same private network (TLS is
//! terminated in front of it, or the engine runs beside Souffleur).

pub mod chat;
pub mod kind;
pub mod pool;
pub mod review_model;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{Value, json};

use kind::{Delta, InfillRequest, Kind, StreamError, StreamReader, Wire};
use pool::{Pick, Pool};

/// `[models.backend]`: where and how a remote model is reached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendSection {
    /// Base URLs of the replicas (`http://host:port`), at least one.
    pub replicas: Vec<String>,
    /// The model name the upstream expects in requests (OpenAI and Ollama kinds).
    pub model: Option<String>,
    /// The FIM template of kinds that take a rendered prompt (`qwen`, `starcoder`,
    /// `code-llama`, `deepseek`).
    pub fim_template: Option<kind::FimFormat>,
    /// The model's tokenizer for prompt budgets: its GGUF file or `tokenizer.json`
    /// (without it, tokens are estimated from characters).
    pub tokenizer: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    pub api_key_env: Option<String>,
    /// A file holding the bearer token.
    pub api_key_file: Option<PathBuf>,
    /// Most milliseconds to open a connection.
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u64,
    /// Most milliseconds until the answer's headers arrive.
    #[serde(default = "default_first_byte_ms")]
    pub first_byte_timeout_ms: u64,
    /// Most milliseconds for a whole request.
    #[serde(default = "default_total_ms")]
    pub total_timeout_ms: u64,
    /// Most requests on one replica at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Milliseconds between active health checks of each replica.
    #[serde(default = "default_health_ms")]
    pub health_interval_ms: u64,
}

fn default_connect_ms() -> u64 {
    1000
}
fn default_first_byte_ms() -> u64 {
    30_000
}
fn default_total_ms() -> u64 {
    120_000
}
fn default_max_in_flight() -> usize {
    16
}
fn default_health_ms() -> u64 {
    2000
}

impl BackendSection {
    /// Checks the section for a model of `kind`, naming what is wrong.
    pub fn validate(&self, kind: Kind, model: &str) -> Result<(), String> {
        if self.replicas.is_empty() {
            return Err(format!("model `{model}`: `backend.replicas` is empty"));
        }
        for url in &self.replicas {
            let rest = url.strip_prefix("http://").ok_or_else(|| {
                format!(
                    "model `{model}`: replica `{url}` must be an http:// URL (TLS is terminated in front of the backend)"
                )
            })?;
            let host = rest.trim_end_matches('/');
            if host.is_empty() || host.contains('/') || host.contains('?') {
                return Err(format!(
                    "model `{model}`: replica `{url}` must be a base URL like http://10.0.0.5:8080"
                ));
            }
        }
        if matches!(kind, Kind::Ollama) && self.model.is_none() {
            return Err(format!(
                "model `{model}`: an `ollama` backend needs `backend.model` (the Ollama model's name)"
            ));
        }
        if self.api_key_env.is_some() && self.api_key_file.is_some() {
            return Err(format!(
                "model `{model}`: set `backend.api_key_env` or `backend.api_key_file`, not both"
            ));
        }
        if self.max_in_flight == 0 || self.connect_timeout_ms == 0 || self.total_timeout_ms == 0 {
            return Err(format!(
                "model `{model}`: backend limits and timeouts must be above zero"
            ));
        }
        Ok(())
    }
}

/// Why a remote request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Every replica is ejected or at its limit.
    #[error("no replica of backend `{0}` is available (all are failing or busy)")]
    NoReplica(String),
    /// The connection could not be opened (nothing was sent).
    #[error("replica {url} could not be reached: {why}")]
    Connect {
        /// The replica.
        url: String,
        /// What failed.
        why: String,
    },
    /// The replica did not answer in time.
    #[error("replica {url} did not answer within {ms} ms")]
    Timeout {
        /// The replica.
        url: String,
        /// The limit that passed.
        ms: u64,
    },
    /// The replica answered with an error status.
    #[error("replica {url} answered {status}: {message}")]
    Status {
        /// The replica.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The upstream's message.
        message: String,
    },
    /// The answer broke off or could not be read.
    #[error("replica {url}: {why}")]
    Broken {
        /// The replica.
        url: String,
        /// What happened.
        why: String,
    },
    /// The backend's settings are wrong or its bearer token could not be read.
    #[error("{0}")]
    Config(String),
}

impl UpstreamError {
    /// Whether the request may go to another replica: nothing reached the upstream.
    pub fn may_retry(&self) -> bool {
        matches!(self, UpstreamError::Connect { .. })
    }

    /// Whether the replica is at fault (it is ejected): not for 4xx answers, which
    /// are about the request.
    fn blames_replica(&self) -> bool {
        match self {
            UpstreamError::Status { status, .. } => *status >= 500,
            UpstreamError::Connect { .. }
            | UpstreamError::Timeout { .. }
            | UpstreamError::Broken { .. } => true,
            UpstreamError::NoReplica(_) | UpstreamError::Config(_) => false,
        }
    }
}

/// One remote backend.
pub struct Upstream {
    /// The model's id in Souffleur.
    pub name: String,
    /// How requests are written.
    pub wire: Wire,
    pool: Pool,
    client: Client<HttpConnector, Full<Bytes>>,
    authorization: Option<String>,
    first_byte: Duration,
    total: Duration,
    health_every: Duration,
    last_check: std::sync::Mutex<Option<Instant>>,
    tokenizer: Option<std::sync::Arc<engine::Tokenizer>>,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("Upstream")
            .field("name", &self.name)
            .field("kind", &self.wire.kind)
            .field("replicas", &self.pool.replicas().len())
            .finish()
    }
}

impl Upstream {
    /// The backend of model `name`; reads its bearer token now.
    pub fn new(name: &str, kind: Kind, section: &BackendSection) -> Result<Self, UpstreamError> {
        section
            .validate(kind, name)
            .map_err(UpstreamError::Config)?;
        let token = match (&section.api_key_env, &section.api_key_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                UpstreamError::Config(format!(
                    "model `{name}`: the environment variable `{var}` (backend.api_key_env) is not set"
                ))
            })?),
            (_, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        UpstreamError::Config(format!(
                            "model `{name}`: cannot read backend.api_key_file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_string(),
            ),
            _ => None,
        };
        let tokenizer = match &section.tokenizer {
            Some(path) => Some(std::sync::Arc::new(engine::Tokenizer::load(path).map_err(
                |e| {
                    UpstreamError::Config(format!(
                        "model `{name}`: cannot load backend.tokenizer {}: {e}",
                        path.display()
                    ))
                },
            )?)),
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(section.connect_timeout_ms)));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        Ok(Self {
            name: name.to_string(),
            wire: Wire {
                kind,
                model: section.model.clone(),
                fim: section.fim_template,
            },
            pool: Pool::new(&section.replicas, section.max_in_flight),
            client,
            authorization: token
                .filter(|t| !t.is_empty())
                .map(|t| format!("Bearer {t}")),
            first_byte: Duration::from_millis(section.first_byte_timeout_ms),
            total: Duration::from_millis(section.total_timeout_ms),
            health_every: Duration::from_millis(section.health_interval_ms.max(100)),
            last_check: std::sync::Mutex::new(None),
            tokenizer,
        })
    }

    /// The model's tokenizer, when `backend.tokenizer` names one.
    pub fn tokenizer(&self) -> Option<&std::sync::Arc<engine::Tokenizer>> {
        self.tokenizer.as_ref()
    }

    /// The replicas.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The backend's state for `/v1/health`.
    pub fn status(&self) -> Value {
        json!({
            "kind": self.wire.kind.name(),
            "token_count": crate::completion::remote::TokenCount::of(self).describe(),
            "replicas": self.pool.replicas().iter().map(|r| r.status()).collect::<Vec<_>>(),
        })
    }

    /// Starts a fill-in-the-middle generation on a replica (the one `affinity` used
    /// last, if it is not much busier). A replica that cannot be reached is ejected and
    /// the request goes to another one, once.
    pub async fn infill(
        &self,
        request: &InfillRequest,
        affinity: Option<u64>,
    ) -> Result<TextStream, UpstreamError> {
        let (path, body) = self.wire.infill(request).ok_or_else(|| {
            UpstreamError::Config(format!(
                "model `{}` runs on a `{}` backend, which serves chat, not completions",
                self.name,
                self.wire.kind.name()
            ))
        })?;
        self.start(path, body, affinity, StreamReader::new(self.wire.kind))
            .await
    }

    /// Starts a chat written by [`kind::Wire::chat`] (`path`, `body`), as
    /// [`Upstream::infill`] does; the answer streams as [`Delta::Chunk`]s.
    pub async fn chat(
        &self,
        path: &'static str,
        body: Value,
        affinity: Option<u64>,
    ) -> Result<TextStream, UpstreamError> {
        self.start(path, body, affinity, StreamReader::for_chat(self.wire.kind))
            .await
    }

    async fn start(
        &self,
        path: &'static str,
        body: Value,
        affinity: Option<u64>,
        reader: StreamReader,
    ) -> Result<TextStream, UpstreamError> {
        let body = Bytes::from(body.to_string());
        let first = self.pick(affinity, &[])?;
        let first_index = first.index;
        match self.send(first, path, body.clone(), reader.fresh()).await {
            Err(e) if e.may_retry() => {
                tracing::warn!(model = %self.name, error = %e, "retrying on another replica");
                let second = self.pick(affinity, &[first_index])?;
                self.send(second, path, body, reader).await
            }
            other => other,
        }
    }

    fn pick(&self, affinity: Option<u64>, avoid: &[usize]) -> Result<Pick, UpstreamError> {
        self.pool
            .pick(affinity, avoid)
            .ok_or_else(|| UpstreamError::NoReplica(self.name.clone()))
    }

    async fn send(
        &self,
        pick: Pick,
        path: &str,
        body: Bytes,
        reader: StreamReader,
    ) -> Result<TextStream, UpstreamError> {
        let started = Instant::now();
        let url = pick.replica.url.clone();
        let mut builder = hyper::Request::post(format!("{url}{path}"))
            .header("content-type", "application/json")
            .header(
                "accept",
                "text/event-stream, application/x-ndjson, application/json",
            );
        if let Some(a) = &self.authorization {
            builder = builder.header("authorization", a);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| UpstreamError::Broken {
                url: url.clone(),
                why: e.to_string(),
            })?;
        let answer = match tokio::time::timeout(self.first_byte, self.client.request(request)).await
        {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.clone(),
                ms: self.first_byte.as_millis() as u64,
            }),
            Ok(Err(e)) if e.is_connect() => Err(UpstreamError::Connect {
                url: url.clone(),
                why: source_chain(&e),
            }),
            Ok(Err(e)) => Err(UpstreamError::Broken {
                url: url.clone(),
                why: source_chain(&e),
            }),
            Ok(Ok(r)) => Ok(r),
        };
        let response = match answer {
            Ok(r) => r,
            Err(e) => {
                pick.replica.fail(&e.to_string());
                return Err(e);
            }
        };
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            let e = UpstreamError::Status {
                url,
                status: status.as_u16(),
                message: kind::error_message(&body),
            };
            if e.blames_replica() {
                pick.replica.fail(&e.to_string());
            }
            pick.replica.observe(started.elapsed());
            return Err(e);
        }
        Ok(TextStream {
            body: Some(response.into_body()),
            ended: false,
            reader,
            queued: std::collections::VecDeque::new(),
            pick,
            started,
            deadline: tokio::time::Instant::from_std(started + self.total),
            total_ms: self.total.as_millis() as u64,
            finished: false,
        })
    }

    /// Asks every replica's health endpoint when `health_interval_ms` has passed
    /// since the last round (called often by the server's health task; a round already
    /// running is not started twice): a 200 re-admits an ejected replica, anything else
    /// ejects a replica (or keeps it out).
    pub async fn health_tick(&self) {
        {
            let Ok(mut last) = self.last_check.lock() else {
                return;
            };
            if last.is_some_and(|t| t.elapsed() < self.health_every) {
                return;
            }
            *last = Some(Instant::now());
        }
        let checks = self.pool.replicas().iter().map(|replica| async move {
            match self.check(&replica.url).await {
                Ok(()) => replica.succeed(),
                // A failed check keeps an ejected replica out (its back-off grows),
                // so requests do not try it while it is down.
                Err(why) => replica.fail(&why),
            }
        });
        futures_util::future::join_all(checks).await;
        if let Ok(mut last) = self.last_check.lock() {
            *last = Some(Instant::now());
        }
    }

    /// One health check of the replica at `url`.
    async fn check(&self, url: &str) -> Result<(), String> {
        let mut builder = hyper::Request::get(format!("{url}{}", self.wire.kind.health_path()));
        if let Some(a) = &self.authorization {
            builder = builder.header("authorization", a);
        }
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(2), self.client.request(request)).await {
            Err(_) => Err("health check timed out".into()),
            Ok(Err(e)) => Err(format!("health check failed: {}", source_chain(&e))),
            Ok(Ok(r)) if r.status().is_success() => {
                // Read the (small) body so the connection can be reused.
                let _ = tokio::time::timeout(Duration::from_secs(2), r.into_body().collect()).await;
                Ok(())
            }
            Ok(Ok(r)) => Err(format!("health check answered {}", r.status())),
        }
    }
}

/// An error and its causes on one line.
fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A generation streaming from a replica. Dropping it before the end closes the
/// connection, which ends the generation upstream (llama.cpp server and vLLM stop a
/// request whose client went away).
pub struct TextStream {
    /// The answer's body; taken by [`Drop`] to be read to its end after a clean end.
    body: Option<Incoming>,
    /// Whether the upstream's end ([`Delta::Done`]) was read.
    ended: bool,
    reader: StreamReader,
    queued: std::collections::VecDeque<Delta>,
    pick: Pick,
    started: Instant,
    deadline: tokio::time::Instant,
    total_ms: u64,
    finished: bool,
}

impl std::fmt::Debug for TextStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextStream")
            .field("replica", &self.pick.replica.url)
            .finish()
    }
}

impl TextStream {
    /// The replica serving it.
    pub fn replica(&self) -> &str {
        &self.pick.replica.url
    }

    /// The next piece of the answer; `None` after [`Delta::Done`].
    pub async fn next(&mut self) -> Option<Result<Delta, UpstreamError>> {
        loop {
            if let Some(d) = self.queued.pop_front() {
                if matches!(d, Delta::Done(_)) {
                    self.finished = true;
                    self.ended = true;
                    self.pick.replica.succeed();
                    self.pick.replica.observe(self.started.elapsed());
                }
                return Some(Ok(d));
            }
            if self.finished {
                return None;
            }
            let body = self.body.as_mut()?;
            let frame = match tokio::time::timeout_at(self.deadline, body.frame()).await {
                Err(_) => {
                    return Some(Err(self.broke(UpstreamError::Timeout {
                        url: self.pick.replica.url.clone(),
                        ms: self.total_ms,
                    })));
                }
                Ok(f) => f,
            };
            let parsed = match frame {
                None => {
                    // The body ended: what is left, then an end the upstream did not
                    // send is a broken answer.
                    match self.reader.finish() {
                        Ok(d) if !d.is_empty() => Ok(d),
                        Ok(_) if self.reader.is_done() => Ok(Vec::new()),
                        Ok(_) => Err(StreamError::Malformed(
                            "the answer ended before its last event".into(),
                        )),
                        Err(e) => Err(e),
                    }
                }
                Some(Err(e)) => {
                    return Some(Err(self.broke(UpstreamError::Broken {
                        url: self.pick.replica.url.clone(),
                        why: source_chain(&e),
                    })));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.reader.push(&data),
                    Err(_) => Ok(Vec::new()),
                },
            };
            match parsed {
                Ok(deltas) => {
                    if deltas.is_empty() && self.reader.is_done() && self.queued.is_empty() {
                        self.finished = true;
                        return None;
                    }
                    self.queued.extend(deltas);
                }
                Err(e) => {
                    return Some(Err(self.broke(UpstreamError::Broken {
                        url: self.pick.replica.url.clone(),
                        why: e.to_string(),
                    })));
                }
            }
        }
    }

    /// Records a failure that ended the stream (its connection is closed, not reused).
    fn broke(&mut self, e: UpstreamError) -> UpstreamError {
        self.finished = true;
        if e.blames_replica() {
            self.pick.replica.fail(&e.to_string());
        }
        self.pick.replica.observe(self.started.elapsed());
        e
    }

    /// Reads the whole answer: the text and how it ended.
    pub async fn collect(mut self) -> Result<(String, kind::End), UpstreamError> {
        let mut text = String::new();
        let mut end = None;
        while let Some(d) = self.next().await {
            match d? {
                Delta::Text(t) => text.push_str(&t),
                Delta::Chunk(c) => {
                    if let Some(t) = c["delta"]["content"].as_str() {
                        text.push_str(t);
                    }
                }
                Delta::Done(e) => end = Some(e),
            }
        }
        let end = end.ok_or_else(|| UpstreamError::Broken {
            url: self.pick.replica.url.clone(),
            why: "the answer ended without its end".into(),
        })?;
        Ok((text, end))
    }
}

impl Drop for TextStream {
    /// A stream dropped before its end closes the connection, which stops the upstream
    /// generating. After a clean end, what is left of the body (the chunked encoding's
    /// last chunk) is read in the background, so the connection goes back to the pool
    /// and the next request to the replica skips the TCP handshake.
    fn drop(&mut self) {
        let Some(mut body) = self.body.take() else {
            return;
        };
        if !self.ended || hyper::body::Body::is_end_stream(&body) {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
            });
        }
    }
}

/// One metric of [`render_metrics`]: name, type, help and its value for a replica.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&pool::Replica, &pool::ReplicaCounters) -> f64,
);

/// The Prometheus text of `backends` (model id, backend): per replica, requests,
/// errors, ejections, requests in flight, health and the latency histogram.
pub fn render_metrics(backends: &[(&str, &Upstream)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if backends.is_empty() {
        return out;
    }
    let rows: Vec<(&str, &pool::Replica, pool::ReplicaCounters)> = backends
        .iter()
        .flat_map(|(model, up)| {
            up.pool
                .replicas()
                .iter()
                .map(move |r| (*model, r.as_ref(), r.counters()))
        })
        .collect();
    let series: [Series; 5] = [
        (
            "souffleur_backend_requests_total",
            "counter",
            "Requests a replica answered.",
            |_, c| c.requests as f64,
        ),
        (
            "souffleur_backend_errors_total",
            "counter",
            "Connection errors, timeouts and 5xx of a replica.",
            |_, c| c.errors as f64,
        ),
        (
            "souffleur_backend_ejections_total",
            "counter",
            "Times a replica was taken out of rotation.",
            |_, c| c.ejections as f64,
        ),
        (
            "souffleur_backend_in_flight",
            "gauge",
            "Requests on a replica now.",
            |_, c| c.in_flight as f64,
        ),
        (
            "souffleur_backend_healthy",
            "gauge",
            "1 when a replica takes requests.",
            |r, _| f64::from(u8::from(r.state() == pool::ReplicaState::Healthy)),
        ),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (model, replica, c) in &rows {
            let _ = writeln!(
                out,
                "{name}{{model=\"{model}\",replica=\"{}\"}} {}",
                replica.url,
                value(replica, c)
            );
        }
    }
    let name = "souffleur_backend_request_duration_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from sending a request to a replica to the answer's end.\n# TYPE {name} histogram"
    );
    for (model, replica, c) in &rows {
        let labels = format!("model=\"{model}\",replica=\"{}\"", replica.url);
        let mut cumulative = 0;
        for (i, le) in pool::LATENCY_BUCKETS.iter().enumerate() {
            cumulative += c.latency.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", c.requests);
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", c.latency_sum_secs);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", c.requests);
    }
    out
}

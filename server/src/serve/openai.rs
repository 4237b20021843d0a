//! OpenAI-compatible endpoints: legacy completions, chat completions (with
//! server-sent events when `stream` is set) and the model list.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::{CancelToken, GenerationEvent, GenerationRequest, Model, SamplingParams};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::error::{ApiError, parse_json};
use super::generate::{self, Running};
use super::state::{AppState, Caller};
use super::{AuditInfo, AuditSlot};

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

impl Stop {
    fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// `prompt`: text, one text in a list, or token ids.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: bool,
}

/// Sampling and length fields shared by both request kinds.
#[derive(Debug, Deserialize)]
struct Common {
    model: Option<String>,
    max_tokens: Option<usize>,
    max_completion_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<usize>,
    seed: Option<u64>,
    stop: Option<Stop>,
    #[serde(default)]
    stream: bool,
    stream_options: Option<StreamOptions>,
    n: Option<usize>,
    /// Souffleur extension: `off`, `ngram` or `ngram:K` for this request.
    speculation: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LegacyRequest {
    prompt: Prompt,
    suffix: Option<String>,
    #[serde(default)]
    echo: bool,
    #[serde(flatten)]
    common: Common,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Debug, Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks limits and turns the shared fields into a generation request.
fn generation(
    state: &AppState,
    prompt: Vec<u32>,
    common: Common,
    default_max: usize,
) -> Result<(GenerationRequest, bool, bool), ApiError> {
    state.check_model(common.model.as_deref())?;
    if common.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unprocessable("only `n: 1` is supported"));
    }
    let limits = &state.config.limits;
    if prompt.len() > limits.max_prompt_tokens {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the prompt has {} tokens; this server accepts at most {}",
                prompt.len(),
                limits.max_prompt_tokens
            ),
        ));
    }
    let max_tokens = common
        .max_completion_tokens
        .or(common.max_tokens)
        .unwrap_or(default_max.min(limits.max_tokens));
    if max_tokens > limits.max_tokens {
        return Err(ApiError::unprocessable(format!(
            "`max_tokens` is {max_tokens}; this server allows at most {}",
            limits.max_tokens
        )));
    }
    let temperature = common.temperature.unwrap_or(1.0);
    super::check_temperature(temperature)?;
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::unprocessable("`top_p` must be in (0, 1]"));
    }
    let stop = common.stop.map(Stop::into_vec).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::unprocessable(
            "`stop` takes at most 4 non-empty sequences",
        ));
    }
    let include_usage = common.stream_options.is_some_and(|o| o.include_usage);
    let request = GenerationRequest {
        prompt,
        max_new_tokens: max_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: common.top_k.unwrap_or(0),
            top_p,
            seed: common.seed.unwrap_or(0),
        },
        stop,
        cancel: CancelToken::new(),
        speculation: super::request_speculation(state, common.speculation.as_deref())?,
        stop_rule: None,
        hint: Vec::new(),
    };
    Ok((request, common.stream, include_usage))
}

/// OpenAI's legacy `POST /v1/completions` (called by the shared handler).
pub async fn legacy_completions(
    state: Arc<AppState>,
    permit: OwnedSemaphorePermit,
    audit: AuditSlot,
    value: Value,
) -> Result<Response, ApiError> {
    let req: LegacyRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::unprocessable(format!("invalid completions request: {e}")))?;
    if req.echo {
        return Err(ApiError::unprocessable("`echo` is not supported"));
    }
    check_common(&state, &req.common)?;
    let (text, prompt) = match req.prompt {
        Prompt::Text(t) => (t.clone(), None),
        Prompt::Texts(v) if v.len() == 1 => (v[0].clone(), None),
        Prompt::Texts(_) => {
            return Err(ApiError::unprocessable(
                "`prompt` as a list takes exactly one string",
            ));
        }
        Prompt::Tokens(ids) => (String::new(), Some(ids)),
    };
    let suffix = req.suffix.unwrap_or_default();
    let prompt = match prompt {
        Some(ids) => ids,
        None => {
            let texts = [text.as_str(), suffix.as_str()];
            let (text, suffix) = (text.clone(), suffix.clone());
            tokenize(&state, &texts, move |model| {
                model.completion_prompt(&text, &suffix)
            })
            .await?
        }
    };
    let (request, stream, include_usage) = generation(&state, prompt, req.common, 16)?;
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(&state.engine, request)?;
    let id = state.new_id("cmpl");
    let model_id = state.model.id.clone();
    let created = now();
    if stream {
        let chunk = move |text: &str, finish: Option<&str>| {
            json!({"id": id, "object": "text_completion", "created": created, "model": model_id,
                   "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
        };
        audit.update(|a| {
            a.prompt = Some(text);
            a.prompt_tokens = Some(prompt_len);
        });
        return Ok(sse(running, permit, include_usage, chunk, None, audit));
    }
    let out = running.collect().await?;
    drop(permit);
    let mut response = Json(json!({
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model_id,
        "choices": [{"index": 0, "text": out.text, "logprobs": null,
                     "finish_reason": out.stats.finish_reason.as_str()}],
        "usage": usage(out.stats.prompt_tokens, out.stats.generated_tokens),
    }))
    .into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(text),
        completion: Some(out.text),
    });
    Ok(response)
}

/// Checks what can be checked before any tokenizing: the model and the sampling values.
fn check_common(state: &AppState, common: &Common) -> Result<(), ApiError> {
    state.check_model(common.model.as_deref())?;
    if let Some(t) = common.temperature {
        super::check_temperature(t)?;
    }
    Ok(())
}

/// Runs `f` (which tokenizes `texts`) on a blocking thread, after refusing text over
/// the character limit and taking a share of the server's tokenizing budget.
async fn tokenize<F>(state: &Arc<AppState>, texts: &[&str], f: F) -> Result<Vec<u32>, ApiError>
where
    F: FnOnce(&Model) -> engine::Result<Vec<u32>> + Send + 'static,
{
    let limit = state.config.limits.prompt_chars();
    let chars: usize = texts.iter().map(|t| t.chars().count()).sum();
    if chars > limit {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the prompt has {chars} characters; this server accepts at most {limit} (`limits.max_prompt_chars`)"
            ),
        ));
    }
    let bytes = texts.iter().map(|t| t.len()).sum();
    let slot = state.tokenizing_slot(bytes).await?;
    let model = state.engine.model().clone();
    let ids = tokio::task::spawn_blocking(move || f(&model))
        .await
        .map_err(|_| ApiError::internal("the tokenizer task failed"))??;
    drop(slot);
    Ok(ids)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// Renders a chat as the model's prompt: ChatML where the vocabulary has its
/// markers (SmolLM2, Qwen), otherwise a plain transcript.
pub fn chat_prompt(model: &Model, messages: &[(String, String)]) -> engine::Result<Vec<u32>> {
    let tok = model.tokenizer();
    let mut ids = Vec::new();
    if let (Some(start), Some(end)) = (tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")) {
        for (role, content) in messages {
            ids.push(start);
            ids.extend(tok.encode(&format!("{role}\n{content}"))?);
            ids.push(end);
            ids.extend(tok.encode("\n")?);
        }
        ids.push(start);
        ids.extend(tok.encode("assistant\n")?);
    } else {
        ids.extend(tok.bos().filter(|_| tok.add_bos()));
        let mut text = String::new();
        for (role, content) in messages {
            text.push_str(&format!("{role}: {content}\n\n"));
        }
        text.push_str("assistant:");
        ids.extend(tok.encode(&text)?);
    }
    Ok(ids)
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let permit = state.admit(&caller)?;
    let req: ChatRequest = parse_json(&body)?;
    check_common(&state, &req.common)?;
    if req.messages.is_empty() {
        return Err(ApiError::unprocessable("`messages` must not be empty"));
    }
    let mut messages = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::unprocessable(format!(
                "unknown message role `{}`",
                m.role
            )));
        }
        let content = match &m.content {
            None => String::new(),
            Some(Content::Text(t)) => t.clone(),
            Some(Content::Parts(parts)) => {
                let mut text = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::unprocessable(format!(
                            "content part type `{}` is not supported (text only)",
                            p.kind
                        )));
                    }
                    text.push_str(p.text.as_deref().unwrap_or(""));
                }
                text
            }
        };
        let role = if m.role == "developer" {
            "system"
        } else {
            m.role.as_str()
        };
        messages.push((role.to_string(), content));
    }
    let model = state.engine.model().clone();
    let texts: Vec<&str> = messages.iter().map(|(_, c)| c.as_str()).collect();
    let rendered = messages.clone();
    let prompt = tokenize(&state, &texts, move |model| chat_prompt(model, &rendered)).await?;
    let (mut request, stream, include_usage) = generation(&state, prompt, req.common, 256)?;
    if model.tokenizer().token_id("<|im_end|>").is_none() {
        request.stop.push("\nuser:".into());
    }
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(&state.engine, request)?;
    let id = state.new_id("chatcmpl");
    let model_id = state.model.id.clone();
    let created = now();
    if stream {
        let first = json!({"id": id, "object": "chat.completion.chunk", "created": created,
            "model": model_id, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
            "finish_reason": null}]});
        let chunk = move |text: &str, finish: Option<&str>| {
            let delta = if finish.is_some() {
                json!({})
            } else {
                json!({"content": text})
            };
            json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model_id,
                   "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        };
        audit.update(|a| {
            a.prompt = Some(transcript(&messages));
            a.prompt_tokens = Some(prompt_len);
        });
        return Ok(sse(
            running,
            permit,
            include_usage,
            chunk,
            Some(first),
            audit,
        ));
    }
    let out = running.collect().await?;
    drop(permit);
    let mut response = Json(json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": out.text},
                     "finish_reason": out.stats.finish_reason.as_str()}],
        "usage": usage(out.stats.prompt_tokens, out.stats.generated_tokens),
    }))
    .into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(transcript(&messages)),
        completion: Some(out.text),
    });
    Ok(response)
}

/// A chat as one text, for the audit log.
fn transcript(messages: &[(String, String)]) -> String {
    messages
        .iter()
        .map(|(r, c)| format!("{r}: {c}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Streams a generation as server-sent events ending with `data: [DONE]`; dropping
/// the stream (client gone) cancels the generation.
fn sse<F>(
    running: Running,
    permit: tokio::sync::OwnedSemaphorePermit,
    include_usage: bool,
    chunk: F,
    first: Option<Value>,
    audit: AuditSlot,
) -> Response
where
    F: Fn(&str, Option<&str>) -> Value + Send + Sync + 'static,
{
    let head =
        stream::iter(first.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))));
    let chunk = Arc::new(chunk);
    let body = stream::unfold(
        (running, Some(permit), false, StreamTally::new(audit)),
        move |(mut running, permit, done, mut tally)| {
            let chunk = chunk.clone();
            async move {
                if done {
                    return None;
                }
                let event = running.events.recv().await;
                let (data, finished) = match event {
                    Some(GenerationEvent::Text { text, tokens }) => {
                        tally.text.push_str(&text);
                        tally.generated += tokens.len();
                        (vec![chunk(&text, None)], false)
                    }
                    Some(GenerationEvent::Finished(stats)) => {
                        tally.finished(&stats);
                        let mut last = chunk("", Some(stats.finish_reason.as_str()));
                        let mut v = Vec::new();
                        if include_usage {
                            last["usage"] = usage(stats.prompt_tokens, stats.generated_tokens);
                        }
                        v.push(last);
                        (v, true)
                    }
                    Some(GenerationEvent::Failed(e)) => {
                        (vec![json!({"error": {"message": e.to_string(), "type": "server_error"}})], true)
                    }
                    None => (
                        vec![json!({"error": {"message": "the engine stopped", "type": "server_error"}})],
                        true,
                    ),
                };
                let mut events: Vec<Result<Event, Infallible>> = data
                    .into_iter()
                    .map(|d| Ok(Event::default().data(d.to_string())))
                    .collect();
                let permit = if finished {
                    events.push(Ok(Event::default().data("[DONE]")));
                    drop(permit);
                    None
                } else {
                    permit
                };
                Some((stream::iter(events), (running, permit, finished, tally)))
            }
        },
    )
    .flatten();
    let events: std::pin::Pin<Box<dyn Stream<Item = Result<Event, Infallible>> + Send>> =
        Box::pin(head.chain(body));
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// What a stream has sent so far; written to the request's audit slot when the stream
/// ends or is dropped (a client that leaves mid-stream still gets its counts logged).
struct StreamTally {
    audit: AuditSlot,
    prompt_tokens: Option<usize>,
    generated: usize,
    text: String,
}

impl StreamTally {
    fn new(audit: AuditSlot) -> Self {
        Self {
            audit,
            prompt_tokens: None,
            generated: 0,
            text: String::new(),
        }
    }

    fn finished(&mut self, stats: &engine::GenerationStats) {
        self.prompt_tokens = Some(stats.prompt_tokens);
        self.generated = stats.generated_tokens;
    }
}

impl Drop for StreamTally {
    fn drop(&mut self) {
        let (prompt, generated) = (self.prompt_tokens, self.generated);
        let text = std::mem::take(&mut self.text);
        self.audit.update(|a| {
            a.prompt_tokens = prompt.map(|n| n as i64).or(a.prompt_tokens);
            a.completion_tokens = Some(generated as i64);
            a.completion = Some(text);
        });
    }
}

/// `GET /v1/models`
pub async fn models(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let info = state.engine.model().info();
    Ok(Json(json!({
        "object": "list",
        "data": [{
            "id": state.model.id,
            "object": "model",
            "created": state.model.loaded_at,
            "owned_by": "souffleur",
            "sha256": state.model.sha256,
            "format": format!("{:?}", info.format),
            "context_length": info.config.context_length,
            "fim": info.fim.name(),
        }]
    })))
}

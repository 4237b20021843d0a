//! OpenAI-compatible endpoints: legacy completions, chat completions (with
//! server-sent events when `stream` is set) and the model list.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::{CancelToken, GenerationEvent, GenerationRequest, Model, SamplingParams};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AuditInfo;
use super::error::{ApiError, parse_json};
use super::generate::{self, Running};
use super::state::{AppState, Caller};

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
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::unprocessable(
            "`temperature` must be between 0 and 2",
        ));
    }
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
    };
    Ok((request, common.stream, include_usage))
}

/// OpenAI's legacy `POST /v1/completions` (called by the shared handler).
pub async fn legacy_completions(
    state: Arc<AppState>,
    caller: Caller,
    value: Value,
) -> Result<Response, ApiError> {
    let req: LegacyRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::unprocessable(format!("invalid completions request: {e}")))?;
    if req.echo {
        return Err(ApiError::unprocessable("`echo` is not supported"));
    }
    let model = state.engine.model().clone();
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
    let prompt = match prompt {
        Some(ids) => ids,
        None => model.completion_prompt(&text, req.suffix.as_deref().unwrap_or(""))?,
    };
    let (request, stream, include_usage) = generation(&state, prompt, req.common, 16)?;
    let permit = state.admit(&caller)?;
    let running = generate::start(&state.engine, request)?;
    let id = state.new_id("cmpl");
    let model_id = state.model.id.clone();
    let created = now();
    if stream {
        let chunk = move |text: &str, finish: Option<&str>| {
            json!({"id": id, "object": "text_completion", "created": created, "model": model_id,
                   "choices": [{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]})
        };
        return Ok(sse(running, permit, include_usage, chunk, None));
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
        caller: Some(caller.name),
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(text),
        completion: Some(out.text),
    });
    Ok(response)
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
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = state.authenticate(&headers)?;
    let req: ChatRequest = parse_json(&body)?;
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
    let prompt = chat_prompt(&model, &messages)?;
    let (mut request, stream, include_usage) = generation(&state, prompt, req.common, 256)?;
    if model.tokenizer().token_id("<|im_end|>").is_none() {
        request.stop.push("\nuser:".into());
    }
    let permit = state.admit(&caller)?;
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
        return Ok(sse(running, permit, include_usage, chunk, Some(first)));
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
        caller: Some(caller.name),
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(
            messages
                .iter()
                .map(|(r, c)| format!("{r}: {c}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        completion: Some(out.text),
    });
    Ok(response)
}

/// Streams a generation as server-sent events ending with `data: [DONE]`; dropping
/// the stream (client gone) cancels the generation.
fn sse<F>(
    running: Running,
    permit: tokio::sync::OwnedSemaphorePermit,
    include_usage: bool,
    chunk: F,
    first: Option<Value>,
) -> Response
where
    F: Fn(&str, Option<&str>) -> Value + Send + Sync + 'static,
{
    let head =
        stream::iter(first.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))));
    let chunk = Arc::new(chunk);
    let body = stream::unfold(
        (running, Some(permit), false),
        move |(mut running, permit, done)| {
            let chunk = chunk.clone();
            async move {
                if done {
                    return None;
                }
                let event = running.events.recv().await;
                let (data, finished) = match event {
                    Some(GenerationEvent::Text { text, .. }) => (vec![chunk(&text, None)], false),
                    Some(GenerationEvent::Finished(stats)) => {
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
                Some((stream::iter(events), (running, permit, finished)))
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

/// `GET /v1/models`
pub async fn models(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authenticate(&headers)?;
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

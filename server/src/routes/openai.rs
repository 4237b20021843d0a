//! OpenAI-compatible endpoints: legacy completions, chat completions (with
//! server-sent events when `stream` is set) and the model list.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::{CancelToken, GenerationEvent, GenerationRequest, Model, SamplingParams};
use futures_util::stream::{self, Stream, StreamExt};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::completion::generate::{self, Running};
use crate::config::ModelRole;
use crate::error::{ApiError, JsonBody};
use crate::http::gate::Slot;
use crate::http::observe::{AuditInfo, AuditSlot};
use crate::models::{ModelLease, ServedModel};
use crate::routes::openai_fields::{self, Endpoint};
use crate::state::{AppState, Caller};

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
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    /// vLLM's extension (multiplicative, over prompt and output; 1 is off).
    repetition_penalty: Option<f32>,
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

/// One message of a chat. Fields are checked: tool calls in an assistant turn would
/// be dropped by this server, so they are refused rather than ignored.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// A participant's name: the chat templates do not render it; harmless.
    #[allow(dead_code)]
    name: Option<String>,
    /// The call a `tool` message answers (templates render the content only).
    #[allow(dead_code)]
    tool_call_id: Option<String>,
    /// Tool calls of an assistant turn: only an empty list is accepted.
    tool_calls: Option<Vec<Value>>,
    /// An assistant turn's refusal text: only `null` is accepted.
    refusal: Option<String>,
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

/// OpenAI's chat completions request.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    common: Common,
}

/// What every object of one answer carries: its id, the model, the creation time and
/// `system_fingerprint` (from the model's SHA-256: the same fingerprint, the same
/// weights).
#[derive(Clone)]
struct Head {
    id: String,
    model: String,
    created: u64,
    fingerprint: String,
}

impl Head {
    fn new(state: &AppState, model: &ServedModel, kind: &str) -> Self {
        Self {
            id: state.new_id(kind),
            model: model.id.clone(),
            created: now(),
            fingerprint: format!("fp_{}", model.sha256.get(..12).unwrap_or(&model.sha256)),
        }
    }

    /// OpenAI's envelope of `object` around `choices`.
    fn object(&self, object: &str, choices: Value) -> Value {
        json!({"id": self.id, "object": object, "created": self.created, "model": self.model,
               "system_fingerprint": self.fingerprint, "choices": choices})
    }
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
    model: &ServedModel,
    prompt: Vec<u32>,
    common: Common,
    default_max: usize,
) -> Result<(GenerationRequest, bool, bool), ApiError> {
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
    crate::routes::check_temperature(temperature)?;
    let top_p = common.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::unprocessable("`top_p` must be in (0, 1]"));
    }
    let penalties = penalties(&common)?;
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
            penalties,
        },
        stop,
        cancel: CancelToken::new(),
        speculation: crate::routes::request_speculation(model, common.speculation.as_deref())?,
        stop_rule: None,
        hint: Vec::new(),
    };
    Ok((request, common.stream, include_usage))
}

/// The request's penalties, each checked against its range (OpenAI's for presence
/// and frequency, vLLM's for repetition).
fn penalties(common: &Common) -> Result<engine::Penalties, ApiError> {
    let mut p = engine::Penalties::NONE;
    for (name, value, slot) in [
        ("presence_penalty", common.presence_penalty, &mut p.presence),
        (
            "frequency_penalty",
            common.frequency_penalty,
            &mut p.frequency,
        ),
    ] {
        if let Some(v) = value {
            if !(-2.0..=2.0).contains(&v) {
                return Err(
                    ApiError::unprocessable(format!("`{name}` must be between -2 and 2"))
                        .with_param(name),
                );
            }
            *slot = v;
        }
    }
    if let Some(v) = common.repetition_penalty {
        if !(v.is_finite() && v > 0.0 && v <= 10.0) {
            return Err(
                ApiError::unprocessable("`repetition_penalty` must be in (0, 10]")
                    .with_param("repetition_penalty"),
            );
        }
        p.repetition = v;
    }
    Ok(p)
}

/// OpenAI's legacy `POST /v1/completions` (called by the shared handler).
pub async fn legacy_completions(
    state: Arc<AppState>,
    permit: OwnedSemaphorePermit,
    audit: AuditSlot,
    value: Value,
) -> Result<Response, ApiError> {
    if let Some(fields) = value.as_object() {
        openai_fields::check(Endpoint::Legacy, fields)?;
    }
    let req: LegacyRequest = serde_json::from_value(value)
        .map_err(|e| ApiError::unprocessable(format!("invalid completions request: {e}")))?;
    if req.echo {
        return Err(ApiError::unprocessable("`echo` is not supported"));
    }
    check_common(&req.common)?;
    let lease = state
        .lease(ModelRole::Completion, req.common.model.as_deref(), &audit)
        .await?;
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
            tokenize(&state, &lease, &texts, move |model| {
                model.completion_prompt(&text, &suffix)
            })
            .await?
        }
    };
    let (request, stream, include_usage) =
        generation(&state, &lease.model, prompt, req.common, 16)?;
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(&lease.engine, request)?;
    let head = Head::new(&state, &lease.model, "cmpl");
    if stream {
        let chunk_head = head.clone();
        let chunk = move |text: &str, finish: Option<&str>| {
            chunk_head.object(
                "text_completion",
                json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}]),
            )
        };
        audit.update(|a| {
            a.prompt = Some(text);
            a.prompt_tokens = Some(prompt_len);
        });
        return Ok(sse(
            running,
            (permit, lease),
            include_usage.then(|| head.clone()),
            chunk,
            None,
            audit,
        ));
    }
    let out = running.collect().await?;
    drop((permit, lease));
    let choice = json!({"index": 0, "text": out.text, "logprobs": null});
    Ok(answered(&head, "text_completion", choice, out, text))
}

/// Checks what can be checked before any model is chosen: the sampling values.
fn check_common(common: &Common) -> Result<(), ApiError> {
    if let Some(t) = common.temperature {
        crate::routes::check_temperature(t)?;
    }
    Ok(())
}

/// Runs `f` (which tokenizes `texts`) on a blocking thread, after refusing text over
/// the character limit and taking a share of the server's tokenizing budget.
async fn tokenize<F>(
    state: &Arc<AppState>,
    lease: &ModelLease,
    texts: &[&str],
    f: F,
) -> Result<Vec<u32>, ApiError>
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
    let model = lease.engine.model().clone();
    let ids = tokio::task::spawn_blocking(move || f(&model))
        .await
        .map_err(|_| ApiError::internal("the tokenizer task failed"))??;
    drop(slot);
    Ok(ids)
}

fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    Slot(permit): Slot,
    JsonBody(body): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::unprocessable(
            "a chat completions request is a JSON object",
        ));
    };
    openai_fields::check(Endpoint::Chat, fields)?;
    let req: ChatRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(format!("invalid chat completions request: {e}")))?;
    check_common(&req.common)?;
    let messages = chat_messages(&req.messages)?;
    let lease = state
        .lease(ModelRole::Chat, req.common.model.as_deref(), &audit)
        .await?;
    let model = lease.engine.model().clone();
    let texts: Vec<&str> = messages.iter().map(|(_, c)| c.as_str()).collect();
    let rendered = messages.clone();
    let prompt = tokenize(&state, &lease, &texts, move |model| {
        let turns: Vec<engine::Turn<'_>> = rendered
            .iter()
            .map(|(role, content)| engine::Turn { role, content })
            .collect();
        model.chat_prompt(&turns, "")
    })
    .await?;
    let (mut request, stream, include_usage) =
        generation(&state, &lease.model, prompt, req.common, 256)?;
    if model.tokenizer().token_id("<|im_end|>").is_none() {
        request.stop.push("\nuser:".into());
    }
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(&lease.engine, request)?;
    let head = Head::new(&state, &lease.model, "chatcmpl");
    if stream {
        audit.update(|a| {
            a.prompt = Some(transcript(&messages));
            a.prompt_tokens = Some(prompt_len);
        });
        let (first, chunk) = chat_chunks(head.clone());
        return Ok(sse(
            running,
            (permit, lease),
            include_usage.then_some(head),
            chunk,
            Some(first),
            audit,
        ));
    }
    let out = running.collect().await?;
    drop((permit, lease));
    let choice = json!({"index": 0, "message": {"role": "assistant", "content": out.text}});
    Ok(answered(
        &head,
        "chat.completion",
        choice,
        out,
        transcript(&messages),
    ))
}

/// A finished (not streamed) answer: OpenAI's body around `choice` (with the finish
/// reason and usage added) and the audit information for `prompt`.
fn answered(
    head: &Head,
    object: &str,
    mut choice: Value,
    out: engine::Generation,
    prompt: String,
) -> Response {
    choice["finish_reason"] = json!(out.stats.finish_reason.as_str());
    let mut body = head.object(object, json!([choice]));
    body["usage"] = usage(out.stats.prompt_tokens, out.stats.generated_tokens);
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(prompt),
        completion: Some(out.text),
        ..Default::default()
    });
    response
}

/// The chat's messages as (role, text): known roles only (`developer` is `system`),
/// text content parts only.
fn chat_messages(sent: &[ChatMessage]) -> Result<Vec<(String, String)>, ApiError> {
    if sent.is_empty() {
        return Err(ApiError::unprocessable("`messages` must not be empty"));
    }
    let mut messages = Vec::with_capacity(sent.len());
    for m in sent {
        if !matches!(
            m.role.as_str(),
            "system" | "developer" | "user" | "assistant" | "tool"
        ) {
            return Err(ApiError::unprocessable(format!(
                "unknown message role `{}`",
                m.role
            )));
        }
        if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(ApiError::unprocessable(
                "`tool_calls` in messages are not supported by this server (tool calling is not implemented)",
            )
            .with_param("messages"));
        }
        if m.refusal.is_some() {
            return Err(ApiError::unprocessable(
                "`refusal` in messages is not supported by this server",
            )
            .with_param("messages"));
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
    Ok(messages)
}

/// The first chunk of a streamed chat (the assistant's role) and the function that
/// makes the following ones (a text delta, or the end with its finish reason).
fn chat_chunks(
    head: Head,
) -> (
    Value,
    impl Fn(&str, Option<&str>) -> Value + Send + Sync + 'static,
) {
    const CHUNK: &str = "chat.completion.chunk";
    let first = head.object(
        CHUNK,
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    );
    let chunk = move |text: &str, finish: Option<&str>| {
        let delta = if finish.is_some() {
            json!({})
        } else {
            json!({"content": text})
        };
        head.object(
            CHUNK,
            json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
        )
    };
    (first, chunk)
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
/// the stream (client gone) cancels the generation. `held` (the caller's slot, the
/// model's lease) is released when the stream ends. With `usage` (OpenAI's
/// `stream_options.include_usage`) the last chunk before `[DONE]` has no choices and
/// carries the token counts, as OpenAI sends it.
fn sse<F, H>(
    running: Running,
    held: H,
    usage: Option<Head>,
    chunk: F,
    first: Option<Value>,
    audit: AuditSlot,
) -> Response
where
    F: Fn(&str, Option<&str>) -> Value + Send + Sync + 'static,
    H: Send + 'static,
{
    let head =
        stream::iter(first.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))));
    let chunk = Arc::new(chunk);
    let body = stream::unfold(
        (running, Some(held), false, StreamTally::new(audit)),
        move |(mut running, held, done, mut tally)| {
            let chunk = chunk.clone();
            let usage = usage.clone();
            async move {
                if done {
                    return None;
                }
                let event = running.events.recv().await;
                let (data, finished) = stream_data(event, &mut tally, &*chunk, usage.as_ref());
                let mut events: Vec<Result<Event, Infallible>> = data
                    .into_iter()
                    .map(|d| Ok(Event::default().data(d.to_string())))
                    .collect();
                let held = if finished {
                    events.push(Ok(Event::default().data("[DONE]")));
                    drop(held);
                    None
                } else {
                    held
                };
                Some((stream::iter(events), (running, held, finished, tally)))
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

/// The SSE data for one engine event (one chunk, or the last chunk and the usage
/// chunk), and whether it ends the stream.
fn stream_data(
    event: Option<GenerationEvent>,
    tally: &mut StreamTally,
    chunk: &dyn Fn(&str, Option<&str>) -> Value,
    usage_head: Option<&Head>,
) -> (Vec<Value>, bool) {
    let with_usage = |mut v: Value| {
        if usage_head.is_some() {
            v["usage"] = Value::Null;
        }
        v
    };
    match event {
        Some(GenerationEvent::Text { text, tokens }) => {
            tally.text.push_str(&text);
            tally.generated += tokens.len();
            (vec![with_usage(chunk(&text, None))], false)
        }
        Some(GenerationEvent::Finished(stats)) => {
            tally.finished(&stats);
            let mut data = vec![with_usage(chunk("", Some(stats.finish_reason.as_str())))];
            if let Some(head) = usage_head {
                let object = data[0]["object"].as_str().unwrap_or("").to_string();
                let mut counts = head.object(&object, json!([]));
                counts["usage"] = usage(stats.prompt_tokens, stats.generated_tokens);
                data.push(counts);
            }
            (data, true)
        }
        Some(GenerationEvent::Failed(e)) => {
            // Internal details go to the log, not to the client.
            tracing::error!(error = %e, "a streamed generation failed");
            let message = "the generation failed; the server's log has the details under this request's id (x-request-id)";
            (
                vec![json!({"error": {"message": message, "type": "server_error"}})],
                true,
            )
        }
        None => (
            vec![json!({"error": {"message": "the engine stopped", "type": "server_error"}})],
            true,
        ),
    }
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

/// `GET /v1/models/{id}`: one served model, as listed by `GET /v1/models`.
pub async fn model(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .model_set()
        .describe()
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                format!("model `{id}` not found; `GET /v1/models` lists the served models"),
            )
            .with_param("model")
        })
}

/// `GET /v1/models`: every served model with its roles, the roles it is the default
/// of, checksum, size, quantisation, context length, state and memory in use.
pub async fn models(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "object": "list",
        "data": state.model_set().describe(),
    })))
}

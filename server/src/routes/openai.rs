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
use engine::sampling::TokenLogprob;
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
use crate::routes::openai_remote;
use crate::routes::openai_tools::{self, CallReader, ParsedCall, Piece};
use crate::state::{AppState, Caller};
use crate::upstream::kind::{Extras, InfillRequest};

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
    /// How many alternatives to report with each token's log-probability (0..=5).
    logprobs: Option<usize>,
    #[serde(flatten)]
    common: Common,
}

/// One message of a chat. Every field is read or refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatMessage {
    role: String,
    content: Option<Content>,
    /// A participant's name: the chat templates do not render it; harmless.
    #[allow(dead_code)]
    name: Option<String>,
    /// The call a `tool` message answers (templates render the answers in order).
    #[allow(dead_code)]
    tool_call_id: Option<String>,
    /// Tool calls of an assistant turn, rendered by the model's template.
    tool_calls: Option<Vec<MessageToolCall>>,
    /// An assistant turn's refusal text: only `null` is accepted.
    refusal: Option<String>,
}

/// A tool call in an earlier assistant turn.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageToolCall {
    id: String,
    #[serde(rename = "type")]
    kind: Option<String>,
    function: MessageFunction,
}

/// The function and arguments (a JSON object in a string) of a [`MessageToolCall`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageFunction {
    name: String,
    arguments: String,
}

/// A checked message: role, text and the tools it called.
#[derive(Debug, Clone)]
struct Said {
    role: String,
    content: String,
    calls: Vec<engine::ToolCall>,
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
    tools: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    parallel_tool_calls: Option<bool>,
    response_format: Option<Value>,
    #[serde(default)]
    logprobs: bool,
    top_logprobs: Option<usize>,
    #[serde(flatten)]
    common: Common,
}

/// What every object of one answer carries: its id, the model, the creation time and
/// `system_fingerprint` (from the model's SHA-256: the same fingerprint, the same
/// weights; `null` for a model on a remote backend, whose weights Souffleur does not
/// see).
#[derive(Clone)]
pub struct Head {
    id: String,
    model: String,
    created: u64,
    fingerprint: Option<String>,
}

impl Head {
    /// The head of a new answer of `model`; `kind` prefixes the id.
    pub fn new(state: &AppState, model: &ServedModel, kind: &str) -> Self {
        Self {
            id: state.new_id(kind),
            model: model.id.clone(),
            created: now(),
            fingerprint: (!model.sha256.is_empty())
                .then(|| format!("fp_{}", model.sha256.get(..12).unwrap_or(&model.sha256))),
        }
    }

    /// OpenAI's envelope of `object` around `choices`.
    pub fn object(&self, object: &str, choices: Value) -> Value {
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
    model: Option<&ServedModel>,
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
        speculation: match model {
            Some(m) => crate::routes::request_speculation(m, common.speculation.as_deref())?,
            None => engine::Speculation::Off,
        },
        stop_rule: None,
        hint: Vec::new(),
        constraint: None,
        logprobs: None,
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
    caller: &Caller,
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
    if matches!(lease.backend, crate::models::Backend::Remote(_)) {
        return remote_legacy(&state, permit, audit, lease, req, caller.name.clone()).await;
    }
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
    let (mut request, stream, include_usage) =
        generation(&state, Some(&lease.model), prompt, req.common, 16)?;
    if let Some(n) = req.logprobs {
        if n > 5 {
            return Err(ApiError::unprocessable("`logprobs` is at most 5").with_param("logprobs"));
        }
        request.logprobs = Some(n);
    }
    let model = lease.engine()?.model().clone();
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(lease.engine()?, request)?;
    let head = Head::new(&state, &lease.model, "cmpl");
    if stream {
        let chunk_head = head.clone();
        let wanted = req.logprobs.is_some();
        let mut offset = 0;
        let chunk = move |text: &str, lps: &[TokenLogprob], finish: Option<&str>| {
            let logprobs = if wanted && finish.is_none() {
                legacy_logprobs(&model, lps, &mut offset)
            } else {
                Value::Null
            };
            vec![chunk_head.object(
                "text_completion",
                json!([{"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish}]),
            )]
        };
        audit.update(|a| {
            a.prompt = Some(text);
            a.prompt_tokens = Some(prompt_len);
        });
        return Ok(sse(
            running,
            (permit, lease),
            include_usage.then(|| head.clone()),
            Box::new(chunk),
            None,
            audit,
        ));
    }
    let out = running.collect().await?;
    drop((permit, lease));
    let logprobs = if req.logprobs.is_some() {
        legacy_logprobs(&model, &out.logprobs, &mut 0)
    } else {
        Value::Null
    };
    let choice = json!({"index": 0, "text": out.text, "logprobs": logprobs});
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
    let model = lease.engine()?.model().clone();
    let ids = tokio::task::spawn_blocking(move || f(&model))
        .await
        .map_err(|_| ApiError::internal("the tokenizer task failed"))??;
    drop(slot);
    Ok(ids)
}

/// OpenAI's `usage` object.
pub fn usage(prompt: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

/// `POST /v1/chat/completions`
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
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
    let sent = fields.clone();
    let mut req: ChatRequest = serde_json::from_value(body)
        .map_err(|e| ApiError::unprocessable(format!("invalid chat completions request: {e}")))?;
    check_common(&req.common)?;
    let mut messages = chat_messages(&req.messages)?;
    let tools = openai_tools::plan(
        req.tools.take(),
        req.tool_choice.as_ref(),
        req.parallel_tool_calls,
    )?;
    let answer = openai_tools::answer_schema(req.response_format.take())?;
    if let Some(instruction) = answer.as_ref().and_then(|a| a.instruction.clone()) {
        tell_the_system_turn(&mut messages, instruction);
    }
    let logprobs = chat_logprobs_wanted(req.logprobs, req.top_logprobs, tools.is_some())?;
    let lease = state
        .lease(ModelRole::Chat, req.common.model.as_deref(), &audit)
        .await?;
    if let crate::models::Backend::Remote(upstream) = &lease.backend {
        let upstream = upstream.clone();
        let chars = messages.iter().map(|m| m.content.chars().count()).sum();
        let (settings, stream, include_usage) = remote_limits(&state, chars, req.common)?;
        let ask = openai_remote::RemoteChat {
            max_tokens: settings.max_new_tokens,
            stream,
            include_usage,
            transcript: transcript(&messages),
            head: Head::new(&state, &lease.model, "chatcmpl"),
            caller: caller.name.clone(),
        };
        return openai_remote::chat(permit, audit, lease, upstream, sent, ask).await;
    }
    let model = lease.engine()?.model().clone();
    let uses_tools = tools.is_some() || messages.iter().any(|m| !m.calls.is_empty());
    if uses_tools && !model.supports_tools() {
        return Err(ApiError::unprocessable(format!(
            "`tools` need a model whose chat template has tool calling; model `{}` has none (Qwen2.5-Coder-Instruct has)",
            lease.model.id
        ))
        .with_param("tools"));
    }
    let texts: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
    let rendered = messages.clone();
    let specs = tools.as_ref().map(|t| t.specs.clone()).unwrap_or_default();
    let prompt = tokenize(&state, &lease, &texts, move |model| {
        let turns: Vec<engine::Turn<'_>> = rendered
            .iter()
            .map(|m| engine::Turn {
                role: &m.role,
                content: &m.content,
                tool_calls: &m.calls,
            })
            .collect();
        model.chat_prompt_with_tools(&turns, &specs, "")
    })
    .await?;
    let (mut request, stream, include_usage) =
        generation(&state, Some(&lease.model), prompt, req.common, 256)?;
    if model.tokenizer().token_id("<|im_end|>").is_none() {
        request.stop.push("\nuser:".into());
    }
    let grammar = match (&tools, answer) {
        (Some(t), Some(a)) if t.choice == openai_tools::Choice::Auto => {
            Some((t.calls_or(&a.schema), "tools"))
        }
        (Some(t), _) => t.grammar().map(|g| (g, "tools")),
        (None, Some(a)) => Some((engine::GrammarSpec::JsonSchema(a.schema), "response_format")),
        (None, None) => None,
    };
    request.logprobs = logprobs;
    if let Some((spec, param)) = grammar {
        let model = model.clone();
        let compiled = tokio::task::spawn_blocking(move || model.constraint(&spec))
            .await
            .map_err(|_| ApiError::internal("the grammar task failed"))?;
        request.constraint = Some(compiled.map_err(|e| {
            ApiError::unprocessable(format!("`{param}` cannot be enforced: {e}")).with_param(param)
        })?);
    }
    let prompt_len = request.prompt.len() as i64;
    let running = generate::start(lease.engine()?, request)?;
    let head = Head::new(&state, &lease.model, "chatcmpl");
    if stream {
        audit.update(|a| {
            a.prompt = Some(transcript(&messages));
            a.prompt_tokens = Some(prompt_len);
        });
        let reader = tools.as_ref().map(CallReader::new);
        let tokens = logprobs.map(|_| model.clone());
        let (first, chunk) = chat_chunks(head.clone(), reader, tokens);
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
    let mut message = json!({"role": "assistant", "content": out.text});
    let mut finish = None;
    if let Some(t) = &tools {
        let mut reader = CallReader::new(t);
        let mut pieces = reader.push(&out.text);
        pieces.extend(reader.finish());
        let mut content = String::new();
        let mut calls = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Content(text) => content.push_str(&text),
                Piece::Call(call) => calls.push(tool_call_json(&head, calls.len(), &call)),
            }
        }
        if !calls.is_empty() {
            let content = content.trim();
            message["content"] = if content.is_empty() {
                Value::Null
            } else {
                json!(content)
            };
            message["tool_calls"] = json!(calls);
            finish = Some("tool_calls");
        }
    }
    let mut choice = json!({"index": 0, "message": message});
    if logprobs.is_some() {
        choice["logprobs"] = chat_logprobs(&model, &out.logprobs);
    }
    if let Some(f) = finish {
        choice["finish_reason"] = json!(f);
    }
    Ok(answered(
        &head,
        "chat.completion",
        choice,
        out,
        transcript(&messages),
    ))
}

/// The checks [`generation`] makes, for a request to a remote backend (which counts
/// its own prompt tokens): the prompt's `chars`, `n`, sampling ranges, `stop`, and no
/// built-in engine setting. Gives the generation settings (without a prompt), whether
/// to stream and whether to end with usage.
fn remote_limits(
    state: &AppState,
    chars: usize,
    common: Common,
) -> Result<(GenerationRequest, bool, bool), ApiError> {
    if common.speculation.is_some() {
        return Err(ApiError::unprocessable(
            "`speculation` is a setting of the built-in engine; this model runs on a remote backend",
        )
        .with_param("speculation"));
    }
    let limit = state.config.limits.prompt_chars();
    if chars > limit {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the prompt has {chars} characters; this server accepts at most {limit} (`limits.max_prompt_chars`)"
            ),
        ));
    }
    generation(state, None, Vec::new(), common, 256)
}

/// A legacy completion on a remote backend: the prompt as text (token ids need the
/// built-in tokenizer), no log-probabilities; with `suffix` a fill-in-the-middle
/// request, else a plain continuation.
async fn remote_legacy(
    state: &Arc<AppState>,
    permit: OwnedSemaphorePermit,
    audit: AuditSlot,
    lease: ModelLease,
    req: LegacyRequest,
    caller: String,
) -> Result<Response, ApiError> {
    let crate::models::Backend::Remote(upstream) = &lease.backend else {
        return Err(ApiError::internal("not a remote model"));
    };
    let upstream = upstream.clone();
    if !upstream.wire.kind.serves_completions() {
        return Err(ApiError::unprocessable(format!(
            "model `{}` runs on a `{}` backend, which serves chat, not completions",
            lease.model.id,
            upstream.wire.kind.name()
        ))
        .with_param("model"));
    }
    if req.logprobs.is_some() {
        return Err(ApiError::unprocessable(
            "`logprobs` are not available from a model on a remote backend",
        )
        .with_param("logprobs"));
    }
    let prompt = match req.prompt {
        Prompt::Text(t) => t,
        Prompt::Texts(mut v) if v.len() == 1 => v.remove(0),
        Prompt::Texts(_) => {
            return Err(ApiError::unprocessable(
                "`prompt` as a list takes exactly one string",
            ));
        }
        Prompt::Tokens(_) => {
            return Err(ApiError::unprocessable(
                "`prompt` as token ids needs the built-in engine's tokenizer; send text to a model on a remote backend",
            )
            .with_param("prompt"));
        }
    };
    let plain = req.suffix.is_none();
    let suffix = req.suffix.unwrap_or_default();
    let chars = prompt.chars().count() + suffix.chars().count();
    let (settings, stream, include_usage) = remote_limits(state, chars, req.common)?;
    let sampling = &settings.sampling;
    let request = InfillRequest {
        prefix: prompt.clone(),
        suffix,
        extra: Vec::new(),
        max_tokens: settings.max_new_tokens,
        temperature: sampling.temperature,
        seed: sampling.seed,
        stop: settings.stop.clone(),
        sampling: Extras {
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            presence_penalty: sampling.penalties.presence,
            frequency_penalty: sampling.penalties.frequency,
            repetition_penalty: sampling.penalties.repetition,
        },
        plain,
    };
    let ask = openai_remote::RemoteChat {
        max_tokens: settings.max_new_tokens,
        stream,
        include_usage,
        transcript: prompt,
        head: Head::new(state, &lease.model, "cmpl"),
        caller,
    };
    openai_remote::text(permit, audit, lease, upstream, request, ask).await
}

/// The number of alternatives a chat asks for with each token's log-probability
/// (`logprobs: true`, `top_logprobs` 0..=20), or `None`.
fn chat_logprobs_wanted(
    logprobs: bool,
    top: Option<usize>,
    tools: bool,
) -> Result<Option<usize>, ApiError> {
    if !logprobs {
        return match top {
            Some(n) if n > 0 => Err(ApiError::unprocessable(
                "`top_logprobs` needs `logprobs: true`",
            )
            .with_param("top_logprobs")),
            _ => Ok(None),
        };
    }
    if tools {
        return Err(ApiError::unprocessable(
            "`logprobs` together with `tools` is not supported by this server",
        )
        .with_param("logprobs"));
    }
    match top.unwrap_or(0) {
        n @ 0..=20 => Ok(Some(n)),
        _ => {
            Err(ApiError::unprocessable("`top_logprobs` is at most 20").with_param("top_logprobs"))
        }
    }
}

/// A token as OpenAI reports it: its text and its bytes.
fn token_entry(model: &Model, token: u32, logprob: f32) -> Value {
    let bytes = model.tokenizer().token_bytes(token);
    json!({"token": String::from_utf8_lossy(bytes), "logprob": finite(logprob), "bytes": bytes})
}

/// A log-probability JSON can carry (minus infinity becomes OpenAI's floor, -9999).
fn finite(logprob: f32) -> f32 {
    if logprob.is_finite() {
        logprob
    } else {
        -9999.0
    }
}

/// Chat's `logprobs`: `{"content": [{token, logprob, bytes, top_logprobs}], "refusal": null}`
/// (control tokens, such as the end of the turn, are left out as OpenAI leaves them out).
fn chat_logprobs(model: &Model, lps: &[TokenLogprob]) -> Value {
    let content: Vec<Value> = lps
        .iter()
        .filter(|lp| !model.tokenizer().is_control(lp.token))
        .map(|lp| {
            let mut entry = token_entry(model, lp.token, lp.logprob);
            entry["top_logprobs"] = lp
                .top
                .iter()
                .map(|&(t, l)| token_entry(model, t, l))
                .collect();
            entry
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Legacy completions' `logprobs`: `{tokens, token_logprobs, top_logprobs, text_offset}`;
/// `offset` is where the first token's text starts in the whole answer (moved on).
fn legacy_logprobs(model: &Model, lps: &[TokenLogprob], offset: &mut usize) -> Value {
    let tok = model.tokenizer();
    let (mut tokens, mut values, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for lp in lps.iter().filter(|lp| !tok.is_control(lp.token)) {
        let text = String::from_utf8_lossy(tok.token_bytes(lp.token)).into_owned();
        offsets.push(*offset);
        *offset += text.len();
        tokens.push(text);
        values.push(finite(lp.logprob));
        let top: serde_json::Map<String, Value> = lp
            .top
            .iter()
            .map(|&(t, l)| {
                (
                    String::from_utf8_lossy(tok.token_bytes(t)).into_owned(),
                    json!(finite(l)),
                )
            })
            .collect();
        tops.push(top);
    }
    json!({"tokens": tokens, "token_logprobs": values, "top_logprobs": tops, "text_offset": offsets})
}

/// Makes the server-sent chunks for one engine event: its text, the log-probabilities
/// of its tokens, and the finish reason when the generation ended.
type Chunker = Box<dyn FnMut(&str, &[TokenLogprob], Option<&str>) -> Vec<Value> + Send>;

/// OpenAI's object for the `index`th tool call of an answer.
fn tool_call_json(head: &Head, index: usize, call: &ParsedCall) -> Value {
    json!({
        "id": format!("call-{}-{index}", head.id),
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    })
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
    if choice.get("finish_reason").is_none() {
        choice["finish_reason"] = json!(out.stats.finish_reason.as_str());
    }
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

/// Adds `instruction` to the chat's system turn (the first message when it is one,
/// else a new first message).
fn tell_the_system_turn(messages: &mut Vec<Said>, instruction: String) {
    match messages.first_mut() {
        Some(first) if first.role == "system" => {
            if !first.content.is_empty() {
                first.content.push_str("\n\n");
            }
            first.content.push_str(&instruction);
        }
        _ => messages.insert(
            0,
            Said {
                role: "system".into(),
                content: instruction,
                calls: Vec::new(),
            },
        ),
    }
}

/// The chat's messages as (role, text): known roles only (`developer` is `system`),
/// text content parts only.
fn chat_messages(sent: &[ChatMessage]) -> Result<Vec<Said>, ApiError> {
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
        let mut calls = Vec::new();
        for call in m.tool_calls.iter().flatten() {
            let bad = |why: String| ApiError::unprocessable(why).with_param("messages");
            if m.role != "assistant" {
                return Err(bad(format!(
                    "a `{}` message cannot have `tool_calls`",
                    m.role
                )));
            }
            if call.kind.as_deref().is_some_and(|k| k != "function") {
                return Err(bad("tool calls in messages are of type `function`".into()));
            }
            let arguments: Value = serde_json::from_str(&call.function.arguments).map_err(|e| {
                bad(format!(
                    "the arguments of tool call `{}` are not JSON: {e}",
                    call.id
                ))
            })?;
            calls.push(engine::ToolCall {
                id: call.id.clone(),
                name: call.function.name.clone(),
                arguments,
            });
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
        messages.push(Said {
            role: role.to_string(),
            content,
            calls,
        });
    }
    Ok(messages)
}

/// The first chunk of a streamed chat (the assistant's role) and the function that
/// makes the following ones: text deltas, tool calls (each whole, in one delta, read
/// by `reader` when the request has tools), and the end with its finish reason
/// (`tool_calls` when calls were made).
fn chat_chunks(
    head: Head,
    mut reader: Option<CallReader>,
    logprobs_of: Option<Arc<Model>>,
) -> (Value, Chunker) {
    const CHUNK: &str = "chat.completion.chunk";
    let first = head.object(
        CHUNK,
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
    );
    let chunk = move |text: &str, lps: &[TokenLogprob], finish: Option<&str>| {
        let delta = |delta: Value, finish: Option<&str>| {
            head.object(
                CHUNK,
                json!([{"index": 0, "delta": delta, "finish_reason": finish}]),
            )
        };
        let Some(reader) = reader.as_mut() else {
            let mut chunk = match finish {
                Some(f) => delta(json!({}), Some(f)),
                None => delta(json!({"content": text}), None),
            };
            if let Some(model) = &logprobs_of
                && finish.is_none()
            {
                chunk["choices"][0]["logprobs"] = chat_logprobs(model, lps);
            }
            return vec![chunk];
        };
        let mut pieces = reader.push(text);
        if finish.is_some() {
            pieces.extend(reader.finish());
        }
        let mut out = Vec::new();
        let mut index = reader.calls()
            - pieces
                .iter()
                .filter(|p| matches!(p, Piece::Call(_)))
                .count();
        for piece in pieces {
            match piece {
                Piece::Content(t) => out.push(delta(json!({"content": t}), None)),
                Piece::Call(call) => {
                    let mut c = tool_call_json(&head, index, &call);
                    c["index"] = json!(index);
                    out.push(delta(json!({"tool_calls": [c]}), None));
                    index += 1;
                }
            }
        }
        if let Some(f) = finish {
            let f = if reader.calls() > 0 { "tool_calls" } else { f };
            out.push(delta(json!({}), Some(f)));
        }
        out
    };
    (first, Box::new(chunk))
}

/// A chat as one text, for the audit log.
fn transcript(messages: &[Said]) -> String {
    messages
        .iter()
        .map(|m| {
            let calls: Vec<String> = m
                .calls
                .iter()
                .map(|c| format!("\n[call {}: {} {}]", c.id, c.name, c.arguments))
                .collect();
            format!("{}: {}{}", m.role, m.content, calls.concat())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Streams a generation as server-sent events ending with `data: [DONE]`; dropping
/// the stream (client gone) cancels the generation. `held` (the caller's slot, the
/// model's lease) is released when the stream ends. With `usage` (OpenAI's
/// `stream_options.include_usage`) the last chunk before `[DONE]` has no choices and
/// carries the token counts, as OpenAI sends it.
fn sse<H>(
    running: Running,
    held: H,
    usage: Option<Head>,
    chunk: Chunker,
    first: Option<Value>,
    audit: AuditSlot,
) -> Response
where
    H: Send + 'static,
{
    let head =
        stream::iter(first.map(|v| Ok::<_, Infallible>(Event::default().data(v.to_string()))));
    let body = stream::unfold(
        (running, Some(held), false, StreamTally::new(audit), chunk),
        move |(mut running, held, done, mut tally, mut chunk)| {
            let usage = usage.clone();
            async move {
                if done {
                    return None;
                }
                let event = running.events.recv().await;
                let (data, finished) = stream_data(event, &mut tally, &mut chunk, usage.as_ref());
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
                Some((
                    stream::iter(events),
                    (running, held, finished, tally, chunk),
                ))
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
    chunk: &mut Chunker,
    usage_head: Option<&Head>,
) -> (Vec<Value>, bool) {
    let with_usage = |mut v: Value| {
        if usage_head.is_some() {
            v["usage"] = Value::Null;
        }
        v
    };
    match event {
        Some(GenerationEvent::Text {
            text,
            tokens,
            logprobs,
        }) => {
            tally.text.push_str(&text);
            tally.generated += tokens.len();
            (
                chunk(&text, &logprobs, None)
                    .into_iter()
                    .map(with_usage)
                    .collect(),
                false,
            )
        }
        Some(GenerationEvent::Finished(stats)) => {
            tally.finished(&stats);
            let mut data: Vec<Value> = chunk("", &[], Some(stats.finish_reason.as_str()))
                .into_iter()
                .map(with_usage)
                .collect();
            if let Some(head) = usage_head {
                let object = data
                    .first()
                    .and_then(|d| d["object"].as_str())
                    .unwrap_or("")
                    .to_string();
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
pub struct StreamTally {
    audit: AuditSlot,
    /// Prompt tokens, once known.
    pub prompt_tokens: Option<usize>,
    /// Tokens generated so far.
    pub generated: usize,
    /// Text sent so far.
    pub text: String,
}

impl StreamTally {
    /// A tally writing to `audit`.
    pub fn new(audit: AuditSlot) -> Self {
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

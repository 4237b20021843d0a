//! OpenAI chat and legacy completions of a model on a remote backend
//! ([`crate::upstream::chat`], [`crate::upstream::kind`]): the request has passed the
//! same checks as for the built-in engine (fields, messages, tools, limits, token
//! scope); here it goes to a replica, and the answer comes back in OpenAI's shape under
//! Souffleur's id and model name — streamed as it arrives, or whole. A client that
//! leaves closes the upstream request.

use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use axum::Json;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, StreamExt};
use serde_json::{Map, Value, json};
use tokio::sync::OwnedSemaphorePermit;

use crate::completion::remote::{api_error, estimate_tokens};
use crate::error::ApiError;
use crate::http::observe::{AuditInfo, AuditSlot};
use crate::models::ModelLease;
use crate::routes::openai::{Head, StreamTally, usage};
use crate::routes::openai_fields;
use crate::upstream::kind::{Delta, End, InfillRequest};
use crate::upstream::{TextStream, Upstream};

/// Which OpenAI answer is streamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `chat.completion.chunk`s.
    Chat,
    /// `text_completion`s.
    Text,
}

impl Shape {
    fn object(self) -> &'static str {
        match self {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        }
    }
}

/// What the route decided about a request before it went remote.
pub struct RemoteChat {
    /// Most tokens to generate (checked against the server's limit).
    pub max_tokens: usize,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
    /// The prompt (a chat as one text), for the audit log.
    pub transcript: String,
    /// The answer's id, model and fingerprint.
    pub head: Head,
    /// Who asks: requests of one caller and conversation prefer one replica.
    pub caller: String,
}

/// Sends the client's chat `request` to `upstream` and answers in OpenAI's shape.
/// `permit` and `lease` are held until the answer is complete.
pub async fn chat(
    permit: OwnedSemaphorePermit,
    audit: AuditSlot,
    lease: ModelLease,
    upstream: Arc<Upstream>,
    mut request: Map<String, Value>,
    ask: RemoteChat,
) -> Result<Response, ApiError> {
    // Fields that change nothing in the answer stay here.
    for field in openai_fields::HARMLESS {
        request.remove(*field);
    }
    let (path, body) = upstream
        .wire
        .chat(&request, ask.max_tokens)
        .map_err(|r| ApiError::unprocessable(r.message).with_param(&r.param))?;
    let affinity = {
        // The same conversation (its first message) of the same caller.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (
            &ask.caller,
            request.get("messages").map(|m| m[0].to_string()),
        )
            .hash(&mut h);
        Some(h.finish())
    };
    let text_stream = upstream
        .chat(path, body, affinity)
        .await
        .map_err(api_error)?;
    let prompt_estimate = estimate_tokens(&ask.transcript);
    if ask.stream {
        audit.update(|a| {
            a.prompt = Some(ask.transcript.clone());
        });
        return Ok(sse(
            text_stream,
            (permit, lease),
            ask,
            audit,
            prompt_estimate,
            Shape::Chat,
        ));
    }
    let mut stream = text_stream;
    let mut pieces = Vec::new();
    let mut end = None;
    while let Some(d) = stream.next().await {
        match d.map_err(api_error)? {
            Delta::Chunk(c) => pieces.push(c),
            Delta::Text(t) => pieces.push(json!({"delta": {"content": t}})),
            Delta::Done(e) => end = Some(e),
        }
    }
    drop((permit, lease));
    let assembled = crate::upstream::chat::assemble(&pieces);
    let end = end.unwrap_or(End {
        reason: "stop".into(),
        prompt_tokens: None,
        completion_tokens: None,
    });
    let completion_text = assembled.message["content"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut choice = json!({
        "index": 0,
        "message": assembled.message,
        "finish_reason": assembled.finish_reason.unwrap_or(end.reason.clone()),
    });
    if !assembled.logprobs.is_null() {
        choice["logprobs"] = assembled.logprobs;
    }
    Ok(whole(
        ask,
        "chat.completion",
        choice,
        &end,
        completion_text,
        prompt_estimate,
    ))
}

/// Sends the client's legacy completion (`request`, already written as a plain or
/// fill-in-the-middle request) to `upstream` and answers in OpenAI's shape.
pub async fn text(
    permit: OwnedSemaphorePermit,
    audit: AuditSlot,
    lease: ModelLease,
    upstream: Arc<Upstream>,
    request: InfillRequest,
    ask: RemoteChat,
) -> Result<Response, ApiError> {
    let affinity = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&ask.caller, request.prefix.get(..256)).hash(&mut h);
        Some(h.finish())
    };
    let mut stream = upstream
        .infill(&request, affinity)
        .await
        .map_err(api_error)?;
    let prompt_estimate = estimate_tokens(&ask.transcript);
    if ask.stream {
        audit.update(|a| {
            a.prompt = Some(ask.transcript.clone());
        });
        return Ok(sse(
            stream,
            (permit, lease),
            ask,
            audit,
            prompt_estimate,
            Shape::Text,
        ));
    }
    let mut text = String::new();
    let mut end = None;
    while let Some(d) = stream.next().await {
        match d.map_err(api_error)? {
            Delta::Text(t) => text.push_str(&t),
            Delta::Chunk(c) => text.push_str(c["delta"]["content"].as_str().unwrap_or("")),
            Delta::Done(e) => end = Some(e),
        }
    }
    drop((permit, lease));
    let end = end.unwrap_or(End {
        reason: "stop".into(),
        prompt_tokens: None,
        completion_tokens: None,
    });
    let choice = json!({"index": 0, "text": text, "logprobs": null, "finish_reason": end.reason});
    Ok(whole(
        ask,
        "text_completion",
        choice,
        &end,
        text,
        prompt_estimate,
    ))
}

/// A whole (not streamed) answer: OpenAI's body around `choice` with the usage (the
/// upstream's counts, else estimates) and the audit information.
fn whole(
    ask: RemoteChat,
    object: &str,
    choice: Value,
    end: &End,
    completion: String,
    prompt_estimate: usize,
) -> Response {
    let prompt_tokens = end.prompt_tokens.unwrap_or(prompt_estimate);
    let completion_tokens = end
        .completion_tokens
        .unwrap_or_else(|| estimate_tokens(&completion));
    let mut out = ask.head.object(object, json!([choice]));
    out["usage"] = usage(prompt_tokens, completion_tokens);
    let mut response = Json(out).into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(prompt_tokens as i64),
        completion_tokens: Some(completion_tokens as i64),
        prompt: Some(ask.transcript),
        completion: Some(completion),
        ..Default::default()
    });
    response
}

/// Passes the replica's stream on as server-sent events as each piece arrives, under
/// Souffleur's id and model name, ending with the usage chunk when asked and
/// `data: [DONE]`. Dropping it (client gone) closes the upstream request.
fn sse<H>(
    upstream: TextStream,
    held: H,
    ask: RemoteChat,
    audit: AuditSlot,
    prompt_estimate: usize,
    shape: Shape,
) -> Response
where
    H: Send + 'static,
{
    let object = shape.object();
    let head = ask.head;
    let include_usage = ask.include_usage;
    let mut tally = StreamTally::new(audit);
    tally.prompt_tokens = Some(prompt_estimate);
    let events = stream::unfold(
        (upstream, Some(held), false, tally),
        move |(mut upstream, held, done, mut tally)| {
            let head = head.clone();
            async move {
                if done {
                    return None;
                }
                let mut data = Vec::new();
                let mut finished = false;
                match upstream.next().await {
                    Some(Ok(Delta::Chunk(piece))) => {
                        if let Some(t) = piece["delta"]["content"].as_str() {
                            tally.text.push_str(t);
                        }
                        data.push(head.object(object, json!([piece])));
                    }
                    Some(Ok(Delta::Text(t))) => {
                        tally.text.push_str(&t);
                        let piece = match shape {
                            Shape::Chat => {
                                json!({"index": 0, "delta": {"content": t}, "finish_reason": null})
                            }
                            Shape::Text => {
                                json!({"index": 0, "text": t, "logprobs": null, "finish_reason": null})
                            }
                        };
                        data.push(head.object(object, json!([piece])));
                    }
                    Some(Ok(Delta::Done(end))) => {
                        let prompt = end.prompt_tokens.unwrap_or(prompt_estimate);
                        let generated = end
                            .completion_tokens
                            .unwrap_or_else(|| estimate_tokens(&tally.text));
                        tally.prompt_tokens = Some(prompt);
                        tally.generated = generated;
                        if shape == Shape::Text {
                            // A chat's finish reason came in its last piece.
                            data.push(head.object(
                                object,
                                json!([{"index": 0, "text": "", "logprobs": null,
                                        "finish_reason": end.reason}]),
                            ));
                        }
                        if include_usage {
                            let mut counts = head.object(object, json!([]));
                            counts["usage"] = usage(prompt, generated);
                            data.push(counts);
                        }
                        finished = true;
                    }
                    Some(Err(e)) => {
                        let e = api_error(e);
                        data.push(json!({"error": {"message": e.message, "type": "server_error"}}));
                        finished = true;
                    }
                    None => finished = true,
                }
                let mut events: Vec<Result<Event, Infallible>> = data
                    .into_iter()
                    .map(|mut d| {
                        // With usage asked for, every chunk but the last has `usage: null`.
                        if include_usage && d.get("usage").is_none() && d.get("choices").is_some() {
                            d["usage"] = Value::Null;
                        }
                        Ok(Event::default().data(d.to_string()))
                    })
                    .collect();
                let held = if finished {
                    events.push(Ok(Event::default().data("[DONE]")));
                    drop(held);
                    None
                } else {
                    held
                };
                Some((stream::iter(events), (upstream, held, finished, tally)))
            }
        },
    )
    .flatten();
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

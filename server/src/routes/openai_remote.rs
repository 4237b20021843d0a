//! Chat completions of a model on a remote backend ([`crate::upstream::chat`]): the
//! request has passed the same checks as for the built-in engine (fields, messages,
//! tools, limits, token scope); here it goes to a replica, and the answer comes back in
//! OpenAI's shape under Souffleur's id and model name — streamed as it arrives, or
//! whole. A client that leaves closes the upstream request.

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
use crate::upstream::kind::{Delta, End};
use crate::upstream::{TextStream, Upstream};

/// What the route decided about a chat before it went remote.
pub struct RemoteChat {
    /// Most tokens to generate (checked against the server's limit).
    pub max_tokens: usize,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Whether a streamed answer ends with a usage chunk.
    pub include_usage: bool,
    /// The chat as one text, for the audit log.
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
    let prompt_tokens = end.prompt_tokens.unwrap_or(prompt_estimate);
    let completion_tokens = end
        .completion_tokens
        .unwrap_or_else(|| estimate_tokens(&completion_text));
    let mut choice = json!({
        "index": 0,
        "message": assembled.message,
        "finish_reason": assembled.finish_reason.unwrap_or(end.reason),
    });
    if !assembled.logprobs.is_null() {
        choice["logprobs"] = assembled.logprobs;
    }
    let mut out = ask.head.object("chat.completion", json!([choice]));
    out["usage"] = usage(prompt_tokens, completion_tokens);
    let mut response = Json(out).into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(prompt_tokens as i64),
        completion_tokens: Some(completion_tokens as i64),
        prompt: Some(ask.transcript),
        completion: Some(completion_text),
        ..Default::default()
    });
    Ok(response)
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
) -> Response
where
    H: Send + 'static,
{
    const CHUNK: &str = "chat.completion.chunk";
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
                        let mut chunk = head.object(CHUNK, json!([piece]));
                        if include_usage {
                            chunk["usage"] = Value::Null;
                        }
                        data.push(chunk);
                    }
                    Some(Ok(Delta::Text(t))) => {
                        tally.text.push_str(&t);
                        data.push(head.object(
                            CHUNK,
                            json!([{"index": 0, "delta": {"content": t}, "finish_reason": null}]),
                        ));
                    }
                    Some(Ok(Delta::Done(end))) => {
                        let prompt = end.prompt_tokens.unwrap_or(prompt_estimate);
                        let generated = end
                            .completion_tokens
                            .unwrap_or_else(|| estimate_tokens(&tally.text));
                        tally.prompt_tokens = Some(prompt);
                        tally.generated = generated;
                        if include_usage {
                            let mut counts = head.object(CHUNK, json!([]));
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
                    .map(|d| Ok(Event::default().data(d.to_string())))
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

//! Completions on a remote backend: the same request handling as the built-in engine
//! (text cut to the budgets, snippets from the client and the index, a newer keystroke
//! cancelling an older one, the same post-processing and early end), with the prompt
//! written in the backend's shape and the text streamed from one of its replicas.
//!
//! Budgets are counted with the model's tokenizer when the backend names one
//! (`backend.tokenizer`: the model's GGUF file or its `tokenizer.json`), else by the
//! estimate [`estimate_tokens`]: one token per [`CHARS_PER_TOKEN`] characters (code
//! in BPE vocabularies of current code models averages 3–4 characters per token), the
//! choice being [`TokenCount`].

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use engine::CancelToken;
use tokio::sync::OwnedSemaphorePermit;

use crate::completion::postprocess::{self, Mode};
use crate::completion::prompt::{BuiltPrompt, ContextSnippet};
use crate::completion::service::{self, Completion, CompletionInput, head_chars, tail_chars};
use crate::error::ApiError;
use crate::models::ModelLease;
use crate::state::{AppState, Caller};
use crate::upstream::kind::{Delta, ExtraFile, InfillRequest};
use crate::upstream::{Upstream, UpstreamError};

/// Characters per token of the budget estimate.
pub const CHARS_PER_TOKEN: usize = 3;

/// Tokens of `text` by the estimate (rounded up).
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(CHARS_PER_TOKEN)
}

/// How a remote model's tokens are counted for budgets.
#[derive(Clone)]
pub enum TokenCount {
    /// [`estimate_tokens`].
    Estimate,
    /// The model's own tokenizer.
    Tokenizer(Arc<engine::Tokenizer>),
}

impl TokenCount {
    /// The count `upstream` uses: its tokenizer when it has one.
    pub fn of(upstream: &Upstream) -> Self {
        match upstream.tokenizer() {
            Some(t) => TokenCount::Tokenizer(t.clone()),
            None => TokenCount::Estimate,
        }
    }

    /// Tokens of `text`.
    pub fn count(&self, text: &str) -> usize {
        match self {
            TokenCount::Estimate => estimate_tokens(text),
            TokenCount::Tokenizer(t) => t.count(text),
        }
    }

    /// The end of `text` within `tokens`, starting at a line's start when it had to be
    /// cut.
    pub fn tail(&self, text: &str, tokens: usize) -> String {
        let TokenCount::Tokenizer(t) = self else {
            return whole_lines_tail(text, tokens * CHARS_PER_TOKEN);
        };
        let Some(bytes) = token_bytes(t, text, tokens, true) else {
            return text.to_string();
        };
        let mut start = text.len().saturating_sub(bytes);
        while !text.is_char_boundary(start) {
            start += 1;
        }
        // `start` may fall inside a line: whole lines only, as the estimate cuts.
        if start > 0 && !text[..start].ends_with('\n') {
            start = text[start..]
                .find('\n')
                .map(|i| start + i + 1)
                .unwrap_or(text.len());
        }
        text[start..].to_string()
    }

    /// The start of `text` within `tokens`.
    pub fn head(&self, text: &str, tokens: usize) -> String {
        let TokenCount::Tokenizer(t) = self else {
            return head_chars(text, tokens * CHARS_PER_TOKEN).to_string();
        };
        let Some(bytes) = token_bytes(t, text, tokens, false) else {
            return text.to_string();
        };
        let mut end = bytes.min(text.len());
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_string()
    }

    /// How `/v1/health` describes the count.
    pub fn describe(&self) -> String {
        match self {
            TokenCount::Estimate => format!("estimate ({CHARS_PER_TOKEN} characters per token)"),
            TokenCount::Tokenizer(_) => "tokenizer".into(),
        }
    }
}

/// The bytes of `text`'s last (`from_end`) or first `tokens` tokens, or `None` when the
/// whole text fits (or cannot be tokenized: then the character limits still hold).
fn token_bytes(t: &engine::Tokenizer, text: &str, tokens: usize, from_end: bool) -> Option<usize> {
    let ids = t.encode(text).ok()?;
    if ids.len() <= tokens {
        return None;
    }
    let kept = if from_end {
        &ids[ids.len() - tokens..]
    } else {
        &ids[..tokens]
    };
    Some(kept.iter().map(|&id| t.token_bytes(id).len()).sum())
}

/// How often a running request looks whether a newer keystroke cancelled it.
const CANCEL_POLL: Duration = Duration::from_millis(10);

/// Completes `input` on `upstream`; `permit` and `lease` are held until the text is in.
pub async fn complete(
    state: &Arc<AppState>,
    caller: &Caller,
    permit: OwnedSemaphorePermit,
    lease: ModelLease,
    upstream: Arc<Upstream>,
    mut input: CompletionInput,
    mode: Mode,
) -> Result<Completion, ApiError> {
    let cfg = &state.config.completion;
    let budgets = service::budgets(state, mode);
    let count = TokenCount::of(&upstream);
    let (snippets, cut) = {
        let state = state.clone();
        let caller = caller.clone();
        let mut input = input.clone();
        let suffix_tokens = cfg.suffix_tokens;
        tokio::task::spawn_blocking(move || {
            // The budgets as the built-in engine has them, in the model's tokens (or
            // the estimate).
            input.prefix = count.tail(&input.prefix, budgets.prefix);
            input.suffix = count.head(&input.suffix, budgets.suffix);
            let visible = (
                count.tail(&input.prefix, budgets.prefix / 2),
                count.head(&input.suffix, suffix_tokens),
            );
            let counter = |t: &str| count.count(t);
            service::gather_snippets(&state, &caller, &input, visible, budgets, &counter)
                .map(|s| (fit_snippets(s, budgets.snippets, &counter), input))
        })
        .await??
    };
    input = cut;
    let (max_tokens, stop) = match mode {
        Mode::SingleLine => (cfg.single_line_tokens, vec!["\n".to_string()]),
        Mode::MultiLine => (cfg.multi_line_tokens, vec!["\n\n\n".to_string()]),
    };
    let request = InfillRequest {
        prefix: input.prefix.clone(),
        suffix: input.suffix.clone(),
        extra: snippets
            .iter()
            .map(|s| ExtraFile {
                filename: s.path.clone(),
                text: s.text.clone(),
            })
            .collect(),
        max_tokens,
        temperature: input.temperature,
        seed: input.seed,
        stop,
        sampling: crate::upstream::kind::Extras::default(),
        plain: false,
    };
    let who = input.user.clone().unwrap_or_else(|| caller.name.clone());
    let key_user = format!("{}/{who}", caller.name);
    let file = input.filepath.clone();
    let keyed = !file.is_empty();
    let affinity = keyed.then(|| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&key_user, &file).hash(&mut h);
        h.finish()
    });
    let cancel = CancelToken::new();
    let gen_id = keyed.then(|| state.start_generation(&key_user, &file, &cancel));
    let result = stream_text(
        &upstream,
        &request,
        affinity,
        &cancel,
        &input,
        mode,
        cfg.max_lines,
    )
    .await;
    if let Some(id) = gen_id {
        state.end_generation(&key_user, &file, id);
    }
    drop(permit);
    drop(lease);
    let streamed = result?;
    let text = if streamed.cancelled {
        None
    } else {
        postprocess::finish(
            &streamed.text,
            &input.prefix,
            &input.suffix,
            mode,
            cfg.max_lines,
        )
    };
    state.metrics.completion(match (&text, streamed.cancelled) {
        (_, true) => "cancelled",
        (None, _) => "empty",
        (Some(_), _) => "shown",
    });
    let count = TokenCount::of(&upstream);
    let prompt_tokens = streamed.prompt_tokens.unwrap_or_else(|| {
        count.count(&input.prefix)
            + count.count(&input.suffix)
            + snippets.iter().map(|s| count.count(&s.text)).sum::<usize>()
    });
    let generated_tokens = streamed
        .completion_tokens
        .unwrap_or_else(|| count.count(&streamed.text));
    Ok(Completion {
        text,
        raw: streamed.text,
        prompt: BuiltPrompt {
            tokens: Vec::new(),
            prefix_text: input.prefix,
            suffix_text: input.suffix,
            snippets,
        },
        prompt_tokens,
        generated_tokens,
    })
}

/// What came back from the replica.
struct Streamed {
    text: String,
    cancelled: bool,
    prompt_tokens: Option<usize>,
    completion_tokens: Option<usize>,
}

/// Streams the answer until its end, until post-processing would cut the rest (the
/// upstream request is closed then, as the built-in engine stops), or until a newer
/// keystroke cancels it.
async fn stream_text(
    upstream: &Upstream,
    request: &InfillRequest,
    affinity: Option<u64>,
    cancel: &CancelToken,
    input: &CompletionInput,
    mode: Mode,
    max_lines: usize,
) -> Result<Streamed, ApiError> {
    let mut out = Streamed {
        text: String::new(),
        cancelled: false,
        prompt_tokens: None,
        completion_tokens: None,
    };
    let mut stream = tokio::select! {
        s = upstream.infill(request, affinity) => s.map_err(api_error)?,
        _ = cancelled(cancel) => {
            out.cancelled = true;
            return Ok(out);
        }
    };
    let suffix_start: String = input.suffix.trim_start().chars().take(8).collect();
    loop {
        let next = tokio::select! {
            d = stream.next() => d,
            _ = cancelled(cancel) => {
                out.cancelled = true;
                return Ok(out);
            }
        };
        match next {
            None => return Ok(out),
            Some(Err(e)) => return Err(api_error(e)),
            Some(Ok(Delta::Text(t))) => {
                out.text.push_str(&t);
                if postprocess::would_cut(&out.text, &input.prefix, &suffix_start, mode, max_lines)
                {
                    // Dropping the stream closes the upstream request.
                    return Ok(out);
                }
            }
            Some(Ok(Delta::Chunk(_))) => {}
            Some(Ok(Delta::Done(end))) => {
                out.prompt_tokens = end.prompt_tokens;
                out.completion_tokens = end.completion_tokens;
            }
        }
    }
}

/// Resolves when `cancel` fires.
async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// The client-facing error for a failed remote request: the replica's fault is a 502
/// (504 for a timeout), no replica left a 503, a 4xx of the upstream (about the
/// request) a 422 with its message.
pub(crate) fn api_error(e: UpstreamError) -> ApiError {
    use axum::http::StatusCode;
    tracing::warn!(error = %e, "remote request failed");
    match &e {
        UpstreamError::NoReplica(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        UpstreamError::Timeout { .. } => ApiError::new(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        UpstreamError::Status { status, .. } if *status < 500 => {
            ApiError::unprocessable(format!("the backend refused the request: {e}"))
        }
        _ => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
    }
}

/// The end of `text` within `chars` characters, starting at a line's start when it
/// had to be cut.
fn whole_lines_tail(text: &str, chars: usize) -> String {
    let tail = tail_chars(text, chars);
    if tail.len() == text.len() {
        return tail.to_string();
    }
    match tail.find('\n') {
        Some(i) => tail[i + 1..].to_string(),
        None => tail.to_string(),
    }
}

/// The snippets that fit `budget` tokens (as `count` counts them), in order.
fn fit_snippets(
    snippets: Vec<ContextSnippet>,
    budget: usize,
    count: &dyn Fn(&str) -> usize,
) -> Vec<ContextSnippet> {
    let mut left = budget;
    snippets
        .into_iter()
        .filter(|s| {
            let cost = count(&s.path) + count(&s.text) + 2;
            if cost <= left {
                left -= cost;
                true
            } else {
                false
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_cut_at_line_starts_and_snippets_fit() {
        assert_eq!(estimate_tokens("abcdef"), 2);
        assert_eq!(estimate_tokens("abcdefg"), 3);
        assert_eq!(whole_lines_tail("one\ntwo\nthree", 8), "three");
        assert_eq!(whole_lines_tail("one\ntwo", 100), "one\ntwo");
        let s = |t: &str| ContextSnippet {
            path: "a.py".into(),
            text: t.into(),
            source: "index",
            repo: None,
        };
        let kept = fit_snippets(
            vec![s(&"x".repeat(30)), s(&"y".repeat(300)), s("z")],
            20,
            &estimate_tokens,
        );
        let texts: Vec<&str> = kept.iter().map(|k| k.text.as_str()).collect();
        assert_eq!(texts, vec!["x".repeat(30).as_str(), "z"]);
    }
}

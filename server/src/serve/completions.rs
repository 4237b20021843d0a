//! `POST /v1/completions`: Tabby's code-completion shape (`segments`) and OpenAI's
//! legacy completions shape (`prompt`) on one path.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::{CancelToken, GenerationRequest, SamplingParams};
use indexer::RetrievalRequest;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::OwnedSemaphorePermit;

use super::error::{ApiError, parse_json};
use super::generate;
use super::openai;
use super::postprocess::{self, Mode};
use super::prompt::{self, Budgets, BuiltPrompt, ContextSnippet, FilePlace};
use super::state::{AppState, Caller};
use super::{AuditInfo, AuditSlot};

/// Tabby's `segments`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Segments {
    prefix: String,
    suffix: Option<String>,
    filepath: Option<String>,
    git_url: Option<String>,
    declarations: Option<Vec<Declaration>>,
    relevant_snippets_from_changed_files: Option<Vec<ClientSnippet>>,
    relevant_snippets_from_recently_opened_files: Option<Vec<ClientSnippet>>,
    clipboard: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Declaration {
    filepath: String,
    body: String,
}

#[derive(Debug, Deserialize)]
struct ClientSnippet {
    filepath: String,
    body: String,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct DebugOptions {
    return_snippets: bool,
    return_prompt: bool,
    disable_retrieval_augmented_code_completion: bool,
}

/// Tabby's completion request.
#[derive(Debug, Deserialize)]
struct TabbyRequest {
    language: Option<String>,
    segments: Segments,
    user: Option<String>,
    temperature: Option<f32>,
    seed: Option<u64>,
    /// `standard` (default) or `next_edit_suggestion`; only standard is served.
    mode: Option<String>,
    debug_options: Option<DebugOptions>,
    model: Option<String>,
    /// Souffleur extension: `off`, `ngram` or `ngram:K` for this request.
    speculation: Option<String>,
}

/// Dispatches on the body's shape.
pub async fn completions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The caller's slot comes first: a token with all its slots busy costs nothing more.
    let permit = state.admit(&caller)?;
    let value: Value = parse_json(&body)?;
    let Some(obj) = value.as_object() else {
        return Err(ApiError::unprocessable(
            "the request body must be a JSON object",
        ));
    };
    if obj.contains_key("segments") {
        let req: TabbyRequest = serde_json::from_value(value).map_err(|e| {
            ApiError::unprocessable(format!("invalid Tabby completion request: {e}"))
        })?;
        tabby(state, caller, permit, req).await
    } else if obj.contains_key("prompt") {
        openai::legacy_completions(state, permit, audit, value).await
    } else {
        Err(ApiError::unprocessable(
            "expected `segments` (Tabby's completion request) or `prompt` (OpenAI's completions request)",
        ))
    }
}

fn language_of(req: &TabbyRequest) -> String {
    req.language
        .clone()
        .filter(|l| !l.is_empty() && l != "unknown")
        .or_else(|| {
            req.segments
                .filepath
                .as_deref()
                .and_then(indexer::Language::from_path)
                .map(|l| l.name().to_string())
        })
        .unwrap_or_else(|| "text".into())
}

async fn tabby(
    state: Arc<AppState>,
    caller: Caller,
    permit: OwnedSemaphorePermit,
    mut req: TabbyRequest,
) -> Result<Response, ApiError> {
    state.check_model(req.model.as_deref())?;
    if let Some(mode) = req.mode.as_deref()
        && mode != "standard"
    {
        return Err(ApiError::unprocessable(format!(
            "completion mode `{mode}` is not supported; use `standard`"
        )));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    super::check_temperature(temperature)?;
    let cfg = &state.config.completion;
    let debug = req.debug_options.take().unwrap_or_default();
    // A file's text is cut to what a prompt can hold before anything tokenizes it: a
    // completion never fails because of what the file contains.
    let chars = state.config.limits.prompt_chars();
    let seg = &mut req.segments;
    seg.prefix = tail_chars(&seg.prefix, chars).to_string();
    if let Some(s) = seg.suffix.as_mut() {
        *s = head_chars(s, chars).to_string();
    }
    let language = language_of(&req);
    let filepath = req.segments.filepath.clone().unwrap_or_default();
    let text_bytes =
        req.segments.prefix.len() + req.segments.suffix.as_ref().map_or(0, String::len);
    let mode = postprocess::mode(
        &req.segments.prefix,
        req.segments.suffix.as_deref().unwrap_or(""),
    );
    let tokenizing = state.tokenizing_slot(text_bytes).await?;
    let (built, req) = {
        let state = state.clone();
        let caller = caller.clone();
        let language = language.clone();
        let disable_retrieval = debug.disable_retrieval_augmented_code_completion;
        tokio::task::spawn_blocking(move || {
            build_prompt(&state, &caller, &req, &language, mode, disable_retrieval)
                .map(|b| (b, req))
        })
        .await
        .map_err(|_| ApiError::internal("the prompt task failed"))??
    };
    drop(tokenizing);
    let seg = &req.segments;
    let suffix = seg.suffix.clone().unwrap_or_default();
    let (max_new_tokens, stop) = match mode {
        Mode::SingleLine => (cfg.single_line_tokens, vec!["\n".to_string()]),
        Mode::MultiLine => (cfg.multi_line_tokens, vec!["\n\n\n".to_string()]),
    };
    let who = req.user.clone().unwrap_or_else(|| caller.name.clone());
    let key_user = format!("{}/{who}", caller.name);
    // What is left of this caller's previous completion here, if the edit since
    // followed it: verified in one pass instead of decoded token by token.
    let hint = state
        .recent
        .hint(&key_user, &filepath, &seg.prefix, &suffix)
        .and_then(|text| state.engine.model().tokenizer().encode(&text).ok())
        .map(|mut tokens| {
            tokens.truncate(max_new_tokens);
            tokens
        })
        .unwrap_or_default();
    let cancel = CancelToken::new();
    let request = GenerationRequest {
        prompt: built.tokens.clone(),
        max_new_tokens,
        sampling: SamplingParams {
            temperature,
            top_k: 0,
            top_p: 1.0,
            seed: req.seed.unwrap_or(0),
        },
        stop,
        cancel: cancel.clone(),
        speculation: super::request_speculation(&state, req.speculation.as_deref())?,
        stop_rule: Some(stop_rule(&seg.prefix, &suffix, mode, cfg.max_lines)),
        hint,
    };
    let gen_id = state.start_generation(&key_user, &filepath, &cancel);
    let running = generate::start(&state.engine, request);
    let result = match running {
        Ok(r) => r.collect().await,
        Err(e) => Err(e),
    };
    state.end_generation(&key_user, &filepath, gen_id);
    drop(permit);
    let out = result?;
    let cancelled = out.stats.finish_reason == engine::FinishReason::Cancelled;
    if !cancelled && temperature == 0.0 {
        state
            .recent
            .remember(&key_user, &filepath, &seg.prefix, &suffix, &out.text);
    }
    let text = if cancelled {
        None
    } else {
        postprocess::finish(&out.text, &seg.prefix, &suffix, mode, cfg.max_lines)
    };
    state.metrics.completion(match (&text, cancelled) {
        (_, true) => "cancelled",
        (None, _) => "empty",
        (Some(_), _) => "shown",
    });
    let id = state.new_id("cmpl");
    let choices: Vec<Value> = text
        .iter()
        .map(|t| json!({"index": 0, "text": t}))
        .collect();
    let mut body = json!({"id": id, "choices": choices});
    if debug.return_snippets || debug.return_prompt {
        let mut data = json!({});
        if debug.return_snippets {
            data["snippets"] = serde_json::to_value(&built.snippets)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        if debug.return_prompt {
            data["prompt"] = json!(built.prefix_text);
            data["suffix"] = json!(built.suffix_text);
            data["raw_completion"] = json!(out.text);
        }
        body["debug_data"] = data;
    }
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(AuditInfo {
        // The gate recorded the caller.
        caller: None,
        prompt_tokens: Some(out.stats.prompt_tokens as i64),
        completion_tokens: Some(out.stats.generated_tokens as i64),
        prompt: Some(format!(
            "{}<CURSOR>{}",
            built.prefix_text, built.suffix_text
        )),
        completion: text,
    });
    Ok(response)
}

/// Snippets (client-sent, retrieved, clipboard) and the FIM prompt of a Tabby request;
/// tokenizes, so it runs on a blocking thread.
fn build_prompt(
    state: &AppState,
    caller: &Caller,
    req: &TabbyRequest,
    language: &str,
    mode: Mode,
    disable_retrieval: bool,
) -> Result<BuiltPrompt, ApiError> {
    let cfg = &state.config.completion;
    let model = state.engine.model().clone();
    let seg = &req.segments;
    let suffix = seg.suffix.clone().unwrap_or_default();

    let mut snippets: Vec<ContextSnippet> = Vec::new();
    for d in seg.declarations.iter().flatten() {
        snippets.push(ContextSnippet {
            path: d.filepath.clone(),
            text: d.body.clone(),
            source: "declaration",
            repo: None,
        });
    }
    let budgets = Budgets {
        prefix: cfg.prefix_tokens,
        // Typing inside a line: a short suffix keeps each keystroke's prefill small.
        suffix: match mode {
            Mode::SingleLine => cfg.single_line_suffix_tokens.min(cfg.suffix_tokens),
            Mode::MultiLine => cfg.suffix_tokens,
        },
        snippets: cfg.snippet_tokens,
    };
    if !disable_retrieval {
        snippets.extend(retrieve(state, caller, req, language, budgets)?);
    }
    for s in seg
        .relevant_snippets_from_changed_files
        .iter()
        .flatten()
        .chain(
            seg.relevant_snippets_from_recently_opened_files
                .iter()
                .flatten(),
        )
    {
        if !snippets.iter().any(|k| k.text.trim() == s.body.trim()) {
            snippets.push(ContextSnippet {
                path: s.filepath.clone(),
                text: s.body.clone(),
                source: "changed_file",
                repo: None,
            });
        }
    }
    if let Some(clip) = seg.clipboard.as_deref()
        && !clip.trim().is_empty()
        && clip.lines().count() <= 20
    {
        snippets.push(ContextSnippet {
            path: "clipboard".into(),
            text: clip.to_string(),
            source: "clipboard",
            repo: None,
        });
    }

    let place = seg
        .filepath
        .as_deref()
        .filter(|p| cfg.repository_format && !p.is_empty())
        .map(|_| {
            let (repo, path) = locate(state, caller, req);
            FilePlace {
                repo: repo.unwrap_or_else(|| repo_name_of_url(seg.git_url.as_deref())),
                path,
            }
        });
    Ok(prompt::build(
        &model,
        language,
        place.as_ref(),
        &seg.prefix,
        &suffix,
        &snippets,
        budgets,
        state.config.limits.max_prompt_tokens,
    )?)
}

/// Ends the generation as soon as post-processing would cut what follows (the end of
/// the line, or of the block at the cursor), instead of running to the token limit.
fn stop_rule(prefix: &str, suffix: &str, mode: Mode, max_lines: usize) -> engine::StopRule {
    // Only the cursor's line matters for the cut (and the indentation unit the lines
    // before it show); a short tail keeps the rule cheap to run after every token.
    let start = prefix.char_indices().rev().nth(4096).map_or(0, |(i, _)| i);
    let start = match prefix[start..].find('\n') {
        Some(i) if start > 0 => start + i + 1,
        _ => start,
    };
    let prefix = prefix[start..].to_string();
    // Only the suffix's start matters (which closer comes next).
    let suffix: String = suffix.trim_start().chars().take(8).collect();
    engine::StopRule(std::sync::Arc::new(move |raw: &str| {
        postprocess::would_cut(raw, &prefix, &suffix, mode, max_lines)
    }))
}

/// The last `n` characters of `text`.
pub(super) fn tail_chars(text: &str, n: usize) -> &str {
    match text.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &text[i..],
        _ if n == 0 => "",
        _ => text,
    }
}

/// The first `n` characters of `text`.
pub(super) fn head_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The indexed repository (of those the caller may read) that holds the request's file,
/// and the file's path relative to it (else the path as sent).
fn locate(state: &AppState, caller: &Caller, req: &TabbyRequest) -> (Option<String>, String) {
    let seg = &req.segments;
    let filepath = seg.filepath.as_deref().unwrap_or("");
    let repos = state.repos_for(caller, seg.git_url.as_deref(), filepath);
    state
        .repos
        .read()
        .ok()
        .and_then(|known| {
            known
                .iter()
                .filter(|r| repos.contains(&r.name))
                .find_map(|r| {
                    std::path::Path::new(filepath)
                        .strip_prefix(&r.path)
                        .ok()
                        .map(|p| (Some(r.name.clone()), p.to_string_lossy().into_owned()))
                })
        })
        .or_else(|| match repos.as_slice() {
            [only] => Some((Some(only.clone()), filepath.to_string())),
            _ => None,
        })
        .unwrap_or_else(|| (None, filepath.to_string()))
}

/// A repository name from a git remote URL (`…/name.git` → `name`); `workspace` without one.
fn repo_name_of_url(url: Option<&str>) -> String {
    url.map(|u| u.trim_end_matches('/').trim_end_matches(".git"))
        .and_then(|u| u.rsplit(['/', ':']).next())
        .filter(|n| !n.is_empty())
        .unwrap_or("workspace")
        .to_string()
}

/// Snippets from the code index for the cursor, limited to the caller's repositories.
fn retrieve(
    state: &AppState,
    caller: &Caller,
    req: &TabbyRequest,
    language: &str,
    budgets: Budgets,
) -> Result<Vec<ContextSnippet>, ApiError> {
    let Some(index) = &state.index else {
        return Ok(Vec::new());
    };
    let seg = &req.segments;
    let filepath = seg.filepath.as_deref().unwrap_or("");
    let repos = state.repos_for(caller, seg.git_url.as_deref(), filepath);
    if repos.is_empty() {
        return Ok(Vec::new());
    }
    let (_, relative) = locate(state, caller, req);
    // Retrieval looks at the lines the model sees around the cursor line, not at the
    // cursor line itself, so the snippets (which open the prompt) stay the same while a
    // line is typed and the prefix cache keeps hitting. The same file's code outside
    // them may come back as snippets. The suffix counts with its longest budget, which
    // keeps the snippets the same when the mode changes between keystrokes.
    let model = state.engine.model();
    let suffix = seg.suffix.as_deref().unwrap_or("");
    let widest = Budgets {
        suffix: state.config.completion.suffix_tokens,
        ..budgets
    };
    let (before, after) = prompt::visible_lines(model, &seg.prefix, suffix, widest);
    let mut request = RetrievalRequest::new(&repos, &relative, &before, &after, budgets.snippets);
    request.language = Some(language);
    let tokenizer = model.tokenizer();
    let count = |text: &str| {
        tokenizer
            .encode(text)
            .map(|t| t.len())
            .unwrap_or(text.len())
    };
    let found = index
        .retrieve(&request, &count)
        .map_err(|e| ApiError::internal(format!("retrieval failed: {e}")))?;
    Ok(found
        .into_iter()
        .filter(|s| caller.repos.allows(&s.repo))
        .map(|s| ContextSnippet {
            path: s.path,
            text: s.text,
            source: "index",
            repo: Some(s.repo),
        })
        .collect())
}

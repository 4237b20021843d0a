//! The completion service: one request, whatever shape it came in ([`CompletionInput`]),
//! to a post-processed completion ([`Completion`]). Cuts the text to what a prompt can
//! hold, gathers snippets (client-sent, retrieved from the index, clipboard), builds the
//! prompt on a blocking thread, turns the previous keystroke's completion into a hint,
//! generates (a newer keystroke for the same file cancels this one) and post-processes.

use std::sync::Arc;

use engine::{CancelToken, GenerationRequest, Model, SamplingParams};
use indexer::RetrievalRequest;
use tokio::sync::OwnedSemaphorePermit;

use crate::completion::postprocess::{self, Mode};
use crate::completion::prompt::{self, Budgets, BuiltPrompt, ContextSnippet, FilePlace};
use crate::completion::{generate, remote};
use crate::error::ApiError;
use crate::models::{Backend, ModelLease};
use crate::state::{AppState, Caller};

/// A completion request, whatever shape it came in.
#[derive(Debug, Clone, Default)]
pub struct CompletionInput {
    /// The language's name (`python`, `rust`, … or `text`).
    pub language: String,
    /// The text before the cursor.
    pub prefix: String,
    /// The text after the cursor (empty when none was sent).
    pub suffix: String,
    /// The edited file's path as the client sent it (empty when none).
    pub filepath: String,
    /// The repository's remote, if the client sent it.
    pub git_url: Option<String>,
    /// Declarations the client found for symbols at the cursor (go first).
    pub declarations: Vec<ContextSnippet>,
    /// Snippets from other files the client chose (after the retrieved ones).
    pub client_snippets: Vec<ContextSnippet>,
    /// The clipboard's text (used when it is short).
    pub clipboard: Option<String>,
    /// The end user behind the token (a shared token may serve several).
    pub user: Option<String>,
    /// Sampling temperature (0: greedy).
    pub temperature: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Speculative decoding for this request.
    pub speculation: engine::Speculation,
    /// Whether snippets are retrieved from the code index.
    pub retrieval: bool,
}

/// What the service made of a request.
#[derive(Debug)]
pub struct Completion {
    /// The completion to show, post-processed; `None` when there is nothing to show
    /// (empty after the cut, or cancelled by a newer keystroke).
    pub text: Option<String>,
    /// The model's raw output.
    pub raw: String,
    /// The prompt the model saw, with its snippets.
    pub prompt: BuiltPrompt,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
}

/// Completes `input` for `caller` on the leased model; `permit` (the caller's
/// concurrency slot) and the lease are held until the generation ends.
pub async fn complete(
    state: &Arc<AppState>,
    caller: &Caller,
    permit: OwnedSemaphorePermit,
    lease: ModelLease,
    mut input: CompletionInput,
) -> Result<Completion, ApiError> {
    let cfg = &state.config.completion;
    // A file's text is cut to what a prompt can hold before anything tokenizes it: a
    // completion never fails because of what the file contains.
    let chars = state.config.limits.prompt_chars();
    input.prefix = tail_chars(&input.prefix, chars).to_string();
    input.suffix = head_chars(&input.suffix, chars).to_string();
    let mode = postprocess::mode(&input.prefix, &input.suffix);
    let engine = match &lease.backend {
        Backend::Builtin(engine) => engine.clone(),
        Backend::Remote(upstream) if !upstream.wire.kind.serves_completions() => {
            return Err(ApiError::unprocessable(format!(
                "model `{}` runs on a `{}` backend, which serves chat and reviews, not code completions",
                lease.model.id,
                upstream.wire.kind.name()
            ))
            .with_param("model"));
        }
        Backend::Remote(upstream) => {
            let upstream = upstream.clone();
            return remote::complete(state, caller, permit, lease, upstream, input, mode).await;
        }
    };
    let tokenizing = state
        .tokenizing_slot(input.prefix.len() + input.suffix.len())
        .await?;
    let (built, input) = {
        let state = state.clone();
        let caller = caller.clone();
        let model = engine.model().clone();
        tokio::task::spawn_blocking(move || {
            build_prompt(&state, &model, &caller, &input, mode).map(|b| (b, input))
        })
        .await??
    };
    drop(tokenizing);
    let who = input.user.clone().unwrap_or_else(|| caller.name.clone());
    let key_user = format!("{}/{who}", caller.name);
    let file = &input.filepath;
    let cancel = CancelToken::new();
    let request = generation_request(
        state,
        engine.model(),
        &input,
        &key_user,
        built.tokens.clone(),
        mode,
        &cancel,
    );
    // Keystrokes are told apart by their file: a request that names none neither cancels
    // nor is cancelled by another (several clients may share a caller), nor leaves a hint.
    let keyed = !file.is_empty();
    let gen_id = keyed.then(|| state.start_generation(&key_user, file, &cancel));
    let result = match generate::start(&engine, request) {
        Ok(r) => r.collect().await,
        Err(e) => Err(e),
    };
    if let Some(id) = gen_id {
        state.end_generation(&key_user, file, id);
    }
    drop(permit);
    drop(lease);
    let out = result?;
    let cancelled = out.stats.finish_reason == engine::FinishReason::Cancelled;
    if keyed && !cancelled && input.temperature == 0.0 {
        state
            .recent
            .remember(&key_user, file, &input.prefix, &input.suffix, &out.text);
    }
    let text = if cancelled {
        None
    } else {
        postprocess::finish(&out.text, &input.prefix, &input.suffix, mode, cfg.max_lines)
    };
    state.metrics.completion(match (&text, cancelled) {
        (_, true) => "cancelled",
        (None, _) => "empty",
        (Some(_), _) => "shown",
    });
    Ok(Completion {
        text,
        raw: out.text,
        prompt: built,
        prompt_tokens: out.stats.prompt_tokens,
        generated_tokens: out.stats.generated_tokens,
    })
}

/// The engine's request for a built prompt: the mode's token limit and stop rule, and
/// what is left of this caller's previous completion here as the hint.
fn generation_request(
    state: &AppState,
    model: &Model,
    input: &CompletionInput,
    key_user: &str,
    prompt: Vec<u32>,
    mode: Mode,
    cancel: &CancelToken,
) -> GenerationRequest {
    let cfg = &state.config.completion;
    let (max_new_tokens, stop) = match mode {
        Mode::SingleLine => (cfg.single_line_tokens, vec!["\n".to_string()]),
        Mode::MultiLine => (cfg.multi_line_tokens, vec!["\n\n\n".to_string()]),
    };
    // What is left of this caller's previous completion here, if the edit since
    // followed it: verified in one pass instead of decoded token by token.
    let hint = state
        .recent
        .hint(key_user, &input.filepath, &input.prefix, &input.suffix)
        .and_then(|text| model.tokenizer().encode(&text).ok())
        .map(|mut tokens| {
            tokens.truncate(max_new_tokens);
            tokens
        })
        .unwrap_or_default();
    GenerationRequest {
        prompt,
        max_new_tokens,
        sampling: SamplingParams {
            temperature: input.temperature,
            top_k: 0,
            top_p: 1.0,
            seed: input.seed,
            penalties: engine::Penalties::NONE,
        },
        stop,
        cancel: cancel.clone(),
        speculation: input.speculation,
        stop_rule: Some(stop_rule(&input.prefix, &input.suffix, mode, cfg.max_lines)),
        hint,
        constraint: None,
        logprobs: None,
    }
}

/// The token budgets of a request's prompt.
pub(crate) fn budgets(state: &AppState, mode: Mode) -> Budgets {
    let cfg = &state.config.completion;
    Budgets {
        prefix: cfg.prefix_tokens,
        // Typing inside a line: a short suffix keeps each keystroke's prefill small.
        suffix: match mode {
            Mode::SingleLine => cfg.single_line_suffix_tokens.min(cfg.suffix_tokens),
            Mode::MultiLine => cfg.suffix_tokens,
        },
        snippets: cfg.snippet_tokens,
    }
}

/// Snippets (client-sent, retrieved, clipboard) and the FIM prompt of a request;
/// tokenizes, so it runs on a blocking thread.
fn build_prompt(
    state: &AppState,
    model: &Model,
    caller: &Caller,
    input: &CompletionInput,
    mode: Mode,
) -> Result<BuiltPrompt, ApiError> {
    let cfg = &state.config.completion;
    let budgets = budgets(state, mode);
    let widest = Budgets {
        suffix: cfg.suffix_tokens,
        ..budgets
    };
    let visible = prompt::visible_lines(model, &input.prefix, &input.suffix, widest);
    let tokenizer = model.tokenizer();
    let snippets = gather_snippets(state, caller, input, visible, budgets, &|text: &str| {
        tokenizer.count(text)
    })?;
    let place = (cfg.repository_format && !input.filepath.is_empty()).then(|| {
        let (repo, path) = locate(state, caller, input);
        FilePlace {
            repo: repo.unwrap_or_else(|| repo_name_of_url(input.git_url.as_deref())),
            path,
        }
    });
    Ok(prompt::build(
        model,
        &input.language,
        place.as_ref(),
        &input.prefix,
        &input.suffix,
        &snippets,
        budgets,
        state.config.limits.max_prompt_tokens,
    )?)
}

/// A request's snippets in order: the client's declarations, retrieved ones (for the
/// `visible` lines around the cursor, within the snippet budget as `count` measures
/// it), the client's other snippets, the clipboard.
pub(crate) fn gather_snippets(
    state: &AppState,
    caller: &Caller,
    input: &CompletionInput,
    visible: (String, String),
    budgets: Budgets,
    count: &dyn Fn(&str) -> usize,
) -> Result<Vec<ContextSnippet>, ApiError> {
    let mut snippets = input.declarations.clone();
    if input.retrieval {
        snippets.extend(retrieve(state, caller, input, visible, budgets, count)?);
    }
    for s in &input.client_snippets {
        if !snippets.iter().any(|k| k.text.trim() == s.text.trim()) {
            snippets.push(s.clone());
        }
    }
    if let Some(clip) = input.clipboard.as_deref()
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
    Ok(snippets)
}

/// The indexed repository (of those the caller may read) that holds the request's file,
/// and the file's path relative to it (else the path as sent).
fn locate(state: &AppState, caller: &Caller, input: &CompletionInput) -> (Option<String>, String) {
    let filepath = input.filepath.as_str();
    let repos = state.repos_for(caller, input.git_url.as_deref(), filepath);
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
    input: &CompletionInput,
    (before, after): (String, String),
    budgets: Budgets,
    count: &dyn Fn(&str) -> usize,
) -> Result<Vec<ContextSnippet>, ApiError> {
    let Some(index) = &state.index else {
        return Ok(Vec::new());
    };
    let repos = state.repos_for(caller, input.git_url.as_deref(), &input.filepath);
    if repos.is_empty() {
        return Ok(Vec::new());
    }
    let (_, relative) = locate(state, caller, input);
    // Retrieval looks at the lines the model sees around the cursor line, not at the
    // cursor line itself, so the snippets (which open the prompt) stay the same while a
    // line is typed and the prefix cache keeps hitting. The same file's code outside
    // them may come back as snippets. The suffix counts with its longest budget, which
    // keeps the snippets the same when the mode changes between keystrokes.
    let mut request = RetrievalRequest::new(&repos, &relative, &before, &after, budgets.snippets);
    request.language = Some(&input.language);
    let found = index.retrieve(&request, &count)?;
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
pub fn tail_chars(text: &str, n: usize) -> &str {
    match text.char_indices().rev().nth(n.saturating_sub(1)) {
        Some((i, _)) if n > 0 => &text[i..],
        _ if n == 0 => "",
        _ => text,
    }
}

/// The first `n` characters of `text`.
pub fn head_chars(text: &str, n: usize) -> &str {
    match text.char_indices().nth(n) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

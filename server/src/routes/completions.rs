//! `POST /v1/completions`: Tabby's code-completion shape (`segments`) and OpenAI's
//! legacy completions shape (`prompt`) on one path.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::completion::prompt::ContextSnippet;
use crate::completion::service::{self, Completion, CompletionInput};
use crate::config::ModelRole;
use crate::error::{ApiError, JsonBody};
use crate::http::gate::Slot;
use crate::http::observe::{AuditInfo, AuditSlot};
use crate::models::ServedModel;
use crate::routes::openai;
use crate::state::{AppState, Caller};

/// Tabby's `segments`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
struct Segments {
    prefix: String,
    suffix: Option<String>,
    filepath: Option<String>,
    git_url: Option<String>,
    declarations: Option<Vec<ClientSnippet>>,
    relevant_snippets_from_changed_files: Option<Vec<ClientSnippet>>,
    relevant_snippets_from_recently_opened_files: Option<Vec<ClientSnippet>>,
    clipboard: Option<String>,
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
    Slot(permit): Slot,
    JsonBody(value): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let Some(obj) = value.as_object() else {
        return Err(ApiError::unprocessable(
            "the request body must be a JSON object",
        ));
    };
    if obj.contains_key("segments") {
        let req: TabbyRequest = serde_json::from_value(value).map_err(|e| {
            ApiError::unprocessable(format!("invalid Tabby completion request: {e}"))
        })?;
        let lease = state
            .lease(ModelRole::Completion, req.model.as_deref(), &audit)
            .await?;
        let (input, debug) = tabby_input(&lease.model, req)?;
        let note = crate::usage::UsageNote {
            language: input.language.clone(),
            mode: match crate::completion::postprocess::mode(&input.prefix, &input.suffix) {
                crate::completion::postprocess::Mode::SingleLine => "single".into(),
                crate::completion::postprocess::Mode::MultiLine => "multi".into(),
            },
            ..Default::default()
        };
        let done = service::complete(&state, &caller, permit, lease, input).await?;
        tabby_response(&state, done, &debug, note)
    } else if obj.contains_key("prompt") {
        openai::legacy_completions(state, &caller, permit, audit, value).await
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

/// Checks what the completion service does not (mode, temperature, speculation)
/// and turns Tabby's request into the service's input.
fn tabby_input(
    model: &ServedModel,
    mut req: TabbyRequest,
) -> Result<(CompletionInput, DebugOptions), ApiError> {
    if let Some(mode) = req.mode.as_deref()
        && mode != "standard"
    {
        return Err(ApiError::unprocessable(format!(
            "completion mode `{mode}` is not supported; use `standard`"
        )));
    }
    let temperature = req.temperature.unwrap_or(0.0);
    crate::routes::check_temperature(temperature)?;
    let speculation = crate::routes::request_speculation(model, req.speculation.as_deref())?;
    let debug = req.debug_options.take().unwrap_or_default();
    let language = language_of(&req);
    let seg = req.segments;
    let snippet = |s: ClientSnippet, source| ContextSnippet {
        path: s.filepath,
        text: s.body,
        source,
        repo: None,
    };
    let input = CompletionInput {
        language,
        prefix: seg.prefix,
        suffix: seg.suffix.unwrap_or_default(),
        filepath: seg.filepath.unwrap_or_default(),
        git_url: seg.git_url,
        declarations: seg
            .declarations
            .into_iter()
            .flatten()
            .map(|d| snippet(d, "declaration"))
            .collect(),
        client_snippets: seg
            .relevant_snippets_from_changed_files
            .into_iter()
            .flatten()
            .chain(
                seg.relevant_snippets_from_recently_opened_files
                    .into_iter()
                    .flatten(),
            )
            .map(|s| snippet(s, "changed_file"))
            .collect(),
        clipboard: seg.clipboard,
        user: req.user,
        temperature,
        seed: req.seed.unwrap_or(0),
        speculation,
        retrieval: !debug.disable_retrieval_augmented_code_completion,
    };
    Ok((input, debug))
}

/// Tabby's response (`id`, `choices`, `debug_data` when asked), with the audit
/// information attached.
fn tabby_response(
    state: &AppState,
    done: Completion,
    debug: &DebugOptions,
    note: crate::usage::UsageNote,
) -> Result<Response, ApiError> {
    let id = state.new_id("cmpl");
    let note = crate::usage::UsageNote {
        shown: done.text.is_some(),
        completion_id: Some(id.clone()),
        ..note
    };
    let choices: Vec<Value> = done
        .text
        .iter()
        .map(|t| json!({"index": 0, "text": t}))
        .collect();
    let mut body = json!({"id": id, "choices": choices});
    if debug.return_snippets || debug.return_prompt {
        let mut data = json!({});
        if debug.return_snippets {
            data["snippets"] = serde_json::to_value(&done.prompt.snippets)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        if debug.return_prompt {
            data["prompt"] = json!(done.prompt.prefix_text);
            data["suffix"] = json!(done.prompt.suffix_text);
            data["raw_completion"] = json!(done.raw);
        }
        body["debug_data"] = data;
    }
    let mut response = Json(body).into_response();
    response.extensions_mut().insert(AuditInfo {
        // The gate recorded the caller.
        caller: None,
        prompt_tokens: Some(done.prompt_tokens as i64),
        completion_tokens: Some(done.generated_tokens as i64),
        prompt: Some(format!(
            "{}<CURSOR>{}",
            done.prompt.prefix_text, done.prompt.suffix_text
        )),
        completion: done.text,
        usage: Some(note),
        ..Default::default()
    });
    Ok(response)
}

//! `POST /v1/review`: a unified diff (or an indexed repository with base and head
//! refs) in, grounded findings on the changed lines out — as Souffleur's JSON or any
//! format of `souffleur review --format`, optionally streamed as server-sent events
//! (`event: progress` while chunks are reviewed, then `event: result`, then
//! `data: [DONE]`).
//!
//! Bad input is a 4xx with a JSON error before anything is streamed: malformed JSON
//! 400; a malformed, empty or binary-only diff, an unknown ref, a bad rules file or
//! unknown fields 422; an unknown or invisible repository 404; a diff over the limit 413.

use std::convert::Infallible;
use std::sync::Arc;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::CancelToken;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc::unbounded_channel;

use super::error::{ApiError, parse_json};
use super::generate::CancelOnDrop;
use super::state::{AppState, Caller};
use super::{AuditInfo, AuditSlot};
use crate::review::context::{IndexDefinitions, WorktreeFiles};
use crate::review::format::{self, Format};
use crate::review::model::EngineModel;
use crate::review::{
    self, FileSource, Inputs, Limits, NoFiles, Options, Progress, Report, ReviewError, Rules,
};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewRequest {
    /// A unified diff.
    diff: Option<String>,
    /// An indexed repository: with `base` (and `head`), the diff is taken from it;
    /// with `diff`, it gives context (index definitions, files).
    repository: Option<String>,
    /// Base ref (the pull request's target).
    base: Option<String>,
    /// Head ref (default `HEAD`).
    head: Option<String>,
    /// Extra instructions for the model.
    instructions: Option<String>,
    /// A rules file's text (TOML).
    rules: Option<String>,
    /// Ask the model (default true); static checks always run.
    model_review: Option<bool>,
    /// The served model's id (optional check).
    model: Option<String>,
    /// `json` (default), `sarif`, `github`, `gitlab`, `rdjson` or `markdown`.
    format: Option<String>,
    /// Stream progress as server-sent events.
    #[serde(default)]
    stream: bool,
    /// Most chunks sent to the model.
    max_chunks: Option<usize>,
    /// Chunks reviewed at once (default 1: reproducible, and fastest on CPU).
    concurrency: Option<usize>,
}

fn api_error(e: ReviewError) -> ApiError {
    match e {
        ReviewError::TooLarge { .. } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        ReviewError::EmptyDiff
        | ReviewError::MalformedDiff { .. }
        | ReviewError::UnsafePath { .. }
        | ReviewError::BinaryOnly(_)
        | ReviewError::UnknownRef(_)
        | ReviewError::Rules(_) => ApiError::unprocessable(e.to_string()),
        ReviewError::Cancelled => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        ReviewError::Git(_) | ReviewError::Model(_) => ApiError::internal(e.to_string()),
    }
}

/// The diff to review and what comes with it, prepared before any streaming.
struct Prepared {
    diff: String,
    files: Box<dyn FileSource + Send>,
    repo: Option<String>,
}

/// `POST /v1/review`
pub async fn review(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Extension(audit): Extension<AuditSlot>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let permit = state.admit(&caller)?;
    let req: ReviewRequest = parse_json(&body)?;
    state.check_model(req.model.as_deref())?;
    let format = match req.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "`format` must be json, sarif, github, gitlab, rdjson or markdown, not `{f}`"
            ))
        })?,
    };
    let rules = match req.rules.as_deref() {
        Some(text) => Rules::parse(text).map_err(api_error)?,
        None => Rules::default(),
    };
    let limits = limits(&state, req.max_chunks, req.concurrency)?;
    let repo_path = match &req.repository {
        Some(name) => Some((name.clone(), find_repo(&state, &caller, name)?)),
        None => None,
    };
    let prepared = match (req.diff, req.base) {
        (Some(_), Some(_)) => {
            return Err(ApiError::unprocessable(
                "give either `diff` or `repository` with `base` (and `head`), not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::unprocessable(
                "`diff` (a unified diff) or `repository` with `base` is required",
            ));
        }
        (Some(diff), None) => {
            let files: Box<dyn FileSource + Send> = match &repo_path {
                Some((_, path)) => Box::new(WorktreeFiles::new(path.clone())),
                None => Box::new(NoFiles),
            };
            Prepared {
                diff,
                files,
                repo: repo_path.map(|(n, _)| n),
            }
        }
        (None, Some(base)) => {
            let Some((name, path)) = repo_path else {
                return Err(ApiError::unprocessable(
                    "`base` needs `repository` (the name of an indexed repository)",
                ));
            };
            let head = req.head.unwrap_or_else(|| "HEAD".into());
            let max = limits.max_diff_bytes;
            let rd = tokio::task::spawn_blocking(move || {
                let repo = review::git::open(&path)?;
                review::git::diff_refs(repo, &base, &head, max)
            })
            .await
            .map_err(|_| ApiError::internal("the diff task failed"))?
            .map_err(api_error)?;
            Prepared {
                diff: rd.text,
                files: Box::new(rd.files),
                repo: Some(name),
            }
        }
    };
    // Bad diffs are answered before a stream starts.
    review::validate(&prepared.diff, &limits).map_err(api_error)?;

    let options = Options {
        model_review: req.model_review.unwrap_or(true),
        instructions: req.instructions.or_else(|| rules.instructions.clone()),
        rules,
        limits,
    };
    let cancel = CancelToken::new();
    let guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = unbounded_channel::<Progress>();
    let task_state = state.clone();
    let diff_for_audit = prepared.diff.clone();
    let task = tokio::task::spawn_blocking(move || {
        run_review(&task_state, prepared, &options, cancel, &move |p| {
            let _ = tx.send(p);
        })
    });

    if req.stream {
        enum Phase {
            Progress,
            Result,
            Done,
        }
        let state_for_stream = (rx, Some(task), Some(permit), Some(guard), Phase::Progress);
        let events = stream::unfold(state_for_stream, move |(mut rx, task, permit, guard, phase)| {
            let audit = audit.clone();
            async move {
                match phase {
                    Phase::Progress => match rx.recv().await {
                        Some(p) => {
                            let ev = Event::default()
                                .event("progress")
                                .data(json!(p).to_string());
                            Some((vec![ev], (rx, task, permit, guard, Phase::Progress)))
                        }
                        None => Some((Vec::new(), (rx, task, permit, guard, Phase::Result))),
                    },
                    Phase::Result => {
                        let outcome = match task {
                            Some(t) => t.await.unwrap_or(Err(ReviewError::Model(
                                "the review task failed".into(),
                            ))),
                            None => Err(ReviewError::Model("no review task".into())),
                        };
                        drop(permit);
                        drop(guard);
                        let ev = match outcome {
                            Ok(report) => {
                                audit.update(|a| {
                                    a.prompt_tokens = Some(report.summary.prompt_tokens as i64);
                                    a.completion_tokens =
                                        Some(report.summary.completion_tokens as i64);
                                });
                                let data = match format {
                                    Format::Json => json!(report).to_string(),
                                    Format::Markdown => json!({"markdown": format::render(&report, format)}).to_string(),
                                    f => format::render(&report, f).replace('\n', ""),
                                };
                                Event::default().event("result").data(data)
                            }
                            Err(e) => {
                                let err = api_error(e);
                                Event::default().event("error").data(
                                    json!({"error": {"message": err.message, "code": err.status.as_u16()}})
                                        .to_string(),
                                )
                            }
                        };
                        let done = Event::default().data("[DONE]");
                        Some((vec![ev, done], (rx, None, None, None, Phase::Done)))
                    }
                    Phase::Done => None,
                }
            }
        })
        .flat_map(|evs| stream::iter(evs.into_iter().map(Ok::<_, Infallible>)));
        let response = Sse::new(events)
            .keep_alive(KeepAlive::default())
            .into_response();
        return Ok(response);
    }

    // Progress is not wanted.
    drop(rx);
    let outcome = task
        .await
        .map_err(|_| ApiError::internal("the review task failed"))?;
    drop(permit);
    drop(guard);
    let report = outcome.map_err(api_error)?;
    let text = format::render(&report, format);
    let mut response = (
        [(header::CONTENT_TYPE, format.content_type())],
        text.clone(),
    )
        .into_response();
    response.extensions_mut().insert(AuditInfo {
        caller: None,
        prompt_tokens: Some(report.summary.prompt_tokens as i64),
        completion_tokens: Some(report.summary.completion_tokens as i64),
        prompt: Some(diff_for_audit),
        completion: Some(text),
    });
    Ok(response)
}

/// The review's limits from the server's configuration.
fn limits(
    state: &AppState,
    max_chunks: Option<usize>,
    concurrency: Option<usize>,
) -> Result<Limits, ApiError> {
    let l = &state.config.limits;
    let context = state.engine.model().info().config.context_length;
    let max_new_tokens = l.max_tokens.clamp(16, 192);
    let max_chunks = max_chunks.unwrap_or(64);
    if max_chunks > 512 {
        return Err(ApiError::unprocessable("`max_chunks` is at most 512"));
    }
    let concurrency = concurrency.unwrap_or(1);
    if !(1..=l.max_concurrent_per_token.max(1)).contains(&concurrency) {
        return Err(ApiError::unprocessable(format!(
            "`concurrency` is between 1 and {}",
            l.max_concurrent_per_token.max(1)
        )));
    }
    Ok(Limits {
        max_diff_bytes: l.max_body_bytes,
        max_model_chunks: max_chunks,
        prompt_tokens: l
            .max_prompt_tokens
            .min(context.saturating_sub(max_new_tokens + 8))
            .max(256),
        max_new_tokens,
        concurrency,
    })
}

/// The working directory of repository `name`, if the caller may see it.
fn find_repo(
    state: &AppState,
    caller: &Caller,
    name: &str,
) -> Result<std::path::PathBuf, ApiError> {
    let repos = state
        .repos
        .read()
        .map_err(|_| ApiError::internal("repository table unavailable"))?;
    repos
        .iter()
        .find(|r| r.name == name && caller.repos.allows(&r.name))
        .map(|r| r.path.clone())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                format!("repository `{name}` is not indexed on this server (or not visible to this token)"),
            )
        })
}

/// Runs the review on a blocking thread.
fn run_review(
    state: &AppState,
    prepared: Prepared,
    options: &Options,
    cancel: CancelToken,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, ReviewError> {
    let model = options.model_review.then(|| {
        EngineModel::new(
            state.engine.clone(),
            state.model.id.clone(),
            cancel,
            options.limits.prompt_tokens + options.limits.prompt_tokens / 8,
            state.speculation,
        )
    });
    let defs = match (&state.index, &prepared.repo) {
        (Some(index), Some(name)) => Some(IndexDefinitions {
            index,
            repos: vec![name.clone()],
        }),
        _ => None,
    };
    let inputs = Inputs {
        files: prepared.files.as_ref(),
        definitions: defs.as_ref().map(|d| d as &dyn review::Definitions),
    };
    review::review(
        &prepared.diff,
        &inputs,
        options,
        model.as_ref().map(|m| m as &dyn review::ReviewModel),
        progress,
    )
}

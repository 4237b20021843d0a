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
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::CancelToken;
use futures_util::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::completion::generate::CancelOnDrop;
use crate::config::ModelRole;
use crate::error::{ApiError, JsonBody};
use crate::http::gate::Slot;
use crate::http::observe::{AuditInfo, AuditSlot};
use crate::models::ModelLease;
use crate::state::{AppState, Caller};
use review::context::{IndexDefinitions, WorktreeFiles};
use review::format::{self, Format};
use review::model::EngineModel;

use crate::upstream::review_model::RemoteReviewModel;
use review::{
    self, FileSource, Inputs, Limits, NoFiles, Options, Progress, Report, ReviewError, Rules,
};

/// The request body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
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
    Slot(permit): Slot,
    JsonBody(req): JsonBody<ReviewRequest>,
) -> Result<Response, ApiError> {
    let lease = state
        .lease(ModelRole::Review, req.model.as_deref(), &audit)
        .await?;
    let stream = req.stream;
    let context = match &lease.backend {
        crate::models::Backend::Builtin(engine) => engine.model().info().config.context_length,
        // The server's `limits.max_prompt_tokens` bounds the prompt; a backend with a
        // smaller context refuses the request itself (a 422 naming it).
        crate::models::Backend::Remote(upstream) if upstream.wire.kind.serves_chat() => {
            usize::MAX / 2
        }
        crate::models::Backend::Remote(upstream) => {
            return Err(ApiError::unprocessable(format!(
                "model `{}` runs on a `{}` backend, which serves code completions only; reviews need a chat model (`openai-chat`, `ollama` or the built-in engine)",
                lease.model.id,
                upstream.wire.kind.name()
            ))
            .with_param("model"));
        }
    };
    let (prepared, options, format) = prepare(&state, &caller, context, req).await?;
    let cancel = CancelToken::new();
    let guard = CancelOnDrop(cancel.clone());
    let (tx, rx) = unbounded_channel::<Progress>();
    let task_state = state.clone();
    let diff_for_audit = prepared.diff.clone();
    let task = tokio::task::spawn_blocking(move || {
        run_review(&task_state, &lease, prepared, &options, cancel, &move |p| {
            let _ = tx.send(p);
        })
    });
    let running = Running {
        task,
        permit,
        guard,
    };
    if stream {
        return Ok(streamed(rx, running, audit, format));
    }
    // Progress is not wanted.
    drop(rx);
    let report = running.finish().await?;
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
        ..Default::default()
    });
    Ok(response)
}

/// Everything checked and prepared before a review starts (and before a stream
/// starts: bad input is a plain 4xx): the output format, the rules, the limits, the
/// diff (given, or taken from an indexed repository's refs) and its files.
async fn prepare(
    state: &Arc<AppState>,
    caller: &Caller,
    context: usize,
    req: ReviewRequest,
) -> Result<(Prepared, Options, Format), ApiError> {
    let format = match req.format.as_deref() {
        None => Format::Json,
        Some(f) => Format::parse(f).ok_or_else(|| {
            ApiError::unprocessable(format!(
                "`format` must be json, sarif, github, gitlab, rdjson or markdown, not `{f}`"
            ))
        })?,
    };
    let rules = match req.rules.as_deref() {
        Some(text) => Rules::parse(text)?,
        None => Rules::default(),
    };
    let limits = limits(state, context, req.max_chunks, req.concurrency)?;
    let repo_path = match &req.repository {
        Some(name) => Some((name.clone(), find_repo(state, caller, name)?)),
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
            .await??;
            Prepared {
                diff: rd.text,
                files: Box::new(rd.files),
                repo: Some(name),
            }
        }
    };
    // Bad diffs are answered before a stream starts.
    review::validate(&prepared.diff, &limits)?;
    let options = Options {
        model_review: req.model_review.unwrap_or(true),
        instructions: req.instructions.or_else(|| rules.instructions.clone()),
        rules,
        limits,
        likelihood: review::likelihood::Settings::default(),
    };
    Ok((prepared, options, format))
}

/// A review running on a blocking thread, with the caller's slot and the guard that
/// cancels it when the client goes away.
struct Running {
    task: tokio::task::JoinHandle<Result<Report, ReviewError>>,
    permit: OwnedSemaphorePermit,
    guard: CancelOnDrop,
}

impl Running {
    /// Waits for the report; the slot is given back and the guard disarmed after.
    async fn finish(self) -> Result<Report, ApiError> {
        let outcome = self.task.await;
        drop(self.permit);
        drop(self.guard);
        Ok(outcome??)
    }
}

/// The review as server-sent events: `progress` while chunks are reviewed, then
/// `result` (or `error`), then `data: [DONE]`.
fn streamed(
    rx: UnboundedReceiver<Progress>,
    running: Running,
    audit: AuditSlot,
    format: Format,
) -> Response {
    let progress = UnboundedReceiverStream::new(rx).map(|p| {
        Event::default()
            .event("progress")
            .data(json!(p).to_string())
    });
    let result = stream::once(async move {
        let ev = match running.finish().await {
            Ok(report) => {
                audit.update(|a| {
                    a.prompt_tokens = Some(report.summary.prompt_tokens as i64);
                    a.completion_tokens = Some(report.summary.completion_tokens as i64);
                });
                let data = match format {
                    Format::Json => json!(report).to_string(),
                    Format::Markdown => {
                        json!({"markdown": format::render(&report, format)}).to_string()
                    }
                    f => format::render(&report, f).replace('\n', ""),
                };
                Event::default().event("result").data(data)
            }
            Err(err) => Event::default().event("error").data(
                json!({"error": {"message": err.message, "code": err.status.as_u16()}}).to_string(),
            ),
        };
        stream::iter([ev, Event::default().data("[DONE]")])
    })
    .flatten();
    let events = progress.chain(result).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// The review's limits from the server's configuration.
fn limits(
    state: &AppState,
    context: usize,
    max_chunks: Option<usize>,
    concurrency: Option<usize>,
) -> Result<Limits, ApiError> {
    let l = &state.config.limits;
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
    lease: &ModelLease,
    prepared: Prepared,
    options: &Options,
    cancel: CancelToken,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<Report, ReviewError> {
    let (engine, remote) = match &lease.backend {
        crate::models::Backend::Builtin(engine) => (Some(engine.clone()), None),
        crate::models::Backend::Remote(upstream) => (None, Some(upstream.clone())),
    };
    let model = engine.filter(|_| options.model_review).map(|engine| {
        EngineModel::new(
            engine,
            lease.model.id.clone(),
            cancel.clone(),
            options.limits.prompt_tokens + options.limits.prompt_tokens / 8,
            lease.model.speculation,
        )
    });
    // A remote chat backend reviews with its own structured output; it cannot judge
    // replaced lines (that needs the model's log-probabilities in place).
    let remote = remote
        .filter(|u| options.model_review && u.wire.kind.serves_chat())
        .map(|upstream| {
            RemoteReviewModel::new(
                upstream,
                lease.model.id.clone(),
                tokio::runtime::Handle::current(),
                cancel,
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
        judge: model
            .as_ref()
            .filter(|m| m.can_judge())
            .map(|m| m as &dyn review::InfillJudge),
    };
    review::review(
        &prepared.diff,
        &inputs,
        options,
        match (&model, &remote) {
            (Some(m), _) => Some(m as &dyn review::ReviewModel),
            (None, Some(r)) => Some(r as &dyn review::ReviewModel),
            (None, None) => None,
        },
        progress,
    )
}

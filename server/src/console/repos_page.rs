//! Repositories in the console: what the code index holds (state, ref, last sync,
//! files), adding a git repository by its path on the server, syncing one now and
//! removing one. Syncs run one at a time on a blocking thread holding the index's
//! writer lock (the CLI's `souffleur index` waits for the same lock); the page follows
//! their progress.
//!
//! A repository is given by its path on the server or by a git URL reachable from it.
//! A path from the form is untrusted: it must resolve (symbolic links followed) inside
//! one of `console.repo_roots`, and without any configured the console adds nothing.
//! A URL (`https://`, `ssh://`, `git://`, `user@host:path`, or `file://` under the
//! roots) is cloned with the server's `git` (its credentials and proxies apply) as a
//! mirror under `<home>/clones/`, and fetched again before each sync.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Extension;
use axum::Form;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use indexer::{Indexer, IndexerConfig, ProgressEvent, RepoSpec, RepoState};
use minijinja::context;
use serde_json::{Value, json};

use super::clock::utc_minutes;
use super::session::Session;
use super::{Signed, admin_form_refusal, blocking, is_admin, render};
use crate::http::observe::AuditSlot;
use crate::state::AppState;

/// A sync started from the console, as the page shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// `queued`, `syncing`, `done` or `failed`.
    pub phase: &'static str,
    /// Files processed.
    pub done: u64,
    /// Files to process.
    pub total: u64,
    /// The outcome, or why it failed.
    pub message: String,
}

/// Syncs started from the console, by repository; one runs at a time.
#[derive(Default)]
pub struct Jobs {
    by_repo: Mutex<HashMap<String, Job>>,
    writer: Mutex<()>,
}

impl Jobs {
    fn set(&self, repo: &str, job: Job) {
        if let Ok(mut m) = self.by_repo.lock() {
            m.insert(repo.to_string(), job);
        }
    }

    fn update(&self, repo: &str, f: impl FnOnce(&mut Job)) {
        if let Ok(mut m) = self.by_repo.lock()
            && let Some(j) = m.get_mut(repo)
        {
            f(j);
        }
    }

    fn snapshot(&self) -> HashMap<String, Job> {
        self.by_repo.lock().map(|m| m.clone()).unwrap_or_default()
    }
}

/// The directory `path` resolves to, if it lies inside one of `roots`.
pub fn inside_roots(path: &Path, roots: &[PathBuf]) -> Result<PathBuf, String> {
    if roots.is_empty() {
        return Err("adding repositories from the console is off: set `console.repo_roots` to the directories it may add from (or use `souffleur index add` on the server)".into());
    }
    if !path.is_absolute() {
        return Err("give the repository's absolute path on the server".into());
    }
    let real = path
        .canonicalize()
        .map_err(|e| format!("{} cannot be opened: {e}", path.display()))?;
    let allowed = roots
        .iter()
        .filter_map(|r| r.canonicalize().ok())
        .any(|root| real.starts_with(&root));
    if !allowed {
        return Err(format!(
            "{} is outside the directories the console may add from (`console.repo_roots`)",
            path.display()
        ));
    }
    Ok(real)
}

/// Where the console's clones live: `clones/` beside the index directory.
fn clone_dir(state: &AppState) -> Option<PathBuf> {
    state
        .index
        .as_ref()
        .map(|i| i.dir().with_file_name("clones"))
}

/// Whether `text` is a git URL rather than a path.
fn is_url(text: &str) -> bool {
    text.contains("://") || (!text.starts_with('/') && text.contains('@') && text.contains(':'))
}

/// Checks a git URL from the form: known transports only (no `ext::`, no options),
/// and `file://` only inside the roots.
pub fn checked_url(url: &str, roots: &[PathBuf]) -> Result<String, String> {
    if url.starts_with('-') || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("that is not a git URL".into());
    }
    if let Some(path) = url.strip_prefix("file://") {
        inside_roots(Path::new(path), roots)?;
        return Ok(url.to_string());
    }
    let scp_like = !url.contains("://") && url.contains('@') && url.contains(':');
    let known = ["https://", "http://", "ssh://", "git://"]
        .iter()
        .any(|p| url.starts_with(p));
    if known || scp_like {
        Ok(url.to_string())
    } else {
        Err(
            "a git URL starts with https://, ssh://, git:// or file://, or is user@host:path"
                .into(),
        )
    }
}

/// Runs the server's `git` with `args`; its error output on failure.
fn git(args: &[&str], cwd: Option<&Path>) -> Result<(), String> {
    let mut cmd = std::process::Command::new("git");
    cmd.args(args)
        // Never ask for a password on a terminal that is not there, and only the
        // transports checked above.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_ALLOW_PROTOCOL", "https:http:ssh:git:file")
        .stdin(std::process::Stdio::null());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("git could not run: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            err.trim()
        ))
    }
}

/// Mirrors `url` into the clones directory under `name`; gives the clone's path.
fn clone_mirror(state: &AppState, url: &str, name: &str) -> Result<PathBuf, String> {
    indexer::manifest::validate_repo_name(name).map_err(|e| e.to_string())?;
    let dir = clone_dir(state).ok_or("this server has no code index")?;
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let target = dir.join(format!("{name}.git"));
    if target.exists() {
        return Err(format!(
            "a clone named {name} exists already; remove the repository first"
        ));
    }
    let path = target.to_string_lossy().to_string();
    git(&["clone", "--mirror", "--quiet", "--", url, &path], None)?;
    Ok(target)
}

/// The name a URL's repository gets by default: its last path part without `.git`.
fn name_of_url(url: &str) -> String {
    url.trim_end_matches('/')
        .rsplit(['/', ':'])
        .next()
        .unwrap_or("repo")
        .trim_end_matches(".git")
        .to_string()
}

/// Runs `work` with the index's writer (one job at a time), then reads the
/// repositories again.
fn with_writer<T>(
    state: &AppState,
    work: impl FnOnce(&mut Indexer) -> Result<T, String>,
) -> Result<T, String> {
    let index = state
        .index
        .as_ref()
        .ok_or("this server has no code index (create one with `souffleur index add`)")?;
    let _one = state
        .console_jobs
        .writer
        .lock()
        .map_err(|_| "the index writer is unavailable")?;
    let mut indexer = Indexer::open(index.dir(), IndexerConfig::default())
        .map_err(|e| format!("the index is busy or unavailable: {e}"))?;
    let out = work(&mut indexer);
    drop(indexer);
    state.reload_repos();
    out
}

/// Syncs `repo` on a blocking thread, following its progress in the page's jobs.
fn start_sync(state: Arc<AppState>, repo: String) {
    state.console_jobs.set(
        &repo,
        Job {
            phase: "queued",
            done: 0,
            total: 0,
            message: String::new(),
        },
    );
    tokio::task::spawn_blocking(move || {
        let jobs = &state.console_jobs;
        let result = with_writer(&state, |indexer| {
            jobs.update(&repo, |j| j.phase = "syncing");
            // A clone the console made is brought up to date with its remote first.
            let path = indexer
                .index()
                .status()
                .ok()
                .and_then(|s| s.repos.into_iter().find(|r| r.record.name == repo))
                .map(|r| r.record.path);
            if let (Some(path), Some(clones)) = (path, clone_dir(&state))
                && path.starts_with(&clones)
            {
                git(&["remote", "update", "--prune"], Some(&path))?;
            }
            let progress = |e: &ProgressEvent| match e {
                ProgressEvent::Started { to_process, .. } => {
                    jobs.update(&repo, |j| j.total = *to_process)
                }
                ProgressEvent::Progress(p) => jobs.update(&repo, |j| {
                    j.done = p.done;
                    j.total = p.total;
                }),
                _ => {}
            };
            indexer
                .sync_repo(&repo, &progress)
                .map_err(|e| e.to_string())
        });
        match result {
            Ok(report) => jobs.update(&repo, |j| {
                j.phase = "done";
                j.message = if report.up_to_date {
                    "already up to date".to_string()
                } else {
                    format!(
                        "{} files processed, {} removed, in {:.1} s",
                        report.files_processed, report.files_deleted, report.elapsed_secs
                    )
                };
            }),
            Err(e) => jobs.update(&repo, |j| {
                j.phase = "failed";
                j.message = e;
            }),
        }
    });
}

/// The repositories as the page lists them, and whether a sync is running.
fn repo_rows(state: &AppState) -> Result<(Vec<Value>, bool), String> {
    let Some(index) = &state.index else {
        return Ok((Vec::new(), false));
    };
    let status = index.status().map_err(|e| e.to_string())?;
    let jobs = state.console_jobs.snapshot();
    let mut running = false;
    let mut rows: Vec<Value> = status
        .repos
        .iter()
        .map(|r| {
            let state = match &r.state {
                RepoState::NeverSynced => "never synced".to_string(),
                RepoState::Synced => "synced".to_string(),
                RepoState::Syncing { .. } => "syncing".to_string(),
                RepoState::Interrupted { .. } => "interrupted".to_string(),
            };
            let job = jobs.get(&r.record.name);
            if job.is_some_and(|j| matches!(j.phase, "queued" | "syncing")) {
                running = true;
            }
            json!({
                "name": r.record.name,
                "path": r.record.path.display().to_string(),
                "git_ref": if r.record.working_tree { "working tree".to_string() } else { r.record.git_ref.clone() },
                "state": state,
                "last_sync": r.record.last_sync.as_ref().map(|s| utc_minutes(s.finished_at as i64)),
                "files": r.record.last_sync.as_ref().map(|s| s.stats.files_indexed),
                "job": job.map(|j| json!({"phase": j.phase, "done": j.done, "total": j.total, "message": j.message})),
            })
        })
        .collect();
    // A repository being added is listed before the index has it.
    for (name, j) in &jobs {
        if !status.repos.iter().any(|r| &r.record.name == name) && j.phase != "done" {
            running |= matches!(j.phase, "queued" | "syncing");
            rows.push(json!({"name": name, "path": "", "git_ref": "", "state": "adding",
                             "job": {"phase": j.phase, "done": j.done, "total": j.total, "message": j.message}}));
        }
    }
    Ok((rows, running))
}

async fn repos_page(
    state: Arc<AppState>,
    session: Session,
    status: StatusCode,
    extra: minijinja::Value,
) -> Response {
    let worker = state.clone();
    let listed = blocking(move || repo_rows(&worker)).await;
    let base = context! {
        admin => true, user => session.user, csrf => session.csrf, page => "repos", title => "Repositories",
        has_index => state.index.is_some(),
        roots => state.config.console.repo_roots.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    };
    match listed {
        Ok((rows, running)) => render(
            status,
            "repos.html",
            context! { ..base, ..context! { repos => rows, running => running }, ..extra },
        ),
        Err(e) => render(
            StatusCode::INTERNAL_SERVER_ERROR,
            "repos.html",
            context! { ..base, ..context! { error => e, repos => Vec::<Value>::new() } },
        ),
    }
}

/// `GET /admin/repos`
pub async fn repos(State(state): State<Arc<AppState>>, Signed(session): Signed) -> Response {
    if !is_admin(&session) {
        return StatusCode::FORBIDDEN.into_response();
    }
    repos_page(state, session, StatusCode::OK, context! {}).await
}

/// `POST /admin/repos`: registers a repository under the allowed roots and syncs it.
pub async fn add_repo(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admin_form_refusal(&session, &form) {
        return refused;
    }
    let field = |k: &str| {
        form.get(k)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let Some(path) = field("path") else {
        return repos_page(
            state,
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            context! { error => "Give the repository's path or git URL." },
        )
        .await;
    };
    let roots = state.config.console.repo_roots.clone();
    let from_url = is_url(&path);
    let source = if from_url {
        checked_url(&path, &roots)
    } else {
        inside_roots(Path::new(&path), &roots).map(|p| p.display().to_string())
    };
    let source = match source {
        Ok(s) => s,
        Err(e) => {
            return repos_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await;
        }
    };
    let name = field("name");
    let git_ref = field("ref");
    let worker = state.clone();
    let from = source.clone();
    let added = blocking(move || {
        let path = if from_url {
            let name = name.clone().unwrap_or_else(|| name_of_url(&from));
            clone_mirror(&worker, &from, &name)?
        } else {
            PathBuf::from(&from)
        };
        let spec = RepoSpec {
            path: path.clone(),
            name,
            git_ref,
            working_tree: false,
        };
        let added = with_writer(&worker, |indexer| {
            indexer.add_repo(spec).map_err(|e| e.to_string())
        });
        if added.is_err() && from_url {
            // The clone is not kept for a repository that was not added.
            let _ = std::fs::remove_dir_all(&path);
        }
        added
    })
    .await;
    match added {
        Ok(record) => {
            audit.update(|a| {
                a.caller = Some(session.user.clone());
                a.action = Some(format!(
                    "add repository {} ({}, {})",
                    record.name, source, record.git_ref
                ));
            });
            start_sync(state.clone(), record.name.clone());
            repos_page(state, session, StatusCode::OK, context! { notice => format!("Repository {} was added; it is syncing.", record.name) }).await
        }
        Err(e) => {
            repos_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}

/// `POST /admin/repos/sync`
pub async fn sync_repo(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admin_form_refusal(&session, &form) {
        return refused;
    }
    let name = form.get("name").cloned().unwrap_or_default();
    let known = state
        .repos
        .read()
        .map(|r| r.iter().any(|k| k.name == name))
        .unwrap_or(false);
    if !known {
        return repos_page(
            state,
            session,
            StatusCode::UNPROCESSABLE_ENTITY,
            context! { error => format!("No repository named {name} is indexed.") },
        )
        .await;
    }
    audit.update(|a| {
        a.caller = Some(session.user.clone());
        a.action = Some(format!("sync repository {name}"));
    });
    start_sync(state.clone(), name.clone());
    repos_page(
        state,
        session,
        StatusCode::OK,
        context! { notice => format!("Repository {name} is syncing.") },
    )
    .await
}

/// `POST /admin/repos/remove`
pub async fn remove_repo(
    State(state): State<Arc<AppState>>,
    Signed(session): Signed,
    Extension(audit): Extension<AuditSlot>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = admin_form_refusal(&session, &form) {
        return refused;
    }
    let name = form.get("name").cloned().unwrap_or_default();
    let worker = state.clone();
    let n = name.clone();
    let removed = blocking(move || {
        let clones = clone_dir(&worker);
        with_writer(&worker, |indexer| {
            let path = indexer
                .index()
                .status()
                .ok()
                .and_then(|s| s.repos.into_iter().find(|r| r.record.name == n))
                .map(|r| r.record.path);
            indexer.remove_repo(&n).map_err(|e| e.to_string())?;
            // A clone the console made goes with its repository.
            if let (Some(path), Some(clones)) = (path, clones)
                && path.starts_with(&clones)
            {
                let _ = std::fs::remove_dir_all(&path);
            }
            Ok(())
        })
    })
    .await;
    match removed {
        Ok(()) => {
            audit.update(|a| {
                a.caller = Some(session.user.clone());
                a.action = Some(format!("remove repository {name}"));
            });
            if let Ok(mut m) = state.console_jobs.by_repo.lock() {
                m.remove(&name);
            }
            repos_page(
                state,
                session,
                StatusCode::OK,
                context! { notice => format!("Repository {name} was removed from the index.") },
            )
            .await
        }
        Err(e) => {
            repos_page(
                state,
                session,
                StatusCode::UNPROCESSABLE_ENTITY,
                context! { error => e },
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_resolve_inside_the_roots() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().join("git");
        std::fs::create_dir_all(root.join("app")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("secret")).expect("mkdir");
        std::os::unix::fs::symlink(dir.path().join("secret"), root.join("link")).expect("link");
        let roots = vec![root.clone()];
        assert!(inside_roots(&root.join("app"), &roots).is_ok());
        for (path, why) in [
            (root.join("../secret"), "outside"),
            (root.join("link"), "outside"),
            (PathBuf::from("git/app"), "absolute"),
            (root.join("missing"), "cannot be opened"),
        ] {
            let e = inside_roots(&path, &roots).expect_err(why);
            assert!(e.contains(why), "{path:?}: {e}");
        }
        assert!(
            inside_roots(&root.join("app"), &[])
                .expect_err("off")
                .contains("repo_roots")
        );
    }
}

//! `souffleur index ...`: manage the code index (issue 3).
//!
//! The index lives in `<home>/index/`. Writing commands (`add`, `sync`,
//! `remove`) take the index's writer lock; `status` and `search` do not.
//! With `--json`, the result is one JSON document on stdout and progress
//! events are JSON lines on stderr.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::home::Home;
use indexer::{
    CodeIndex, IndexStatus, Indexer, IndexerConfig, ProgressEvent, ProgressSink, RepoSpec,
    RepoState, SearchRequest, SyncReport,
};

/// Subcommands of `souffleur index`.
#[derive(Debug, clap::Subcommand)]
pub enum IndexCommand {
    /// Register a local git repository and index it.
    Add {
        /// Path of the repository.
        path: PathBuf,
        /// Name in the index (default: the directory name).
        #[arg(long)]
        name: Option<String>,
        /// Ref to index: branch, tag or commit.
        #[arg(long = "ref", default_value = "HEAD")]
        git_ref: String,
        /// Index the working tree (uncommitted and untracked files) instead of a ref.
        #[arg(long, conflicts_with = "git_ref")]
        working_tree: bool,
        /// Only register; index at the next `sync`.
        #[arg(long)]
        no_sync: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Bring repositories up to date (all of them by default).
    Sync {
        /// Repositories to sync.
        names: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Show the repositories, their sync state and what the index holds.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Search indexed code.
    Search {
        /// Words or identifiers (camelCase and snake_case parts match too).
        query: String,
        /// Only these repositories (repeatable; default: all).
        #[arg(long = "repo")]
        repos: Vec<String>,
        /// Only this language (rust, python, ...).
        #[arg(long)]
        lang: Option<String>,
        /// Most results.
        #[arg(long, default_value_t = 10)]
        limit: usize,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Remove a repository and its documents from the index.
    Remove {
        /// Repository name.
        name: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an index command against `<home>/index`.
pub fn run(home: &Home, cmd: IndexCommand) -> Result<()> {
    let dir = home.index();
    match cmd {
        IndexCommand::Add {
            path,
            name,
            git_ref,
            working_tree,
            no_sync,
            json,
        } => {
            let mut indexer = open_writer(&dir)?;
            let record = indexer.add_repo(RepoSpec {
                path,
                name,
                git_ref: Some(git_ref),
                working_tree,
            })?;
            if !json {
                eprintln!(
                    "added {} ({} at {})",
                    record.name,
                    record.path.display(),
                    if record.working_tree {
                        "working tree"
                    } else {
                        record.git_ref.as_str()
                    }
                );
            }
            if no_sync {
                if json {
                    print_json(&record)?;
                }
                return Ok(());
            }
            sync(&mut indexer, &[record.name], json)
        }
        IndexCommand::Sync { names, json } => {
            let mut indexer = open_writer(&dir)?;
            sync(&mut indexer, &names, json)
        }
        IndexCommand::Status { json } => {
            let status = match CodeIndex::open(&dir) {
                Ok(index) => index.status()?,
                Err(indexer::IndexError::NoIndex(_)) => {
                    if json {
                        print_json(&serde_json::json!({ "dir": dir, "repos": [] }))?;
                    } else {
                        println!(
                            "no code index yet; add a repository with `souffleur index add PATH`"
                        );
                    }
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
            if json {
                print_json(&status)
            } else {
                print_status(&status);
                Ok(())
            }
        }
        IndexCommand::Search {
            query,
            repos,
            lang,
            limit,
            json,
        } => {
            let index = CodeIndex::open(&dir)?;
            let hits = index.search(&SearchRequest {
                query,
                repos,
                language: lang,
                limit,
            })?;
            if json {
                return print_json(&hits);
            }
            if hits.is_empty() {
                println!("no match");
            }
            for hit in hits {
                let scope = if hit.scope.is_empty() {
                    String::new()
                } else {
                    format!("  [{}]", hit.scope)
                };
                println!(
                    "{}:{}:{}-{}  ({:.2}){scope}",
                    hit.repo, hit.path, hit.start_line, hit.end_line, hit.score
                );
                for line in hit.text.lines().take(4) {
                    println!("    {line}");
                }
            }
            Ok(())
        }
        IndexCommand::Remove { name, json } => {
            let mut indexer = open_writer(&dir)?;
            indexer.remove_repo(&name)?;
            if json {
                print_json(&serde_json::json!({ "removed": name }))
            } else {
                println!("removed {name}");
                Ok(())
            }
        }
    }
}

fn open_writer(dir: &Path) -> Result<Indexer> {
    Indexer::open(dir, IndexerConfig::default())
        .with_context(|| format!("cannot open the code index in {}", dir.display()))
}

fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// Most warnings printed per repository on a terminal (all are in `status --json`).
const MAX_PRINTED_WARNINGS: usize = 20;

/// Shows progress: a bar on a terminal, JSON lines with `--json`, plain
/// lines otherwise.
struct CliProgress {
    json: bool,
    bar: Mutex<Option<indicatif::ProgressBar>>,
    printed_warnings: Mutex<usize>,
}

impl CliProgress {
    fn new(json: bool) -> CliProgress {
        CliProgress {
            json,
            bar: Mutex::new(None),
            printed_warnings: Mutex::new(0),
        }
    }

    fn println(&self, line: &str) {
        match self.bar.lock().ok().as_deref() {
            Some(Some(bar)) => bar.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

impl ProgressSink for CliProgress {
    fn event(&self, event: &ProgressEvent) {
        if self.json {
            if let Ok(line) = serde_json::to_string(event) {
                eprintln!("{line}");
            }
            return;
        }
        match event {
            ProgressEvent::Started {
                repo,
                total_files,
                to_process,
                to_delete,
            } => {
                if let Ok(mut n) = self.printed_warnings.lock() {
                    *n = 0;
                }
                eprintln!(
                    "{repo}: {total_files} files, {to_process} to index, {to_delete} to remove"
                );
                let bar = indicatif::ProgressBar::new(*to_process);
                if std::io::stderr().is_terminal() {
                    bar.set_style(
                        indicatif::ProgressStyle::with_template(
                            "{prefix} [{bar:30}] {pos}/{len} files  {per_sec}  ETA {eta}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                        .progress_chars("=> "),
                    );
                    bar.set_prefix(repo.clone());
                    bar.enable_steady_tick(Duration::from_millis(250));
                } else {
                    bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                }
                if let Ok(mut slot) = self.bar.lock() {
                    *slot = Some(bar);
                }
            }
            ProgressEvent::Progress(snapshot) => {
                if let Ok(slot) = self.bar.lock()
                    && let Some(bar) = slot.as_ref()
                {
                    bar.set_position(snapshot.done);
                }
            }
            ProgressEvent::Committed { .. } => {}
            ProgressEvent::Warning { repo, message } => {
                let n = self
                    .printed_warnings
                    .lock()
                    .map(|mut n| {
                        *n += 1;
                        *n
                    })
                    .unwrap_or(0);
                if n <= MAX_PRINTED_WARNINGS {
                    self.println(&format!("warning: {repo}: {message}"));
                } else if n == MAX_PRINTED_WARNINGS + 1 {
                    self.println(&format!(
                        "warning: {repo}: more warnings not shown (see `souffleur index status --json`)"
                    ));
                }
            }
            ProgressEvent::Finished(_) => {
                if let Ok(mut slot) = self.bar.lock()
                    && let Some(bar) = slot.take()
                {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

fn sync(indexer: &mut Indexer, names: &[String], json: bool) -> Result<()> {
    let progress = CliProgress::new(json);
    let results = indexer.sync(names, &progress)?;
    let mut failed = 0;
    let mut json_results = Vec::new();
    for (name, result) in results {
        match result {
            Ok(report) => {
                if json {
                    json_results.push(serde_json::to_value(&report)?);
                } else {
                    print_report(&report);
                }
            }
            Err(e) => {
                failed += 1;
                if json {
                    json_results.push(serde_json::json!({ "repo": name, "error": e.to_string() }));
                } else {
                    eprintln!("error: {name}: {e}");
                }
            }
        }
    }
    if json {
        print_json(&json_results)?;
    }
    if failed > 0 {
        bail!("{failed} repositories could not be synced");
    }
    Ok(())
}

fn print_report(r: &SyncReport) {
    if r.up_to_date {
        println!(
            "{}: up to date ({} files indexed)",
            r.repo, r.stats.files_indexed
        );
        return;
    }
    println!(
        "{}: {} files indexed; this sync: {} read, {} removed, {} unchanged in {:.2} s ({:.0} files/s, {:.1} MB/s)",
        r.repo,
        r.stats.files_indexed,
        r.files_processed,
        r.files_deleted,
        r.files_unchanged,
        r.elapsed_secs,
        r.files_per_sec,
        r.mb_per_sec
    );
    if !r.stats.skipped.is_empty() {
        println!("  skipped: {}", join_counts(&r.stats.skipped));
    }
    if r.warning_count > 0 {
        println!("  {} warnings", r.warning_count);
    }
}

fn join_counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_status(status: &IndexStatus) {
    println!(
        "index {}: {} documents, {:.1} MB on disk{}",
        status.dir.display(),
        status.documents,
        status.size_bytes as f64 / 1e6,
        match status.locked_by {
            Some(pid) => format!(", being written by pid {pid}"),
            None => String::new(),
        }
    );
    if status.repos.is_empty() {
        println!("no repositories; add one with `souffleur index add PATH`");
    }
    for repo in &status.repos {
        let r = &repo.record;
        let source = if r.working_tree {
            "working tree".to_string()
        } else {
            r.git_ref.clone()
        };
        let state = match &repo.state {
            RepoState::NeverSynced => "never synced".to_string(),
            RepoState::Synced => "synced".to_string(),
            RepoState::Syncing { pid } => format!("syncing (pid {pid})"),
            RepoState::Interrupted { pid } => {
                format!("last sync interrupted (pid {pid}); run `souffleur index sync`")
            }
        };
        println!("{}  {} @ {}  [{state}]", r.name, r.path.display(), source);
        if let Some(last) = &r.last_sync {
            let s = &last.stats;
            let commit = last
                .commit
                .as_deref()
                .map(|c| c.chars().take(12).collect::<String>())
                .unwrap_or_else(|| "-".to_string());
            println!(
                "  commit {commit}: {} files ({:.1} MB), {} chunks, {} symbols",
                s.files_indexed,
                s.bytes_indexed as f64 / 1e6,
                s.chunks,
                s.symbols
            );
            if !s.languages.is_empty() {
                println!("  languages: {}", join_counts(&s.languages));
            }
            if !s.skipped.is_empty() {
                println!("  skipped: {}", join_counts(&s.skipped));
            }
            if s.parse_timeouts > 0 || s.non_utf8 > 0 {
                println!(
                    "  parse timeouts {}, non-UTF-8 files {}",
                    s.parse_timeouts, s.non_utf8
                );
            }
        }
    }
}

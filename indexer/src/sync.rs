//! The writing side: registering repositories and syncing them into the
//! index, incrementally and in parallel.
//!
//! A sync resolves the ref, walks the tree, compares each file's blob id
//! with the one recorded in the index, deletes the documents of deleted and
//! changed files and indexes the new and changed ones on a rayon pool,
//! committing every [`IndexerConfig::commit_every`] files. A commit is
//! atomic in tantivy, and the per-file state lives in the same commit as
//! the file's documents, so a sync killed at any point leaves an index that
//! opens, answers queries, and is completed by the next sync.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use git2::{ErrorCode, Repository};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::docs::{
    Processed, STATUS_NON_UTF8, STATUS_PARSE_TIMEOUT, Source, is_indexed_status, process_file,
};
use crate::error::{IndexError, Result};
use crate::index::CodeIndex;
use crate::lock::IndexLock;
use crate::manifest::{
    InProgress, MAX_WARNINGS, Manifest, RepoRecord, RepoStats, SyncRecord, now_secs,
    validate_repo_name,
};
use crate::parse::ParseConfig;
use crate::progress::{ProgressEvent, ProgressSink, Tracker};
use crate::store::{FileState, Store};
use crate::walk::{FileEntry, WalkOutput, walk_tree, walk_worktree};

/// Settings of the writing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexerConfig {
    /// Parsing and chunking.
    pub parse: ParseConfig,
    /// Files larger than this are skipped (counted as `too_large`).
    pub max_file_bytes: u64,
    /// Commit after this many processed files (progress survives a crash).
    pub commit_every: usize,
    /// Parsing threads; 0 means one per core.
    pub threads: usize,
    /// Tantivy indexing threads.
    pub writer_threads: usize,
    /// Memory budget of the tantivy writer, in bytes.
    pub writer_memory_bytes: usize,
}

impl Default for IndexerConfig {
    fn default() -> Self {
        IndexerConfig {
            parse: ParseConfig::default(),
            max_file_bytes: 1024 * 1024,
            commit_every: 5000,
            threads: 0,
            writer_threads: 1,
            writer_memory_bytes: 128 * 1024 * 1024,
        }
    }
}

/// What to register with [`Indexer::add_repo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RepoSpec {
    /// Path of the repository (its root, or a bare repository).
    pub path: PathBuf,
    /// Name in the index; defaults to the directory name.
    pub name: Option<String>,
    /// Ref to index; defaults to `HEAD`.
    pub git_ref: Option<String>,
    /// Index the working tree instead of a ref.
    pub working_tree: bool,
}

/// The outcome of syncing one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Repository name.
    pub repo: String,
    /// Commit indexed (`None` for a working tree or an empty repository).
    pub commit: Option<String>,
    /// Nothing had changed since the last sync: no file was looked at.
    pub up_to_date: bool,
    /// Candidate files in the tree.
    pub files_total: u64,
    /// Files read and (re)indexed or skipped by content in this sync.
    pub files_processed: u64,
    /// Files whose documents were removed because they are gone.
    pub files_deleted: u64,
    /// Files left as they were.
    pub files_unchanged: u64,
    /// Bytes read in this sync.
    pub bytes_processed: u64,
    /// Wall time of the sync.
    pub elapsed_secs: f64,
    /// `files_processed` per second.
    pub files_per_sec: f64,
    /// Megabytes (10^6) read per second.
    pub mb_per_sec: f64,
    /// What the index holds for the repository now.
    pub stats: RepoStats,
    /// Warnings (at most [`MAX_WARNINGS`] are kept).
    pub warnings: Vec<String>,
    /// Number of warnings, including those not kept.
    pub warning_count: u64,
}

/// The writing side of an index. Holds the index's writer lock for its
/// whole life: a second `Indexer` on the same directory, in any process,
/// fails with [`IndexError::Locked`].
pub struct Indexer {
    dir: PathBuf,
    config: IndexerConfig,
    index: CodeIndex,
    pool: rayon::ThreadPool,
    _lock: IndexLock,
}

impl std::fmt::Debug for Indexer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Indexer")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn open_repo(path: &Path) -> Result<Repository> {
    Repository::open(path).map_err(|e| IndexError::NotAGitRepository {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

/// Resolves `git_ref`; `Ok(None)` for a repository without commits.
fn resolve<'r>(repo: &'r Repository, record: &RepoRecord) -> Result<Option<git2::Commit<'r>>> {
    if record.git_ref == "HEAD" {
        match repo.head() {
            Err(e) if e.code() == ErrorCode::UnbornBranch || e.code() == ErrorCode::NotFound => {
                return Ok(None);
            }
            _ => {}
        }
    }
    let not_found = |e: git2::Error| IndexError::RefNotFound {
        path: record.path.clone(),
        git_ref: record.git_ref.clone(),
        message: e.message().to_string(),
    };
    let object = repo.revparse_single(&record.git_ref).map_err(not_found)?;
    let commit = object.peel_to_commit().map_err(not_found)?;
    Ok(Some(commit))
}

struct Warnings {
    kept: Vec<String>,
    count: u64,
}

impl Warnings {
    fn push(&mut self, message: String) {
        self.count += 1;
        if self.kept.len() < MAX_WARNINGS {
            self.kept.push(message);
        }
    }
}

impl Indexer {
    /// Opens (creating if needed) the index in `dir` for writing.
    pub fn open(dir: &Path, config: IndexerConfig) -> Result<Indexer> {
        std::fs::create_dir_all(dir).map_err(|e| IndexError::io(dir, e))?;
        let lock = IndexLock::acquire(dir)?;
        // Blob ids come from the trees we walk; re-hashing every object read
        // costs ~10% of a full index and protects only against disk corruption.
        git2::opts::strict_hash_verification(false);
        let manifest = Manifest::load(dir)?;
        if !dir.join(crate::manifest::MANIFEST_FILE).exists() {
            manifest.store(dir)?;
        }
        let store = Store::open(dir, true)?;
        let threads = if config.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.threads
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("souffleur-index-{i}"))
            .build()
            .map_err(|e| IndexError::io(dir, std::io::Error::other(e.to_string())))?;
        Ok(Indexer {
            dir: dir.to_path_buf(),
            config,
            index: CodeIndex::from_store(dir, store),
            pool,
            _lock: lock,
        })
    }

    /// The reading side of the same index (search, status, retrieval).
    pub fn index(&self) -> &CodeIndex {
        &self.index
    }

    /// The settings in use.
    pub fn config(&self) -> &IndexerConfig {
        &self.config
    }

    /// Registers a repository (does not sync it).
    pub fn add_repo(&mut self, spec: RepoSpec) -> Result<RepoRecord> {
        let path =
            std::fs::canonicalize(&spec.path).map_err(|e| IndexError::NotAGitRepository {
                path: spec.path.clone(),
                message: e.to_string(),
            })?;
        let repo = open_repo(&path)?;
        let name = match spec.name {
            Some(name) => name,
            None => default_name(&path),
        };
        validate_repo_name(&name)?;
        let mut manifest = Manifest::load(&self.dir)?;
        if manifest.repo(&name).is_some() {
            return Err(IndexError::RepoExists(name));
        }
        if spec.working_tree && repo.workdir().is_none() {
            return Err(IndexError::NotAGitRepository {
                path,
                message: "a bare repository has no working tree to index".to_string(),
            });
        }
        let record = RepoRecord {
            name,
            path,
            git_ref: spec.git_ref.unwrap_or_else(|| "HEAD".to_string()),
            working_tree: spec.working_tree,
            added_at: now_secs(),
            last_sync: None,
            sync_in_progress: None,
        };
        if !record.working_tree {
            resolve(&repo, &record)?;
        }
        manifest.repos.push(record.clone());
        manifest.store(&self.dir)?;
        Ok(record)
    }

    /// Removes a repository and all its documents.
    pub fn remove_repo(&mut self, name: &str) -> Result<()> {
        let manifest = Manifest::load(&self.dir)?;
        if manifest.repo(name).is_none() {
            return Err(IndexError::UnknownRepo(name.to_string()));
        }
        let store = self.index.store();
        let mut writer = store.writer(1, 0)?;
        writer.delete_term(tantivy::Term::from_field_text(store.fields.repo, name));
        writer.commit()?;
        writer.wait_merging_threads()?;
        // Documents go first: a crash here leaves a registered, empty
        // repository that the next sync fills again.
        let mut manifest = Manifest::load(&self.dir)?;
        manifest.repos.retain(|r| r.name != name);
        manifest.store(&self.dir)?;
        self.index.reload()?;
        Ok(())
    }

    /// Syncs the named repositories (all when `names` is empty), one after
    /// the other. A failing repository does not stop the others.
    pub fn sync(
        &mut self,
        names: &[String],
        progress: &dyn ProgressSink,
    ) -> Result<Vec<(String, Result<SyncReport>)>> {
        let names: Vec<String> = if names.is_empty() {
            Manifest::load(&self.dir)?
                .repos
                .into_iter()
                .map(|r| r.name)
                .collect()
        } else {
            names.to_vec()
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let result = self.sync_repo(&name, progress);
            if let Err(e) = &result {
                progress.event(&ProgressEvent::Warning {
                    repo: name.clone(),
                    message: e.to_string(),
                });
            }
            out.push((name, result));
        }
        Ok(out)
    }

    /// Syncs one repository.
    pub fn sync_repo(&mut self, name: &str, progress: &dyn ProgressSink) -> Result<SyncReport> {
        let started = Instant::now();
        let manifest = Manifest::load(&self.dir)?;
        let record = manifest
            .repo(name)
            .cloned()
            .ok_or_else(|| IndexError::UnknownRepo(name.to_string()))?;
        let repo = open_repo(&record.path)?;
        let mut warnings = Warnings {
            kept: Vec::new(),
            count: 0,
        };
        let (walk, commit) = if record.working_tree {
            let Some(workdir) = repo.workdir() else {
                return Err(IndexError::NotAGitRepository {
                    path: record.path.clone(),
                    message: "a bare repository has no working tree to index".to_string(),
                });
            };
            (walk_worktree(workdir), None)
        } else {
            match resolve(&repo, &record)? {
                Some(commit) => {
                    let id = commit.id().to_string();
                    if let Some(last) = &record.last_sync
                        && last.commit.as_deref() == Some(id.as_str())
                        && record.sync_in_progress.is_none()
                    {
                        let report = up_to_date_report(name, last, started.elapsed());
                        progress.event(&ProgressEvent::Finished(Box::new(report.clone())));
                        return Ok(report);
                    }
                    (walk_tree(&repo, commit.tree_id())?, Some(id))
                }
                None => {
                    warnings.push(format!(
                        "{}: repository has no commits yet; nothing to index",
                        record.path.display()
                    ));
                    (WalkOutput::default(), None)
                }
            }
        };
        drop(repo);
        for w in &walk.warnings {
            progress.event(&ProgressEvent::Warning {
                repo: name.to_string(),
                message: w.clone(),
            });
        }
        for w in walk.warnings.iter().cloned() {
            warnings.push(w);
        }

        let store = self.index.store();
        let mut states = store.load_file_states(name)?;
        let present: HashSet<&str> = walk.files.iter().map(|f| f.path.as_str()).collect();
        let deleted: Vec<String> = states
            .keys()
            .filter(|p| !present.contains(p.as_str()))
            .cloned()
            .collect();
        let to_process: Vec<&FileEntry> = walk
            .files
            .iter()
            .filter(|f| {
                states
                    .get(&f.path)
                    .is_none_or(|s| s.blob != f.oid.to_string())
            })
            .collect();
        let files_total = walk.files.len() as u64;
        let files_unchanged = files_total - to_process.len() as u64;
        progress.event(&ProgressEvent::Started {
            repo: name.to_string(),
            total_files: files_total,
            to_process: to_process.len() as u64,
            to_delete: deleted.len() as u64,
        });

        {
            let mut manifest = Manifest::load(&self.dir)?;
            if let Some(r) = manifest.repo_mut(name) {
                r.sync_in_progress = Some(InProgress {
                    pid: std::process::id(),
                    started_at: now_secs(),
                    commit: commit.clone(),
                });
            }
            manifest.store(&self.dir)?;
        }

        let fields = store.fields.clone();
        let mut writer =
            store.writer(self.config.writer_threads, self.config.writer_memory_bytes)?;
        for path in &deleted {
            writer.delete_term(fields.file_key_term(name, path));
            states.remove(path);
        }
        let tracker = Tracker::new(name, to_process.len() as u64, progress);
        let working_tree = if record.working_tree {
            // Checked above: a working-tree repository has a workdir.
            Repository::open(&record.path)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf))
        } else {
            None
        };
        let error: Mutex<Option<IndexError>> = Mutex::new(None);
        let mut bytes_processed = 0u64;
        let parse_cfg = self.config.parse;
        let max_bytes = self.config.max_file_bytes;
        let commit_every = self.config.commit_every.max(1);
        let mut committed_any = false;
        for batch in to_process.chunks(commit_every) {
            let writer_ref = &writer;
            let processed: Vec<(String, FileState, Option<String>)> = self.pool.install(|| {
                batch
                    .par_iter()
                    .map_init(
                        || Source::open(&record.path, working_tree.as_deref()),
                        |source, entry| {
                            let Processed {
                                path,
                                state,
                                warning,
                                docs,
                            } = process_file(source, entry, name, &fields, &parse_cfg, max_bytes);
                            writer_ref.delete_term(fields.file_key_term(name, &path));
                            for doc in docs {
                                if let Err(e) = writer_ref.add_document(doc) {
                                    if let Ok(mut slot) = error.lock() {
                                        slot.get_or_insert(IndexError::Search(e));
                                    }
                                    break;
                                }
                            }
                            if let Some(message) = &warning {
                                progress.event(&ProgressEvent::Warning {
                                    repo: name.to_string(),
                                    message: message.clone(),
                                });
                            }
                            tracker.file_done(state.bytes);
                            (path, state, warning)
                        },
                    )
                    .collect()
            });
            if let Some(e) = error.lock().ok().and_then(|mut slot| slot.take()) {
                return Err(e);
            }
            writer.commit()?;
            committed_any = true;
            progress.event(&ProgressEvent::Committed {
                repo: name.to_string(),
                done: tracker.done(),
            });
            for (path, state, warning) in processed {
                if is_indexed_status(&state.status) {
                    bytes_processed += state.bytes;
                }
                if let Some(message) = warning {
                    warnings.push(message);
                }
                states.insert(path, state);
            }
        }
        if !committed_any && !deleted.is_empty() {
            writer.commit()?;
        }
        writer.wait_merging_threads()?;
        self.index.reload()?;

        let stats = compute_stats(states.values(), &walk);
        let elapsed = started.elapsed();
        let secs = elapsed.as_secs_f64().max(1e-9);
        let report = SyncReport {
            repo: name.to_string(),
            commit: commit.clone(),
            up_to_date: false,
            files_total,
            files_processed: to_process.len() as u64,
            files_deleted: deleted.len() as u64,
            files_unchanged,
            bytes_processed,
            elapsed_secs: elapsed.as_secs_f64(),
            files_per_sec: to_process.len() as f64 / secs,
            mb_per_sec: bytes_processed as f64 / 1e6 / secs,
            stats: stats.clone(),
            warnings: warnings.kept.clone(),
            warning_count: warnings.count,
        };
        let mut manifest = Manifest::load(&self.dir)?;
        if let Some(r) = manifest.repo_mut(name) {
            r.sync_in_progress = None;
            r.last_sync = Some(SyncRecord {
                commit,
                finished_at: now_secs(),
                stats,
                warnings: warnings.kept,
            });
        }
        manifest.store(&self.dir)?;
        progress.event(&ProgressEvent::Finished(Box::new(report.clone())));
        Ok(report)
    }
}

fn up_to_date_report(name: &str, last: &SyncRecord, elapsed: Duration) -> SyncReport {
    SyncReport {
        repo: name.to_string(),
        commit: last.commit.clone(),
        up_to_date: true,
        files_total: last.stats.files_seen,
        files_processed: 0,
        files_deleted: 0,
        files_unchanged: last.stats.files_seen,
        bytes_processed: 0,
        elapsed_secs: elapsed.as_secs_f64(),
        files_per_sec: 0.0,
        mb_per_sec: 0.0,
        stats: last.stats.clone(),
        warnings: Vec::new(),
        warning_count: 0,
    }
}

fn compute_stats<'a>(states: impl Iterator<Item = &'a FileState>, walk: &WalkOutput) -> RepoStats {
    let mut stats = RepoStats::default();
    let mut languages: BTreeMap<String, u64> = BTreeMap::new();
    let mut skipped: BTreeMap<String, u64> = BTreeMap::new();
    for state in states {
        stats.files_seen += 1;
        if is_indexed_status(&state.status) {
            stats.files_indexed += 1;
            stats.bytes_indexed += state.bytes;
            stats.chunks += state.n_chunks;
            stats.symbols += state.n_symbols;
            *languages.entry(state.lang.clone()).or_insert(0) += 1;
            if state.status == STATUS_PARSE_TIMEOUT {
                stats.parse_timeouts += 1;
            } else if state.status == STATUS_NON_UTF8 {
                stats.non_utf8 += 1;
            }
        } else {
            *skipped.entry(state.status.clone()).or_insert(0) += 1;
        }
    }
    for (reason, n) in &walk.skipped {
        *skipped.entry(reason.name().to_string()).or_insert(0) += n;
    }
    stats.languages = languages;
    stats.skipped = skipped;
    stats
}

/// A repository name derived from its directory name.
fn default_name(path: &Path) -> String {
    let raw = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let raw = raw.strip_suffix(".git").unwrap_or(&raw);
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').to_string();
    if cleaned.is_empty() {
        "repo".to_string()
    } else {
        cleaned.chars().take(100).collect()
    }
}

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
//!
//! [`Indexer::sync_repo`] runs the stages of one repository's sync
//! (`RepoSync`), each handing a typed value to the next: open and walk
//! (`Resolved`/`Walked`), diff against the index (`Plan`), write and
//! commit (`Written`), report ([`SyncReport`]) and record it in the
//! manifest.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use git2::{ErrorCode, Repository};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tantivy::IndexWriter;

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
use crate::report::SyncReport;
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

/// Warnings of one sync: the first [`MAX_WARNINGS`] kept, all counted.
#[derive(Default)]
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

/// How the first stage of a sync (open the repository, resolve the ref,
/// walk the tree) ended.
enum Resolved {
    /// The ref still names the commit of the last completed sync, which is
    /// given: nothing to do.
    UpToDate(SyncRecord),
    /// The tree was walked; the sync goes on with it.
    Walk(Box<Walked>),
}

/// A repository whose tree was walked: what the later stages of a sync
/// work on. The repository itself is closed again.
struct Walked {
    /// The repository's record as the sync found it.
    record: RepoRecord,
    /// The commit indexed (`None` for a working tree or an empty repository).
    commit: Option<String>,
    /// Root of the working tree, when that is what is indexed (file
    /// contents are then read from disk instead of from blobs).
    workdir: Option<PathBuf>,
    /// The candidate files, what was skipped, and the walk's warnings.
    walk: WalkOutput,
    /// Warnings of the sync so far.
    warnings: Warnings,
}

/// The diff of a walked tree against the per-file state in the index.
struct Plan<'w> {
    /// The per-file state recorded in the index, by path.
    states: HashMap<String, FileState>,
    /// Paths indexed before and no longer in the tree.
    deleted: Vec<String>,
    /// New files, and files whose blob id differs from the recorded one.
    to_process: Vec<&'w FileEntry>,
}

impl<'w> Plan<'w> {
    /// Compares the files of a tree with the recorded `states`.
    fn diff(states: HashMap<String, FileState>, files: &'w [FileEntry]) -> Plan<'w> {
        let present: HashSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
        let deleted: Vec<String> = states
            .keys()
            .filter(|p| !present.contains(p.as_str()))
            .cloned()
            .collect();
        let to_process: Vec<&FileEntry> = files
            .iter()
            .filter(|f| {
                states
                    .get(&f.path)
                    .is_none_or(|s| s.blob != f.oid.to_string())
            })
            .collect();
        Plan {
            states,
            deleted,
            to_process,
        }
    }
}

/// What one processed file left once its documents went to the writer.
struct FileOutcome {
    /// Path in the repository.
    path: String,
    /// The file's new state (also in its `file` document).
    state: FileState,
    /// Why the file was not handled as usual, if it was not.
    warning: Option<String>,
}

/// What the write stage of a sync did, committed to the index.
struct Written {
    /// The per-file state after the sync, by path.
    states: HashMap<String, FileState>,
    /// Files read and (re)indexed or skipped by content.
    files_processed: u64,
    /// Files whose documents were deleted because they are gone.
    files_deleted: u64,
    /// Bytes read from the files that were indexed.
    bytes_processed: u64,
    /// Warnings of the processed files, in the order they were committed.
    warnings: Vec<String>,
}

impl Written {
    /// Takes in the outcomes of a committed batch.
    fn absorb(&mut self, outcomes: Vec<FileOutcome>) {
        for FileOutcome {
            path,
            state,
            warning,
        } in outcomes
        {
            if is_indexed_status(&state.status) {
                self.bytes_processed += state.bytes;
            }
            if let Some(message) = warning {
                self.warnings.push(message);
            }
            self.states.insert(path, state);
        }
    }
}

/// One repository's sync: the indexer, the repository's name and where
/// progress goes. Each stage is a method; [`RepoSync::run`] chains them.
struct RepoSync<'a> {
    /// The writing side doing the sync.
    indexer: &'a Indexer,
    /// Name of the repository being synced.
    name: &'a str,
    /// Where events go.
    progress: &'a dyn ProgressSink,
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

    /// Syncs one repository: opens it and walks its tree, diffs the files
    /// against the index, writes the changes, and records the result.
    pub fn sync_repo(&mut self, name: &str, progress: &dyn ProgressSink) -> Result<SyncReport> {
        let started = Instant::now();
        RepoSync {
            indexer: self,
            name,
            progress,
        }
        .run(started)
    }
}

impl RepoSync<'_> {
    /// Runs every stage of the sync; `started` is when it was asked for.
    fn run(&self, started: Instant) -> Result<SyncReport> {
        let report = match self.open_and_walk()? {
            Resolved::UpToDate(last) => up_to_date_report(self.name, &last, started.elapsed()),
            Resolved::Walk(walked) => {
                let mut walked = *walked;
                self.forward_walk_warnings(&mut walked);
                let plan = self.plan(&walked.walk)?;
                self.mark_in_progress(walked.commit.as_deref())?;
                let written = self.write(&walked, plan)?;
                let report = self.report(walked, written, started.elapsed());
                self.record(&report)?;
                report
            }
        };
        self.progress
            .event(&ProgressEvent::Finished(Box::new(report.clone())));
        Ok(report)
    }

    /// Stage 1: opens the repository, resolves its ref (or takes its
    /// working tree) and walks the tree; stops early when the ref is at the
    /// commit of the last completed sync.
    fn open_and_walk(&self) -> Result<Resolved> {
        let record = Manifest::load(&self.indexer.dir)?
            .repo(self.name)
            .cloned()
            .ok_or_else(|| IndexError::UnknownRepo(self.name.to_string()))?;
        let repo = open_repo(&record.path)?;
        let mut warnings = Warnings::default();
        if record.working_tree {
            let Some(workdir) = repo.workdir() else {
                return Err(IndexError::NotAGitRepository {
                    path: record.path.clone(),
                    message: "a bare repository has no working tree to index".to_string(),
                });
            };
            let workdir = workdir.to_path_buf();
            return Ok(Resolved::Walk(Box::new(Walked {
                walk: walk_worktree(&workdir),
                workdir: Some(workdir),
                commit: None,
                record,
                warnings,
            })));
        }
        let (walk, commit) = match resolve(&repo, &record)? {
            Some(commit) => {
                let id = commit.id().to_string();
                if let Some(last) = &record.last_sync
                    && last.commit.as_deref() == Some(id.as_str())
                    && record.sync_in_progress.is_none()
                {
                    return Ok(Resolved::UpToDate(last.clone()));
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
        };
        Ok(Resolved::Walk(Box::new(Walked {
            record,
            commit,
            workdir: None,
            walk,
            warnings,
        })))
    }

    /// Sends the walk's warnings as events and keeps them for the report.
    fn forward_walk_warnings(&self, walked: &mut Walked) {
        for message in &walked.walk.warnings {
            self.progress.event(&ProgressEvent::Warning {
                repo: self.name.to_string(),
                message: message.clone(),
            });
            walked.warnings.push(message.clone());
        }
    }

    /// Stage 2: diffs the walked files against the blob ids recorded in the
    /// index, and announces the sync with the numbers.
    fn plan<'w>(&self, walk: &'w WalkOutput) -> Result<Plan<'w>> {
        let states = self.indexer.index.store().load_file_states(self.name)?;
        let plan = Plan::diff(states, &walk.files);
        self.progress.event(&ProgressEvent::Started {
            repo: self.name.to_string(),
            total_files: walk.files.len() as u64,
            to_process: plan.to_process.len() as u64,
            to_delete: plan.deleted.len() as u64,
        });
        Ok(plan)
    }

    /// Records in the manifest that this process is syncing the repository
    /// (left behind, it tells that a sync was interrupted).
    fn mark_in_progress(&self, commit: Option<&str>) -> Result<()> {
        let mut manifest = Manifest::load(&self.indexer.dir)?;
        if let Some(r) = manifest.repo_mut(self.name) {
            r.sync_in_progress = Some(InProgress {
                pid: std::process::id(),
                started_at: now_secs(),
                commit: commit.map(str::to_string),
            });
        }
        manifest.store(&self.indexer.dir)
    }

    /// Stage 3: deletes the documents of deleted files and indexes the new
    /// and changed ones batch by batch, committing after each batch (the
    /// per-file state is committed with the documents).
    fn write(&self, walked: &Walked, plan: Plan<'_>) -> Result<Written> {
        let Plan {
            mut states,
            deleted,
            to_process,
        } = plan;
        let config = &self.indexer.config;
        let store = self.indexer.index.store();
        let mut writer = store.writer(config.writer_threads, config.writer_memory_bytes)?;
        for path in &deleted {
            writer.delete_term(store.fields.file_key_term(self.name, path));
            states.remove(path);
        }
        let tracker = Tracker::new(self.name, to_process.len() as u64, self.progress);
        let mut written = Written {
            states,
            files_processed: to_process.len() as u64,
            files_deleted: deleted.len() as u64,
            bytes_processed: 0,
            warnings: Vec::new(),
        };
        let mut committed_any = false;
        for batch in to_process.chunks(config.commit_every.max(1)) {
            let outcomes = self.index_batch(walked, batch, &writer, &tracker)?;
            writer.commit()?;
            committed_any = true;
            self.progress.event(&ProgressEvent::Committed {
                repo: self.name.to_string(),
                done: tracker.done(),
            });
            written.absorb(outcomes);
        }
        if !committed_any && !deleted.is_empty() {
            writer.commit()?;
        }
        writer.wait_merging_threads()?;
        self.indexer.index.reload()?;
        Ok(written)
    }

    /// Parses one batch on the indexer's pool, each worker reading contents
    /// through its own [`Source`], and hands the documents to `writer`
    /// (uncommitted). Fails with the first error the writer gave.
    fn index_batch(
        &self,
        walked: &Walked,
        batch: &[&FileEntry],
        writer: &IndexWriter,
        tracker: &Tracker<'_>,
    ) -> Result<Vec<FileOutcome>> {
        let error: Mutex<Option<IndexError>> = Mutex::new(None);
        let outcomes = self.indexer.pool.install(|| {
            batch
                .par_iter()
                .map_init(
                    || Source::open(&walked.record.path, walked.workdir.as_deref()),
                    |source, entry| self.index_file(source, entry, writer, tracker, &error),
                )
                .collect()
        });
        match error.into_inner().ok().flatten() {
            Some(e) => Err(e),
            None => Ok(outcomes),
        }
    }

    /// Turns one file into documents and hands them to `writer` in place of
    /// the file's old ones; a writer error goes into `error`.
    fn index_file(
        &self,
        source: &Source,
        entry: &FileEntry,
        writer: &IndexWriter,
        tracker: &Tracker<'_>,
        error: &Mutex<Option<IndexError>>,
    ) -> FileOutcome {
        let config = &self.indexer.config;
        let fields = &self.indexer.index.store().fields;
        let Processed {
            path,
            state,
            warning,
            docs,
        } = process_file(
            source,
            entry,
            self.name,
            fields,
            &config.parse,
            config.max_file_bytes,
        );
        writer.delete_term(fields.file_key_term(self.name, &path));
        for doc in docs {
            if let Err(e) = writer.add_document(doc) {
                if let Ok(mut slot) = error.lock() {
                    slot.get_or_insert(IndexError::Search(e));
                }
                break;
            }
        }
        if let Some(message) = &warning {
            self.progress.event(&ProgressEvent::Warning {
                repo: self.name.to_string(),
                message: message.clone(),
            });
        }
        tracker.file_done(state.bytes);
        FileOutcome {
            path,
            state,
            warning,
        }
    }

    /// Stage 4: the report of a sync whose changes are committed.
    fn report(&self, walked: Walked, written: Written, elapsed: Duration) -> SyncReport {
        let Walked {
            commit,
            walk,
            mut warnings,
            ..
        } = walked;
        for message in written.warnings {
            warnings.push(message);
        }
        let stats = compute_stats(written.states.values(), &walk);
        let files_total = walk.files.len() as u64;
        let secs = elapsed.as_secs_f64().max(1e-9);
        SyncReport {
            repo: self.name.to_string(),
            commit,
            up_to_date: false,
            files_total,
            files_processed: written.files_processed,
            files_deleted: written.files_deleted,
            files_unchanged: files_total - written.files_processed,
            bytes_processed: written.bytes_processed,
            elapsed_secs: elapsed.as_secs_f64(),
            files_per_sec: written.files_processed as f64 / secs,
            mb_per_sec: written.bytes_processed as f64 / 1e6 / secs,
            stats,
            warnings: warnings.kept,
            warning_count: warnings.count,
        }
    }

    /// Stage 5: records the finished sync in the manifest (after the
    /// commits it describes) and clears the in-progress mark.
    fn record(&self, report: &SyncReport) -> Result<()> {
        let mut manifest = Manifest::load(&self.indexer.dir)?;
        if let Some(r) = manifest.repo_mut(self.name) {
            r.sync_in_progress = None;
            r.last_sync = Some(SyncRecord {
                commit: report.commit.clone(),
                finished_at: now_secs(),
                stats: report.stats.clone(),
                warnings: report.warnings.clone(),
            });
        }
        manifest.store(&self.indexer.dir)
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

//! What a sync reports: [`SyncReport`], shared by the writing side
//! (`sync.rs`, which builds it) and progress reporting (`progress.rs`,
//! whose [`ProgressEvent::Finished`](crate::ProgressEvent::Finished)
//! carries it). It depends on neither, so the two depend on it one way.

use serde::{Deserialize, Serialize};

use crate::manifest::RepoStats;

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
    /// Warnings (at most [`MAX_WARNINGS`](crate::manifest::MAX_WARNINGS) are kept).
    pub warnings: Vec<String>,
    /// Number of warnings, including those not kept.
    pub warning_count: u64,
}

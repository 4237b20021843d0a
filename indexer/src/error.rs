//! The indexer's error type.

use std::path::PathBuf;

/// Everything that can go wrong in the indexer. Messages are meant to be
/// shown to a person as they are.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// Another process holds the index's writer lock.
    #[error("index {} is locked by pid {pid}", path.display())]
    Locked {
        /// The index directory.
        path: PathBuf,
        /// The pid recorded by the holder (0 if it could not be read).
        pid: u32,
    },
    /// No index exists in the directory.
    #[error("no code index at {} (add a repository first)", .0.display())]
    NoIndex(PathBuf),
    /// The index was written by an incompatible version of the indexer.
    #[error(
        "index {} has format {found}, this build reads format {expected}; delete the directory and sync again",
        path.display()
    )]
    IncompatibleFormat {
        /// The index directory.
        path: PathBuf,
        /// Format found on disk.
        found: u32,
        /// Format this build writes.
        expected: u32,
    },
    /// The path given for a repository is not (the root of) a git repository.
    #[error("{} is not a git repository: {message}", path.display())]
    NotAGitRepository {
        /// The path given.
        path: PathBuf,
        /// What git said.
        message: String,
    },
    /// The ref to index does not resolve to a commit.
    #[error("ref {git_ref:?} not found in {}: {message}", path.display())]
    RefNotFound {
        /// The repository path.
        path: PathBuf,
        /// The ref that was asked for.
        git_ref: String,
        /// What git said.
        message: String,
    },
    /// No repository with this name is registered.
    #[error("no repository named {0:?} in the index")]
    UnknownRepo(String),
    /// A repository with this name is already registered.
    #[error("a repository named {0:?} is already in the index")]
    RepoExists(String),
    /// A repository name that cannot be used.
    #[error("invalid repository name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The manifest file exists but cannot be understood.
    #[error("corrupt index manifest {}: {message}", path.display())]
    CorruptManifest {
        /// The manifest path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// An I/O error on a file of the index.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An error from git.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// An error from the search engine.
    #[error("search index: {0}")]
    Search(#[from] tantivy::TantivyError),
}

impl IndexError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> IndexError {
        IndexError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result type of the indexer.
pub type Result<T, E = IndexError> = std::result::Result<T, E>;

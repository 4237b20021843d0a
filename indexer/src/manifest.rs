//! The manifest: the list of repositories and their sync state, stored as
//! `<index>/manifest.json` and replaced atomically (write a temporary file,
//! fsync, rename, fsync the directory), so a crash leaves either the old or
//! the new version, never a torn one.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IndexError, Result};

/// File name of the manifest inside the index directory.
pub const MANIFEST_FILE: &str = "manifest.json";

/// The on-disk format this build reads and writes (manifest and tantivy schema).
pub const FORMAT_VERSION: u32 = 1;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version.
    pub format: u32,
    /// Registered repositories, in the order they were added.
    pub repos: Vec<RepoRecord>,
}

impl Default for Manifest {
    fn default() -> Self {
        Manifest {
            format: FORMAT_VERSION,
            repos: Vec::new(),
        }
    }
}

/// A registered repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoRecord {
    /// Unique name; queries are scoped by names.
    pub name: String,
    /// Absolute path of the repository's working directory (or bare repository).
    pub path: PathBuf,
    /// The ref indexed (`HEAD`, a branch, a tag or a commit id).
    pub git_ref: String,
    /// Index the working tree (untracked and modified files included) instead of `git_ref`.
    pub working_tree: bool,
    /// When the repository was added (seconds since the Unix epoch).
    pub added_at: u64,
    /// The last sync that ran to completion.
    pub last_sync: Option<SyncRecord>,
    /// Set while a sync runs; left behind by an interrupted one.
    pub sync_in_progress: Option<InProgress>,
}

/// The outcome of the last completed sync of a repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRecord {
    /// The commit indexed (`None` for the working tree or an empty repository).
    pub commit: Option<String>,
    /// When it finished (seconds since the Unix epoch).
    pub finished_at: u64,
    /// What the index holds for the repository after it.
    pub stats: RepoStats,
    /// Warnings of that sync (at most [`MAX_WARNINGS`]).
    pub warnings: Vec<String>,
}

/// A sync that started and has not finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InProgress {
    /// The process running it.
    pub pid: u32,
    /// When it started (seconds since the Unix epoch).
    pub started_at: u64,
    /// The commit being indexed.
    pub commit: Option<String>,
}

/// What the index holds for one repository.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RepoStats {
    /// Files considered (indexed or skipped after reading).
    pub files_seen: u64,
    /// Files indexed.
    pub files_indexed: u64,
    /// Bytes of indexed files.
    pub bytes_indexed: u64,
    /// Chunk documents.
    pub chunks: u64,
    /// Symbol documents.
    pub symbols: u64,
    /// Indexed files by language.
    pub languages: BTreeMap<String, u64>,
    /// Skipped paths by reason (see `SkipReason::name`).
    pub skipped: BTreeMap<String, u64>,
    /// Files indexed with line windows because their parse timed out.
    pub parse_timeouts: u64,
    /// Files that were not valid UTF-8 (indexed with replacement characters).
    pub non_utf8: u64,
}

/// Most warnings kept per sync.
pub const MAX_WARNINGS: usize = 100;

impl Manifest {
    /// Reads the manifest of the index in `dir`; an absent file is an empty manifest.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
            Err(e) => return Err(IndexError::io(&path, e)),
        };
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| IndexError::CorruptManifest {
                path: path.clone(),
                message: e.to_string(),
            })?;
        if manifest.format != FORMAT_VERSION {
            return Err(IndexError::IncompatibleFormat {
                path: dir.to_path_buf(),
                found: manifest.format,
                expected: FORMAT_VERSION,
            });
        }
        Ok(manifest)
    }

    /// Replaces the manifest of the index in `dir` atomically.
    pub fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp.{}", std::process::id()));
        let json = serde_json::to_vec_pretty(self).map_err(|e| IndexError::CorruptManifest {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let write = || -> std::io::Result<()> {
            let mut file = fs::File::create(&tmp)?;
            file.write_all(&json)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            drop(file);
            fs::rename(&tmp, &path)?;
            fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            IndexError::io(&path, e)
        })
    }

    /// The repository named `name`.
    pub fn repo(&self, name: &str) -> Option<&RepoRecord> {
        self.repos.iter().find(|r| r.name == name)
    }

    /// The repository named `name`, mutably.
    pub fn repo_mut(&mut self, name: &str) -> Option<&mut RepoRecord> {
        self.repos.iter_mut().find(|r| r.name == name)
    }
}

/// Seconds since the Unix epoch, now.
pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks that `name` can name a repository: 1 to 100 characters among
/// ASCII letters, digits, `.`, `_` and `-`, not starting with `.`.
pub fn validate_repo_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name.len() > 100 {
        Some("longer than 100 characters")
    } else if name.starts_with('.') {
        Some("starts with '.'")
    } else if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        Some("use only ASCII letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(IndexError::InvalidName {
            name: name.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_atomic_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            Manifest::load(dir.path()).expect("empty"),
            Manifest::default()
        );
        let mut m = Manifest::default();
        m.repos.push(RepoRecord {
            name: "a".into(),
            path: "/x".into(),
            git_ref: "HEAD".into(),
            working_tree: false,
            added_at: 1,
            last_sync: None,
            sync_in_progress: None,
        });
        m.store(dir.path()).expect("store");
        assert_eq!(Manifest::load(dir.path()).expect("load"), m);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .expect("read_dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn corrupt_and_future_manifests_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(MANIFEST_FILE), b"{not json").expect("write");
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(IndexError::CorruptManifest { .. })
        ));
        fs::write(
            dir.path().join(MANIFEST_FILE),
            b"{\"format\":99,\"repos\":[]}",
        )
        .expect("write");
        assert!(matches!(
            Manifest::load(dir.path()),
            Err(IndexError::IncompatibleFormat { found: 99, .. })
        ));
    }

    #[test]
    fn repo_names() {
        assert!(validate_repo_name("my-repo_1.x").is_ok());
        assert!(validate_repo_name("").is_err());
        assert!(validate_repo_name("a b").is_err());
        assert!(validate_repo_name(".hidden").is_err());
        assert!(validate_repo_name("a/b").is_err());
    }
}

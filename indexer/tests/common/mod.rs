//! Helpers for the integration tests: real git repositories in temporary
//! directories, made with git2.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Oid, Repository, Signature};
use indexer::{CodeIndex, Indexer, IndexerConfig, NoProgress, RepoSpec, SyncReport};

/// A git repository in a temporary directory.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
}

impl TestRepo {
    pub fn new() -> TestRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = Repository::init(dir.path()).expect("git init");
        TestRepo { dir, repo }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Writes files into the working tree (creating directories).
    pub fn write(&self, files: &[(&str, &[u8])]) {
        for (path, content) in files {
            let full = self.dir.path().join(path);
            if let Some(parent) = full.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&full, content).expect("write");
        }
    }

    /// Removes files from the working tree.
    pub fn delete(&self, paths: &[&str]) {
        for path in paths {
            std::fs::remove_file(self.dir.path().join(path)).expect("rm");
        }
    }

    /// Stages everything (additions, changes, deletions) and commits.
    pub fn commit_all(&self, message: &str) -> Oid {
        let mut index = self.repo.index().expect("index");
        index
            .add_all(["*"].iter(), IndexAddOption::FORCE, None)
            .expect("add_all");
        index.update_all(["*"].iter(), None).expect("update_all");
        index.write().expect("write index");
        let tree_id = index.write_tree().expect("write_tree");
        self.commit_tree(tree_id, message)
    }

    /// Commits a given tree on HEAD.
    pub fn commit_tree(&self, tree_id: Oid, message: &str) -> Oid {
        let tree = self.repo.find_tree(tree_id).expect("tree");
        let sig = Signature::now("Test", "test@example.com").expect("sig");
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
            .expect("commit")
    }

    /// Writes and commits files in one step.
    pub fn commit_files(&self, files: &[(&str, &[u8])], message: &str) -> Oid {
        self.write(files);
        self.commit_all(message)
    }
}

/// An index directory in a temporary directory.
pub fn index_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

/// Small, fast settings for tests.
pub fn test_config() -> IndexerConfig {
    IndexerConfig {
        threads: 2,
        writer_memory_bytes: 32_000_000,
        ..IndexerConfig::default()
    }
}

/// Adds `repo` under `name` and syncs it.
pub fn add_and_sync(indexer: &mut Indexer, repo: &Path, name: &str) -> SyncReport {
    indexer
        .add_repo(RepoSpec {
            path: repo.to_path_buf(),
            name: Some(name.to_string()),
            ..RepoSpec::default()
        })
        .expect("add_repo");
    indexer.sync_repo(name, &NoProgress).expect("sync")
}

/// Paths of the chunks a search returns.
pub fn search_paths(index: &CodeIndex, query: &str, repos: &[&str]) -> Vec<String> {
    let hits = index
        .search(&indexer::SearchRequest {
            query: query.to_string(),
            repos: repos.iter().map(|s| s.to_string()).collect(),
            language: None,
            limit: 20,
        })
        .expect("search");
    hits.into_iter().map(|h| h.path).collect()
}

pub const SERVER_RS: &str = r#"use std::net::TcpListener;

/// A tiny HTTP server.
pub struct HttpServer {
    port: u16,
    max_connections: usize,
}

impl HttpServer {
    pub fn new(port: u16) -> Self {
        HttpServer { port, max_connections: 64 }
    }

    pub fn parse_request_line(line: &str) -> Option<(String, String)> {
        let mut parts = line.split_whitespace();
        let method = parts.next()?.to_string();
        let target = parts.next()?.to_string();
        Some((method, target))
    }
}
"#;

pub const UTIL_PY: &str = r#"import os


def read_config_file(path):
    """Reads a config file into a dict."""
    result = {}
    with open(path) as handle:
        for line in handle:
            key, _, value = line.partition("=")
            result[key.strip()] = value.strip()
    return result


class ConnectionPool:
    def __init__(self, size):
        self.size = size

    def acquire(self):
        return None
"#;

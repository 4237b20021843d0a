//! Crash safety and locking.
//!
//! The SIGKILL test re-runs this test binary as a helper process (selected
//! by an environment variable) that syncs a large generated repository and
//! prints a line after each commit; the parent kills it with SIGKILL after
//! the first commit, then checks the index.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use git2::{FileMode, Repository, Signature};
use indexer::{
    CodeIndex, IndexError, Indexer, IndexerConfig, NoProgress, ProgressEvent, RepoSpec, RepoState,
};

const HELPER_ENV: &str = "SOUFFLEUR_SYNC_HELPER";
const FILES: usize = 6000;
const COMMIT_EVERY: usize = 200;

fn helper_config() -> IndexerConfig {
    IndexerConfig {
        commit_every: COMMIT_EVERY,
        ..test_config()
    }
}

/// Builds a commit with `n` generated Rust files directly in the object database.
fn generated_repo(dir: &Path, n: usize) {
    let repo = Repository::init(dir).expect("init");
    let mut src = repo.treebuilder(None).expect("treebuilder");
    for i in 0..n {
        let mut body = format!("//! Generated module {i}.\n\n");
        body.push_str(&format!(
            "pub struct Record{i:05} {{\n    pub id: u64,\n    pub name: String,\n}}\n\n"
        ));
        body.push_str(&format!(
            "pub fn generated_function_{i:05}(input: &[u8]) -> u64 {{\n    let mut acc = {i}u64;\n    for b in input {{\n        acc = acc.wrapping_mul(31).wrapping_add(u64::from(*b));\n    }}\n    acc\n}}\n"
        ));
        let blob = repo.blob(body.as_bytes()).expect("blob");
        src.insert(format!("f_{i:05}.rs"), blob, i32::from(FileMode::Blob))
            .expect("insert");
    }
    let src_id = src.write().expect("write src");
    let mut root = repo.treebuilder(None).expect("treebuilder");
    root.insert("src", src_id, i32::from(FileMode::Tree))
        .expect("insert");
    let tree_id = root.write().expect("write root");
    let tree = repo.find_tree(tree_id).expect("tree");
    let sig = Signature::now("Test", "test@example.com").expect("sig");
    repo.commit(Some("HEAD"), &sig, &sig, "generated", &tree, &[])
        .expect("commit");
}

/// Not a test on its own: the body of the helper process. Does nothing
/// unless the environment variable names an index directory.
#[test]
fn sync_helper_process() {
    let Ok(index_dir) = std::env::var(HELPER_ENV) else {
        return;
    };
    let mut indexer = match Indexer::open(Path::new(&index_dir), helper_config()) {
        Ok(indexer) => indexer,
        Err(e) => {
            println!("OPEN-ERROR {e}");
            return;
        }
    };
    let sink = |e: &ProgressEvent| {
        if let ProgressEvent::Committed { done, .. } = e {
            println!("COMMITTED {done}");
        }
    };
    let result = indexer.sync_repo("big", &sink);
    println!("DONE {}", result.is_ok());
}

#[test]
fn sigkill_in_the_middle_of_a_sync_leaves_a_usable_index_that_the_next_sync_completes() {
    let repo_dir = tempfile::tempdir().expect("tempdir");
    generated_repo(repo_dir.path(), FILES);
    let dir = index_dir();
    {
        let mut indexer = Indexer::open(dir.path(), helper_config()).expect("open");
        indexer
            .add_repo(RepoSpec {
                path: repo_dir.path().to_path_buf(),
                name: Some("big".into()),
                ..RepoSpec::default()
            })
            .expect("add");
    }

    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "--exact",
            "sync_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HELPER_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut committed = None;
    for line in lines.by_ref() {
        let line = line.expect("line");
        if let Some(n) = line.strip_prefix("COMMITTED ") {
            committed = n.trim().parse::<usize>().ok();
            break;
        }
        assert!(
            !line.starts_with("DONE") && !line.starts_with("OPEN-ERROR"),
            "{line}"
        );
    }
    let committed = committed.expect("helper committed a batch");

    // While the helper runs, a second indexer is refused with its pid.
    match Indexer::open(dir.path(), helper_config()) {
        Err(IndexError::Locked { pid, .. }) => assert_eq!(pid, child.id()),
        other => panic!("expected a lock error, got {other:?}"),
    }
    let err = Indexer::open(dir.path(), helper_config()).expect_err("locked");
    assert!(
        err.to_string()
            .contains(&format!("is locked by pid {}", child.id())),
        "{err}"
    );

    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        status.signal(),
        Some(9),
        "the helper was killed, not finished"
    );

    // The index opens and answers queries with what was committed.
    let index = CodeIndex::open(dir.path()).expect("open after crash");
    let repos = vec!["big".to_string()];
    let hits = search_paths(&index, "generated_function_00000", &["big"]);
    assert_eq!(hits.first().map(String::as_str), Some("src/f_00000.rs"));
    let status = index.status().expect("status");
    let killed_pid = status.repos[0].state.clone();
    assert!(
        matches!(killed_pid, RepoState::Interrupted { .. }),
        "{killed_pid:?}"
    );
    let request =
        indexer::RetrievalRequest::new(&repos, "x.rs", "generated_function_00001(", "", 500);
    let snippets = index
        .retrieve(&request, &|t: &str| t.len() / 4)
        .expect("retrieve after crash");
    assert_eq!(
        snippets.first().map(|s| s.path.as_str()),
        Some("src/f_00001.rs")
    );
    drop(index);

    // The next sync only does the rest, and the result is complete.
    let mut indexer = Indexer::open(dir.path(), helper_config()).expect("reopen for writing");
    let report = indexer.sync_repo("big", &NoProgress).expect("resume");
    assert!(report.files_processed < FILES as u64, "{report:?}");
    assert!(
        report.files_processed <= (FILES - committed) as u64,
        "{report:?}"
    );
    assert_eq!(report.stats.files_indexed, FILES as u64);
    let last = format!("generated_function_{:05}", FILES - 1);
    let hits = search_paths(indexer.index(), &last, &["big"]);
    assert_eq!(
        hits.first().cloned(),
        Some(format!("src/f_{:05}.rs", FILES - 1))
    );
    let status = indexer.index().status().expect("status");
    assert_eq!(status.repos[0].state, RepoState::Synced);

    // Same documents as an index built in one go.
    let fresh_dir = index_dir();
    let mut fresh = Indexer::open(fresh_dir.path(), helper_config()).expect("fresh");
    let fresh_report = add_and_sync(&mut fresh, repo_dir.path(), "big");
    assert_eq!(fresh_report.stats, report.stats);
    assert_eq!(
        fresh.index().status().expect("status").documents,
        status.documents
    );
}

#[test]
fn a_second_indexer_in_the_same_process_is_refused() {
    let dir = index_dir();
    let _first = Indexer::open(dir.path(), test_config()).expect("first");
    let err = Indexer::open(dir.path(), test_config()).expect_err("second");
    assert!(
        err.to_string()
            .contains(&format!("is locked by pid {}", std::process::id())),
        "{err}"
    );
    // Readers need no lock.
    assert!(CodeIndex::open(dir.path()).is_ok());
}

//! Incremental sync: only changed blobs are re-read, deleted files leave
//! the index, an unchanged repository costs (almost) nothing.

mod common;

use std::sync::Mutex;

use common::*;
use indexer::{Indexer, NoProgress, ProgressEvent};

fn numbered_files(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("src/mod_{i}.rs"),
                format!("pub fn function_number_{i}(x: u32) -> u32 {{\n    x + {i}\n}}\n"),
            )
        })
        .collect()
}

fn as_refs(files: &[(String, String)]) -> Vec<(&str, &[u8])> {
    files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_bytes()))
        .collect()
}

#[test]
fn unchanged_repository_is_up_to_date_without_reading_files() {
    let repo = TestRepo::new();
    let files = numbered_files(20);
    repo.commit_files(&as_refs(&files), "initial");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let first = add_and_sync(&mut indexer, &repo.path(), "r");
    assert_eq!(first.files_processed, 20);
    let events = Mutex::new(Vec::new());
    let sink = |e: &ProgressEvent| {
        if let Ok(mut v) = events.lock() {
            v.push(format!("{e:?}"));
        }
    };
    let second = indexer.sync_repo("r", &sink).expect("sync");
    assert!(second.up_to_date);
    assert_eq!(second.files_processed, 0);
    assert_eq!(second.stats, first.stats);
    let events = events.into_inner().expect("events");
    // Only the final event: no walk, no batch, no commit.
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("Finished"));
}

#[test]
fn only_changed_files_are_reprocessed_and_deleted_files_removed() {
    let repo = TestRepo::new();
    let files = numbered_files(50);
    repo.commit_files(&as_refs(&files), "initial");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let first = add_and_sync(&mut indexer, &repo.path(), "r");
    assert_eq!(first.stats.files_indexed, 50);

    repo.write(&[
        ("src/mod_3.rs", b"pub fn renamed_alpha_function() {}\n"),
        ("src/mod_4.rs", b"pub fn renamed_beta_function() {}\n"),
        ("src/new_file.rs", b"pub fn brand_new_function() {}\n"),
    ]);
    repo.delete(&["src/mod_7.rs", "src/mod_8.rs"]);
    repo.commit_all("change");

    let report = indexer.sync_repo("r", &NoProgress).expect("sync");
    assert!(!report.up_to_date);
    assert_eq!(report.files_processed, 3);
    assert_eq!(report.files_deleted, 2);
    assert_eq!(report.files_unchanged, 46);
    assert_eq!(report.files_total, 49);
    assert_eq!(report.stats.files_indexed, 49);

    let index = indexer.index();
    assert_eq!(
        search_paths(index, "renamed_alpha_function", &["r"])[0],
        "src/mod_3.rs"
    );
    assert_eq!(
        search_paths(index, "brand_new_function", &["r"])[0],
        "src/new_file.rs"
    );
    assert!(
        search_paths(index, "function_number_3", &["r"])
            .iter()
            .all(|p| p != "src/mod_3.rs")
    );
    for gone in ["7", "8"] {
        let paths = search_paths(index, &format!("function_number_{gone}"), &["r"]);
        assert!(!paths.contains(&format!("src/mod_{gone}.rs")), "{paths:?}");
    }
    assert_eq!(
        search_paths(index, "function_number_9", &["r"])[0],
        "src/mod_9.rs"
    );

    // The document count matches a from-scratch index of the same commit.
    let fresh_dir = index_dir();
    let mut fresh = Indexer::open(fresh_dir.path(), test_config()).expect("open");
    let fresh_report = add_and_sync(&mut fresh, &repo.path(), "r");
    assert_eq!(fresh_report.stats, report.stats);
    let docs = indexer.index().status().expect("status").documents;
    let fresh_docs = fresh.index().status().expect("status").documents;
    assert_eq!(docs, fresh_docs);
}

#[test]
fn removing_a_repository_drops_its_documents_only() {
    let a = TestRepo::new();
    a.commit_files(&[("a.rs", b"fn keepme_function() {}\n")], "a");
    let b = TestRepo::new();
    b.commit_files(&[("b.rs", b"fn dropme_function() {}\n")], "b");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    add_and_sync(&mut indexer, &a.path(), "keep");
    add_and_sync(&mut indexer, &b.path(), "drop");
    indexer.remove_repo("drop").expect("remove");
    let index = indexer.index();
    assert_eq!(index.repo_names().expect("names"), vec!["keep"]);
    assert!(search_paths(index, "dropme_function", &["drop"]).is_empty());
    assert_eq!(
        search_paths(index, "keepme_function", &["keep"]),
        vec!["a.rs"]
    );
    assert!(indexer.remove_repo("drop").is_err());
    // The name can be reused and syncs from scratch.
    let report = add_and_sync(&mut indexer, &b.path(), "drop");
    assert_eq!(report.files_processed, 1);
}

#[test]
fn sync_all_reports_each_repository_and_goes_on_after_a_failure() {
    let a = TestRepo::new();
    a.commit_files(&[("a.rs", b"fn a() {}\n")], "a");
    let b = TestRepo::new();
    b.commit_files(&[("b.rs", b"fn b() {}\n")], "b");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    for (repo, name) in [(&a, "first"), (&b, "second")] {
        indexer
            .add_repo(indexer::RepoSpec {
                path: repo.path(),
                name: Some(name.into()),
                ..Default::default()
            })
            .expect("add");
    }
    // The first repository disappears from disk.
    let a_path = a.path();
    drop(a);
    let results = indexer.sync(&[], &NoProgress).expect("sync");
    assert_eq!(results.len(), 2);
    let first_err = results[0].1.as_ref().expect_err("first fails");
    assert!(
        first_err.to_string().contains("not a git repository"),
        "{first_err}"
    );
    assert!(
        first_err
            .to_string()
            .contains(&a_path.display().to_string())
    );
    assert_eq!(
        results[1]
            .1
            .as_ref()
            .expect("second ok")
            .stats
            .files_indexed,
        1
    );
}

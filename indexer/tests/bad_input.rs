//! Bad input: each case gives a clear message and the sync goes on.

mod common;

use common::*;
use git2::{FileMode, Oid};
use indexer::{Indexer, IndexerConfig, NoProgress, ParseConfig, RepoSpec, RepoState};

fn spec(path: &std::path::Path, name: &str) -> RepoSpec {
    RepoSpec {
        path: path.to_path_buf(),
        name: Some(name.into()),
        ..RepoSpec::default()
    }
}

#[test]
fn a_path_that_is_not_a_git_repository_is_refused_clearly() {
    let plain = tempfile::tempdir().expect("tempdir");
    std::fs::write(plain.path().join("a.rs"), "fn a() {}\n").expect("write");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let err = indexer
        .add_repo(spec(plain.path(), "plain"))
        .expect_err("not a repo");
    let message = err.to_string();
    assert!(message.contains("is not a git repository"), "{message}");
    assert!(
        message.contains(&plain.path().display().to_string()),
        "{message}"
    );
    let err = indexer
        .add_repo(spec(&plain.path().join("missing"), "missing"))
        .expect_err("missing path");
    assert!(err.to_string().contains("is not a git repository"), "{err}");
    // Nothing was registered.
    assert!(indexer.index().repo_names().expect("names").is_empty());
}

#[test]
fn an_empty_repository_syncs_to_nothing_with_a_warning() {
    let repo = TestRepo::new();
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    indexer.add_repo(spec(&repo.path(), "empty")).expect("add");
    let report = indexer.sync_repo("empty", &NoProgress).expect("sync");
    assert_eq!(report.files_total, 0);
    assert_eq!(report.commit, None);
    assert!(
        report.warnings.iter().any(|w| w.contains("no commits yet")),
        "{:?}",
        report.warnings
    );
    // Once it has a commit, the next sync indexes it.
    repo.commit_files(&[("a.rs", b"fn first_content() {}\n")], "first");
    let report = indexer.sync_repo("empty", &NoProgress).expect("sync");
    assert_eq!(report.stats.files_indexed, 1);
}

#[test]
fn a_ref_that_does_not_exist_is_refused_clearly() {
    let repo = TestRepo::new();
    repo.commit_files(&[("a.rs", b"fn a() {}\n")], "a");
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let err = indexer
        .add_repo(RepoSpec {
            git_ref: Some("no-such-branch".into()),
            ..spec(&repo.path(), "r")
        })
        .expect_err("bad ref");
    assert!(
        err.to_string().contains("ref \"no-such-branch\" not found"),
        "{err}"
    );
}

#[test]
fn submodules_are_counted_and_not_entered() {
    let repo = TestRepo::new();
    repo.write(&[("main.rs", b"fn main() {}\n")]);
    let mut index = repo.repo.index().expect("index");
    index
        .add_path(std::path::Path::new("main.rs"))
        .expect("add");
    let base = index.write_tree().expect("tree");
    let mut builder = repo
        .repo
        .treebuilder(Some(&repo.repo.find_tree(base).expect("tree")))
        .expect("builder");
    let fake_commit = Oid::from_str("0123456789abcdef0123456789abcdef01234567").expect("oid");
    builder
        .insert("lib", fake_commit, i32::from(FileMode::Commit))
        .expect("gitlink");
    let tree = builder.write().expect("write");
    repo.commit_tree(tree, "with submodule");

    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let report = add_and_sync(&mut indexer, &repo.path(), "sub");
    assert_eq!(
        report.stats.skipped.get("submodule"),
        Some(&1),
        "{:?}",
        report.stats
    );
    assert_eq!(report.stats.files_indexed, 1);
    assert!(
        report.warnings.iter().any(|w| w.contains("submodule")),
        "{:?}",
        report.warnings
    );
}

#[test]
fn symlinks_pointing_outside_the_repository_are_never_followed() {
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        outside.path().join("secret.rs"),
        "fn exfiltratedsecret() {}\n",
    )
    .expect("write");
    let repo = TestRepo::new();
    repo.write(&[("inside.rs", b"fn insidething() {}\n")]);
    std::os::unix::fs::symlink(
        outside.path().join("secret.rs"),
        repo.path().join("link.rs"),
    )
    .expect("symlink");
    std::os::unix::fs::symlink(outside.path(), repo.path().join("linkdir")).expect("symlink");
    repo.commit_all("links");

    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let report = add_and_sync(&mut indexer, &repo.path(), "links");
    assert_eq!(
        report.stats.skipped.get("symlink"),
        Some(&2),
        "{:?}",
        report.stats
    );
    assert!(search_paths(indexer.index(), "exfiltratedsecret", &["links"]).is_empty());
    assert_eq!(
        search_paths(indexer.index(), "insidething", &["links"]),
        vec!["inside.rs"]
    );

    // The working-tree mode does not follow them either.
    indexer
        .add_repo(RepoSpec {
            working_tree: true,
            ..spec(&repo.path(), "links-wt")
        })
        .expect("add");
    let report = indexer.sync_repo("links-wt", &NoProgress).expect("sync");
    assert_eq!(
        report.stats.skipped.get("symlink"),
        Some(&2),
        "{:?}",
        report.stats
    );
    assert!(search_paths(indexer.index(), "exfiltratedsecret", &["links-wt"]).is_empty());
}

#[test]
fn non_utf8_files_are_indexed_with_replacement_and_a_warning() {
    let repo = TestRepo::new();
    repo.commit_files(
        &[
            (
                "latin1.py",
                b"# caf\xe9\ndef latin_function():\n    return 1\n",
            ),
            ("ok.py", b"def fine():\n    pass\n"),
        ],
        "latin1",
    );
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    let report = add_and_sync(&mut indexer, &repo.path(), "enc");
    assert_eq!(report.stats.files_indexed, 2);
    assert_eq!(report.stats.non_utf8, 1);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("latin1.py") && w.contains("UTF-8")),
        "{:?}",
        report.warnings
    );
    assert_eq!(
        search_paths(indexer.index(), "latin_function", &["enc"]),
        vec!["latin1.py"]
    );
}

#[test]
fn a_parse_that_runs_too_long_times_out_and_the_sync_goes_on() {
    let repo = TestRepo::new();
    let mut slow = String::new();
    for i in 0..30_000 {
        slow.push_str(&format!(
            "fn f{i}(a: u32) -> u32 {{ if a > {i} {{ a }} else {{ {i} }} }}\n"
        ));
    }
    repo.commit_files(
        &[
            ("slow.rs", slow.as_bytes()),
            ("fast.rs", b"pub fn quick_function() {}\n"),
        ],
        "slow",
    );
    let dir = index_dir();
    let config = IndexerConfig {
        max_file_bytes: 10 * 1024 * 1024,
        parse: ParseConfig {
            timeout: std::time::Duration::from_millis(1),
            ..ParseConfig::default()
        },
        ..test_config()
    };
    let mut indexer = Indexer::open(dir.path(), config).expect("open");
    let report = add_and_sync(&mut indexer, &repo.path(), "slow");
    assert_eq!(report.stats.files_indexed, 2);
    assert_eq!(report.stats.parse_timeouts, 1, "{:?}", report.stats);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("slow.rs") && w.contains("longer than")),
        "{:?}",
        report.warnings
    );
    // The timed-out file is still searchable as text; the other one parsed.
    assert_eq!(
        search_paths(indexer.index(), "f29999", &["slow"]),
        vec!["slow.rs"]
    );
    assert_eq!(
        search_paths(indexer.index(), "quick_function", &["slow"]),
        vec!["fast.rs"]
    );
    let status = indexer.index().status().expect("status");
    assert_eq!(status.repos[0].state, RepoState::Synced);
}

#[test]
fn a_corrupt_manifest_is_reported_not_overwritten() {
    let dir = index_dir();
    drop(Indexer::open(dir.path(), test_config()).expect("create"));
    std::fs::write(dir.path().join("manifest.json"), b"{ this is not json").expect("write");
    let err = Indexer::open(dir.path(), test_config()).expect_err("corrupt");
    assert!(err.to_string().contains("corrupt index manifest"), "{err}");
    let err = indexer::CodeIndex::open(dir.path()).expect_err("corrupt");
    assert!(err.to_string().contains("corrupt index manifest"), "{err}");
}

//! The retrieval API used on the completion path.

mod common;

use common::*;
use indexer::{Indexer, RetrievalRequest, SnippetKind};

const CLIENT_RS: &str = r#"use crate::server::HttpServer;

pub fn start_default() -> HttpServer {
    let server = HttpServer::new(8080);
    server
}

pub fn handle(line: &str) {
    let parsed = HttpServer::parse_request_line(line);
    match parsed {
        Some((method, target)) => println!("{method} {target}"),
        None => println!("bad request"),
    }
}
"#;

fn words(text: &str) -> usize {
    text.split_whitespace().count()
}

fn setup() -> (TestRepo, tempfile::TempDir, Indexer) {
    let repo = TestRepo::new();
    repo.commit_files(
        &[
            ("src/server.rs", SERVER_RS.as_bytes()),
            ("src/client.rs", CLIENT_RS.as_bytes()),
            ("tools/util.py", UTIL_PY.as_bytes()),
        ],
        "initial",
    );
    let dir = index_dir();
    let mut indexer = Indexer::open(dir.path(), test_config()).expect("open");
    add_and_sync(&mut indexer, &repo.path(), "app");
    (repo, dir, indexer)
}

#[test]
fn definition_of_identifier_at_cursor_comes_first() {
    let (_repo, _dir, indexer) = setup();
    let repos = vec!["app".to_string()];
    let prefix = "use crate::server::HttpServer;\n\nfn main() {\n    let s = HttpServer::new(80);\n    let r = HttpServer::parse_request_line(";
    let mut request = RetrievalRequest::new(&repos, "src/main.rs", prefix, ");\n}\n", 400);
    request.language = Some("rust");
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    assert!(!snippets.is_empty());
    let first = &snippets[0];
    assert_eq!(first.kind, SnippetKind::Definition);
    assert_eq!(first.path, "src/server.rs");
    assert_eq!(first.symbol.as_deref(), Some("parse_request_line"));
    assert!(first.text.contains("pub fn parse_request_line(line: &str)"));
    // Definition snippets of functions are their signature, with lines.
    let server_lines: Vec<&str> = SERVER_RS.lines().collect();
    assert_eq!(
        server_lines[first.start_line as usize - 1].trim(),
        first.text.lines().next().unwrap_or("").trim()
    );
    assert!(first.render().starts_with("// src/server.rs:"));
    // The struct definition is retrieved too.
    assert!(
        snippets.iter().any(
            |s| s.symbol.as_deref() == Some("HttpServer") && s.text.contains("max_connections")
        )
    );
}

#[test]
fn similar_chunks_come_from_bm25_over_prefix_identifiers() {
    let (_repo, _dir, indexer) = setup();
    let repos = vec!["app".to_string()];
    let prefix = "def load(path):\n    result = {}\n    with open(path) as handle:\n        for line in handle:\n            key, _, value = line.partition(\"=\")\n";
    let mut request = RetrievalRequest::new(&repos, "other/loader.py", prefix, "", 500);
    request.language = Some("python");
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    let similar = snippets
        .iter()
        .find(|s| s.kind == SnippetKind::Similar)
        .expect("a similar chunk");
    assert_eq!(similar.path, "tools/util.py");
    assert!(similar.text.contains("partition"));
}

#[test]
fn the_window_around_the_cursor_in_the_same_file_is_excluded() {
    let (_repo, _dir, indexer) = setup();
    let repos = vec!["app".to_string()];
    // Editing src/client.rs itself, whole file visible: nothing from it may come back.
    let cut = CLIENT_RS.find("let parsed").unwrap_or(0);
    let (prefix, suffix) = CLIENT_RS.split_at(cut);
    let request = RetrievalRequest::new(&repos, "src/client.rs", prefix, suffix, 2000);
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    assert!(!snippets.is_empty());
    assert!(
        snippets.iter().all(|s| s.path != "src/client.rs"),
        "{snippets:?}"
    );
    // With the cursor far below, the same file's chunks are fair game again.
    let mut far = RetrievalRequest::new(&repos, "src/client.rs", "HttpServer::new(", "", 2000);
    far.cursor_line = Some(500);
    let snippets = indexer.index().retrieve(&far, &words).expect("retrieve");
    assert!(
        snippets.iter().any(|s| s.path == "src/client.rs"),
        "{snippets:?}"
    );
}

#[test]
fn budget_is_respected_with_the_callers_token_counter() {
    let (_repo, _dir, indexer) = setup();
    let repos = vec!["app".to_string()];
    let prefix = "let s = HttpServer::new(1);\nlet r = HttpServer::parse_request_line(x);\nlet p = ConnectionPool(3)\n";
    for budget in [5, 20, 60, 1000] {
        let request = RetrievalRequest::new(&repos, "src/x.rs", prefix, "", budget);
        let snippets = indexer
            .index()
            .retrieve(&request, &words)
            .expect("retrieve");
        let total: usize = snippets.iter().map(|s| s.tokens).sum();
        assert!(total <= budget, "budget {budget}: {total}");
        for s in &snippets {
            assert_eq!(s.tokens, words(&s.render()));
        }
    }
    let request = RetrievalRequest::new(&repos, "src/x.rs", prefix, "", 0);
    assert!(
        indexer
            .index()
            .retrieve(&request, &words)
            .expect("retrieve")
            .is_empty()
    );
    // A counter that says everything is huge yields nothing.
    let request = RetrievalRequest::new(&repos, "src/x.rs", prefix, "", 100);
    let huge = |_: &str| 1_000_000usize;
    assert!(
        indexer
            .index()
            .retrieve(&request, &huge)
            .expect("retrieve")
            .is_empty()
    );
}

#[test]
fn results_are_deduplicated_and_bounded() {
    let (_repo, _dir, indexer) = setup();
    let repos = vec!["app".to_string()];
    let prefix = "HttpServer HttpServer parse_request_line HttpServer handle start_default\n";
    let mut request = RetrievalRequest::new(&repos, "src/x.rs", prefix, "", 100_000);
    request.max_snippets = 3;
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    assert!(snippets.len() <= 3);
    let request = RetrievalRequest::new(&repos, "src/x.rs", prefix, "", 100_000);
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    for (i, a) in snippets.iter().enumerate() {
        for b in &snippets[i + 1..] {
            let overlap = a.repo == b.repo
                && a.path == b.path
                && a.start_line <= b.end_line
                && b.start_line <= a.end_line;
            assert!(!overlap, "{a:?} overlaps {b:?}");
            assert_ne!(a.text.trim(), b.text.trim());
        }
    }
}

#[test]
fn retrieval_only_sees_the_given_repositories() {
    let (_repo, _dir, mut indexer) = setup();
    let other = TestRepo::new();
    other.commit_files(
        &[("secret.rs", b"pub fn classified_routine() -> u32 { 42 }\n")],
        "s",
    );
    add_and_sync(&mut indexer, &other.path(), "private");
    let prefix = "let x = classified_routine();\n";
    let allowed = vec!["app".to_string()];
    let request = RetrievalRequest::new(&allowed, "src/x.rs", prefix, "", 1000);
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    assert!(snippets.iter().all(|s| s.repo == "app"), "{snippets:?}");
    let both = vec!["app".to_string(), "private".to_string()];
    let request = RetrievalRequest::new(&both, "src/x.rs", prefix, "", 1000);
    let snippets = indexer
        .index()
        .retrieve(&request, &words)
        .expect("retrieve");
    assert_eq!(snippets.first().map(|s| s.repo.as_str()), Some("private"));
    let none: Vec<String> = Vec::new();
    let request = RetrievalRequest::new(&none, "src/x.rs", prefix, "", 1000);
    assert!(
        indexer
            .index()
            .retrieve(&request, &words)
            .expect("retrieve")
            .is_empty()
    );
}

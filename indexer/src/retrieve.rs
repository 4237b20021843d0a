//! Retrieval for the completion path: given the text around the cursor,
//! return the snippets of the team's code most likely to help, within a
//! token budget.
//!
//! Two sources, both scoped to the caller's repository set:
//! 1. definitions of the identifiers nearest the cursor (exact lookup of
//!    symbol names; rarer names rank higher);
//! 2. chunks similar to the last lines of the prefix (BM25 over the
//!    identifiers chunks use).
//!
//! Snippets of the edited file that the model already sees are excluded: by
//! line numbers where the cursor line is known, and always by content (most
//! of the snippet's lines appear in the prefix or suffix sent). The rest of
//! the edited file stays a source: a definition or chunk above the prompt's
//! window is often the most useful context there is. Overlapping and
//! identical snippets are dropped; snippets are added while they fit the
//! budget.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tantivy::collector::TopDocs;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, Searcher, TantivyDocument, Term};

use crate::code_tokenizer::{for_each_token, identifiers};
use crate::error::Result;
use crate::index::{CodeIndex, line};
use crate::languages::Language;
use crate::schema::{DOC_CHUNK, DOC_SYMBOL};
use crate::store::get_str;

/// What the completion path asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetrievalRequest<'a> {
    /// Repositories the caller may see; nothing else is searched.
    pub repos: &'a [String],
    /// Path of the file being edited, relative to its repository root
    /// (an absolute path also works: it is matched by suffix).
    pub path: &'a str,
    /// Language of the file (`Language::from_name` accepts editor ids), if known.
    pub language: Option<&'a str>,
    /// Text before the cursor that the model will see (a window of the file
    /// is fine: the same file's snippets found in it are not returned).
    pub prefix: &'a str,
    /// Text after the cursor that the model will see.
    pub suffix: &'a str,
    /// 1-based line of the cursor in the file, if known: then the same file's
    /// lines covered by `prefix` and `suffix` are excluded by number as well.
    pub cursor_line: Option<u32>,
    /// Most tokens all returned snippets may take together, as counted by
    /// the caller's function on [`Snippet::render`].
    pub budget_tokens: usize,
    /// Most snippets to return.
    pub max_snippets: usize,
    /// How many of the last prefix lines feed the similarity search.
    pub query_lines: usize,
}

impl<'a> RetrievalRequest<'a> {
    /// A request with default limits (8 snippets, last 12 lines as query).
    pub fn new(
        repos: &'a [String],
        path: &'a str,
        prefix: &'a str,
        suffix: &'a str,
        budget_tokens: usize,
    ) -> RetrievalRequest<'a> {
        RetrievalRequest {
            repos,
            path,
            language: None,
            prefix,
            suffix,
            cursor_line: None,
            budget_tokens,
            max_snippets: 8,
            query_lines: 12,
        }
    }
}

/// Why a snippet was retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnippetKind {
    /// The definition of an identifier near the cursor.
    Definition,
    /// A chunk similar to the code before the cursor.
    Similar,
}

/// A retrieved snippet. Lines are 1-based and inclusive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snippet {
    /// Repository name.
    pub repo: String,
    /// Repository-relative path.
    pub path: String,
    /// Language name.
    pub language: String,
    /// First line.
    pub start_line: u32,
    /// Last line.
    pub end_line: u32,
    /// The code.
    pub text: String,
    /// Why it was retrieved.
    pub kind: SnippetKind,
    /// For definitions, the name defined.
    pub symbol: Option<String>,
    /// Ranking score (higher is better; comparable within one response).
    pub score: f32,
    /// Tokens of [`Snippet::render`], as counted by the caller's function.
    pub tokens: usize,
}

impl Snippet {
    /// The snippet as it should be put into a prompt: a comment line with
    /// path and line range, then the code.
    pub fn render(&self) -> String {
        let marker = comment_marker(&self.language);
        format!(
            "{marker} {}:{}-{}\n{}\n",
            self.path, self.start_line, self.end_line, self.text
        )
    }
}

fn comment_marker(language: &str) -> &'static str {
    match language {
        "python" | "ruby" | "bash" | "text" => "#",
        _ => "//",
    }
}

/// A candidate before budgeting.
struct Candidate {
    snippet: Snippet,
}

impl CodeIndex {
    /// Returns the best snippets for a completion at the cursor described by
    /// `request`, within `request.budget_tokens` as counted by `count_tokens`
    /// on each snippet's [`Snippet::render`]. Definitions come first, then
    /// similar chunks.
    pub fn retrieve(
        &self,
        request: &RetrievalRequest<'_>,
        count_tokens: &dyn Fn(&str) -> usize,
    ) -> Result<Vec<Snippet>> {
        if request.repos.is_empty() || request.budget_tokens == 0 || request.max_snippets == 0 {
            return Ok(Vec::new());
        }
        let lang = request
            .language
            .and_then(Language::from_name)
            .or_else(|| Language::from_path(request.path))
            .unwrap_or(Language::Text);
        let seen = Seen {
            path: request.path,
            lines: cursor_window(request),
            text: visible_lines(request.prefix, request.suffix),
        };
        let searcher = self.store().reader.searcher();

        let near = near_cursor_identifiers(request.prefix, request.suffix, lang, 8);
        let mut candidates = self.definition_candidates(&searcher, request, lang, &near, &seen)?;
        let tail = tail_lines(request.prefix, request.query_lines.max(1));
        candidates.extend(self.similar_candidates(&searcher, request, lang, tail, &seen)?);

        let mut out: Vec<Snippet> = Vec::new();
        let mut used = 0usize;
        let mut seen_text: HashSet<u64> = HashSet::new();
        for Candidate { mut snippet } in candidates {
            if out.len() >= request.max_snippets {
                break;
            }
            let overlaps = out.iter().any(|s| {
                s.repo == snippet.repo
                    && s.path == snippet.path
                    && s.start_line <= snippet.end_line
                    && snippet.start_line <= s.end_line
            });
            if overlaps || !seen_text.insert(text_hash(&snippet.text)) {
                continue;
            }
            let tokens = count_tokens(&snippet.render());
            if used + tokens > request.budget_tokens {
                continue;
            }
            used += tokens;
            snippet.tokens = tokens;
            out.push(snippet);
        }
        Ok(out)
    }

    fn definition_candidates(
        &self,
        searcher: &Searcher,
        request: &RetrievalRequest<'_>,
        lang: Language,
        near: &[&str],
        seen: &Seen<'_>,
    ) -> Result<Vec<Candidate>> {
        if near.is_empty() {
            return Ok(Vec::new());
        }
        let store = self.store();
        let f = &store.fields;
        let should: Vec<(Occur, Box<dyn Query>)> = near
            .iter()
            .map(|name| {
                let q: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(f.name, name),
                    IndexRecordOption::Basic,
                ));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(vec![
            (Occur::Must, store.type_filter(DOC_SYMBOL)),
            (Occur::Must, store.repo_filter(request.repos)),
            (Occur::Must, Box::new(BooleanQuery::new(should))),
        ]);
        let top = searcher.search(&query, &TopDocs::with_limit(32).order_by_score())?;
        let mut out = Vec::new();
        let mut per_name: Vec<(String, usize)> = Vec::new();
        for (score, address) in top {
            let Some(snippet) = self.load_snippet(searcher, address, SnippetKind::Definition)?
            else {
                continue;
            };
            if seen.covers(&snippet) {
                continue;
            }
            let name = snippet.symbol.clone().unwrap_or_default();
            let count = match per_name.iter_mut().find(|(n, _)| *n == name) {
                Some((_, c)) => {
                    *c += 1;
                    *c
                }
                None => {
                    per_name.push((name.clone(), 1));
                    1
                }
            };
            if count > 2 {
                continue;
            }
            let rank = near.iter().position(|n| *n == name).unwrap_or(near.len());
            let mut s = score * (1.0 - 0.06 * rank as f32);
            if snippet.language == lang.name() {
                s *= 1.5;
            }
            if same_dir(request.path, &snippet.path) {
                s *= 1.2;
            }
            out.push(Candidate {
                snippet: Snippet {
                    score: s,
                    ..snippet
                },
            });
        }
        out.sort_by(|a, b| b.snippet.score.total_cmp(&a.snippet.score));
        Ok(out)
    }

    fn similar_candidates(
        &self,
        searcher: &Searcher,
        request: &RetrievalRequest<'_>,
        lang: Language,
        tail: &str,
        seen: &Seen<'_>,
    ) -> Result<Vec<Candidate>> {
        let store = self.store();
        let f = &store.fields;
        let mut terms: Vec<String> = Vec::new();
        for ident in identifiers(tail) {
            if lang.is_noise_word(ident) {
                continue;
            }
            for_each_token(ident, |t| {
                if t.len() > 1 && !terms.iter().any(|x| x == t) {
                    terms.push(t.to_string());
                }
            });
            if terms.len() >= 32 {
                break;
            }
        }
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let should: Vec<(Occur, Box<dyn Query>)> = terms
            .iter()
            .map(|t| {
                let q = TermQuery::new(
                    Term::from_field_text(f.idents, t),
                    IndexRecordOption::WithFreqs,
                );
                let q: Box<dyn Query> = Box::new(BoostQuery::new(Box::new(q), 1.0));
                (Occur::Should, q)
            })
            .collect();
        let query = BooleanQuery::new(vec![
            (Occur::Must, store.type_filter(DOC_CHUNK)),
            (Occur::Must, store.repo_filter(request.repos)),
            (Occur::Must, Box::new(BooleanQuery::new(should))),
        ]);
        let top = searcher.search(&query, &TopDocs::with_limit(24).order_by_score())?;
        let mut out = Vec::new();
        for (score, address) in top {
            let Some(snippet) = self.load_snippet(searcher, address, SnippetKind::Similar)? else {
                continue;
            };
            if seen.covers(&snippet) {
                continue;
            }
            let s = if snippet.language == lang.name() {
                score * 1.2
            } else {
                score
            };
            out.push(Candidate {
                snippet: Snippet {
                    score: s,
                    ..snippet
                },
            });
        }
        out.sort_by(|a, b| b.snippet.score.total_cmp(&a.snippet.score));
        Ok(out)
    }

    fn load_snippet(
        &self,
        searcher: &Searcher,
        address: DocAddress,
        kind: SnippetKind,
    ) -> Result<Option<Snippet>> {
        let f = &self.store().fields;
        let doc: TantivyDocument = searcher.doc(address)?;
        let (Some(repo), Some(path), Some(text)) = (
            get_str(&doc, f.repo),
            get_str(&doc, f.path),
            get_str(&doc, f.code),
        ) else {
            return Ok(None);
        };
        if text.trim().is_empty() {
            return Ok(None);
        }
        Ok(Some(Snippet {
            repo: repo.to_string(),
            path: path.to_string(),
            language: get_str(&doc, f.lang).unwrap_or("").to_string(),
            start_line: line(&doc, f.start_line),
            end_line: line(&doc, f.end_line),
            text: text.to_string(),
            kind,
            symbol: get_str(&doc, f.name).map(str::to_string),
            score: 0.0,
            tokens: 0,
        }))
    }
}

/// Lines (1-based, inclusive) of the edited file that prefix and suffix cover,
/// where the cursor line is known.
fn cursor_window(request: &RetrievalRequest<'_>) -> Option<(u32, u32)> {
    let cursor = request.cursor_line?;
    let prefix_lines = u32::try_from(request.prefix.matches('\n').count()).unwrap_or(u32::MAX);
    let suffix_lines = u32::try_from(request.suffix.matches('\n').count()).unwrap_or(u32::MAX);
    Some((
        cursor.saturating_sub(prefix_lines).max(1),
        cursor.saturating_add(suffix_lines),
    ))
}

/// What the model already sees of the edited file.
struct Seen<'t> {
    /// The edited file's path, as the request gives it.
    path: &'t str,
    /// Its lines around the cursor, by number, where known.
    lines: Option<(u32, u32)>,
    /// Its distinctive lines in prefix and suffix.
    text: HashSet<&'t str>,
}

impl Seen<'_> {
    /// Whether a snippet is in the edited file and the model sees it already (by its
    /// line numbers, or because most of its distinctive lines are in the prompt).
    fn covers(&self, snippet: &Snippet) -> bool {
        if !same_file(self.path, &snippet.path) {
            return false;
        }
        let by_number = self
            .lines
            .is_some_and(|(first, last)| snippet.start_line <= last && first <= snippet.end_line);
        let (mut visible, mut all) = (0usize, 0usize);
        for line in snippet.text.lines().filter_map(distinctive) {
            all += 1;
            visible += usize::from(self.text.contains(line));
        }
        // A snippet without a distinctive line adds nothing either.
        by_number || visible * 2 >= all
    }
}

/// A line trimmed, if it is long enough to tell where it comes from (a lone `}` or
/// `return` is everywhere).
fn distinctive(line: &str) -> Option<&str> {
    let line = line.trim();
    (line.len() >= 8).then_some(line)
}

/// The distinctive lines of prefix and suffix.
fn visible_lines<'t>(prefix: &'t str, suffix: &'t str) -> HashSet<&'t str> {
    prefix
        .lines()
        .chain(suffix.lines())
        .filter_map(distinctive)
        .collect()
}

fn same_file(request_path: &str, indexed_path: &str) -> bool {
    let request_path = request_path.trim_start_matches("./");
    request_path == indexed_path
        || (request_path.len() > indexed_path.len()
            && request_path.ends_with(indexed_path)
            && request_path[..request_path.len() - indexed_path.len()].ends_with('/'))
}

fn same_dir(a: &str, b: &str) -> bool {
    let dir = |p: &str| p.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let (da, db) = (dir(a), dir(b));
    da == db || da.ends_with(&format!("/{db}"))
}

/// The last `n` lines of `text` (the partial line at the cursor included).
fn tail_lines(text: &str, n: usize) -> &str {
    let mut seen = 0;
    for (i, b) in text.bytes().enumerate().rev() {
        if b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

/// Identifiers nearest the cursor: from the end of the prefix backwards
/// (last 3 lines), then the start of the suffix (first line); distinct,
/// without keywords, at most `max`.
fn near_cursor_identifiers<'t>(
    prefix: &'t str,
    suffix: &'t str,
    lang: Language,
    max: usize,
) -> Vec<&'t str> {
    let before = tail_lines(prefix, 3);
    let after = suffix.split('\n').next().unwrap_or("");
    let mut out: Vec<&str> = Vec::new();
    let mut before_ids: Vec<&str> = identifiers(before).collect();
    // A word being typed at the cursor is probably incomplete.
    if prefix
        .chars()
        .last()
        .is_some_and(|c| c == '_' || c.is_alphanumeric())
    {
        before_ids.pop();
    }
    for id in before_ids.into_iter().rev().chain(identifiers(after)) {
        if out.len() >= max {
            break;
        }
        if !lang.is_noise_word(id) && id.len() <= 64 && !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.trim().hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_from_prefix_and_suffix() {
        let repos = vec!["r".to_string()];
        let mut req = RetrievalRequest::new(&repos, "a.rs", "l1\nl2\nl3", "x\ny\n", 100);
        assert_eq!(cursor_window(&req), None);
        req.cursor_line = Some(100);
        assert_eq!(cursor_window(&req), Some((98, 102)));
    }

    #[test]
    fn the_same_files_snippets_are_seen_by_content() {
        let snippet = |path: &str, text: &str| Snippet {
            repo: "r".into(),
            path: path.into(),
            language: "rust".into(),
            start_line: 1,
            end_line: 3,
            text: text.into(),
            kind: SnippetKind::Similar,
            symbol: None,
            score: 0.0,
            tokens: 0,
        };
        let prefix = "fn parse(line: &str) -> Option<u32> {\n    let value = line.trim();\n";
        let seen = Seen {
            path: "src/a.rs",
            lines: None,
            text: visible_lines(prefix, "    value.parse().ok()\n}\n"),
        };
        // Most distinctive lines visible: seen; a lone `}` does not count either way.
        let shown = "fn parse(line: &str) -> Option<u32> {\n    let value = line.trim();\n    other_call(value);\n}";
        assert!(seen.covers(&snippet("src/a.rs", shown)));
        // The same file's other code, and another file with the same text, are not.
        let elsewhere = "fn render(&self) -> String {\n    format!(\"{}\", self.0)\n}";
        assert!(!seen.covers(&snippet("src/a.rs", elsewhere)));
        assert!(!seen.covers(&snippet("src/b.rs", shown)));
        assert!(seen.covers(&snippet("src/a.rs", "}\n")));
    }

    #[test]
    fn same_file_matches_suffix_paths() {
        assert!(same_file("src/a.rs", "src/a.rs"));
        assert!(same_file("/home/me/proj/src/a.rs", "src/a.rs"));
        assert!(!same_file("/home/me/proj/xsrc/a.rs", "src/a.rs"));
        assert!(!same_file("src/b.rs", "src/a.rs"));
    }

    #[test]
    fn tail_and_near_identifiers() {
        assert_eq!(tail_lines("a\nb\nc\nd", 2), "c\nd");
        assert_eq!(tail_lines("a\nb", 5), "a\nb");
        let near = near_cursor_identifiers(
            "let cfg = load();\nlet srv = Server::new(cfg);\nsrv.sta",
            "rt(port);\n",
            Language::Rust,
            8,
        );
        assert_eq!(near, vec!["srv", "cfg", "Server", "load", "rt", "port"]);
    }
}

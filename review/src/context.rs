//! What the model sees of a change besides the change: the enclosing function or
//! class (tree-sitter, through the indexer's parser), definitions of the symbols the
//! added lines use (same file, then the code index), and how a file's hunks are cut
//! into chunks that fit the prompt budget.

use std::collections::HashSet;

use indexer::{
    CodeIndex, Language, ParseConfig, RetrievalRequest, SnippetKind, Symbol, SymbolKind,
};

use super::Limits;
use super::diff::{DiffLine, FileDiff, LineKind};

/// New-side file contents, when the reviewer can see them.
pub trait FileSource {
    /// The whole new-side text of `path`, if known.
    fn new_text(&self, path: &str) -> Option<String>;
}

/// No file contents: context comes from the diff alone.
pub struct NoFiles;

impl FileSource for NoFiles {
    fn new_text(&self, _path: &str) -> Option<String> {
        None
    }
}

/// Files of a working tree (verified against the diff before use). Only files that
/// resolve, after symbolic links, inside the tree are read.
pub struct WorktreeFiles {
    root: std::path::PathBuf,
}

impl WorktreeFiles {
    /// Reads files under `root` (a repository's working directory).
    pub fn new(root: std::path::PathBuf) -> Self {
        let root = root.canonicalize().unwrap_or(root);
        Self { root }
    }

    /// `path` resolved inside the tree, or `None` when it is absolute, climbs out with
    /// `..`, or is (or passes through) a symbolic link that points outside.
    fn resolve(&self, path: &str) -> Option<std::path::PathBuf> {
        super::diff::check_relative_path(path).ok()?;
        let resolved = self.root.join(path).canonicalize().ok()?;
        resolved.starts_with(&self.root).then_some(resolved)
    }
}

impl FileSource for WorktreeFiles {
    fn new_text(&self, path: &str) -> Option<String> {
        let p = self.resolve(path)?;
        let meta = std::fs::metadata(&p).ok()?;
        if !meta.is_file() || meta.len() > 4 << 20 {
            return None;
        }
        String::from_utf8(std::fs::read(p).ok()?).ok()
    }
}

/// Looks up definitions of symbols used by a piece of code.
pub trait Definitions {
    /// Definitions used by `code` (in file `path`, ending at `line`), within
    /// `budget_tokens` as counted by `count`.
    fn lookup(
        &self,
        path: &str,
        code: &str,
        line: u32,
        budget_tokens: usize,
        count: &dyn Fn(&str) -> usize,
    ) -> Vec<ContextBlock>;
}

/// Definitions from the code index, restricted to some repositories.
pub struct IndexDefinitions<'a> {
    /// The index.
    pub index: &'a CodeIndex,
    /// Repositories the caller may see (usually the one under review).
    pub repos: Vec<String>,
}

impl Definitions for IndexDefinitions<'_> {
    fn lookup(
        &self,
        path: &str,
        code: &str,
        line: u32,
        budget_tokens: usize,
        count: &dyn Fn(&str) -> usize,
    ) -> Vec<ContextBlock> {
        if self.repos.is_empty() || budget_tokens == 0 {
            return Vec::new();
        }
        let mut request = RetrievalRequest::new(&self.repos, path, code, "", budget_tokens);
        request.cursor_line = Some(line);
        request.max_snippets = 4;
        match self.index.retrieve(&request, count) {
            Ok(snippets) => snippets
                .into_iter()
                .filter(|s| s.kind == SnippetKind::Definition)
                .map(|s| ContextBlock {
                    label: format!("definition of `{}`", s.symbol.clone().unwrap_or_default()),
                    path: s.path,
                    start_line: s.start_line,
                    text: s.text,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "review: index lookup failed");
                Vec::new()
            }
        }
    }
}

/// Code shown to the model as context (never reviewed itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextBlock {
    /// What it is (`enclosing function`, ``definition of `parse` ``).
    pub label: String,
    /// Its file.
    pub path: String,
    /// Its first line.
    pub start_line: u32,
    /// The code.
    pub text: String,
}

/// A file of the diff with what is known about its new side.
pub struct FileView<'a> {
    /// The diff of the file.
    pub file: &'a FileDiff,
    /// Its language, if it has a grammar.
    pub language: Option<Language>,
    /// The whole new-side text, when a source had it and it agrees with the diff.
    pub text: Option<String>,
    /// Definitions on the new side (whole file, or what the hunks show), file line numbers.
    pub symbols: Vec<Symbol>,
}

/// Whether `text` agrees with every new-side line the diff shows.
fn agrees(file: &FileDiff, text: &str) -> bool {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    file.hunks
        .iter()
        .flat_map(|h| &h.lines)
        .all(|l| match l.new_line {
            Some(n) => n >= 1 && lines.get(n as usize - 1) == Some(&l.text.as_str()),
            None => true,
        })
}

impl<'a> FileView<'a> {
    /// Looks at `file`, reading its new side from `source` when possible.
    pub fn new(file: &'a FileDiff, source: &dyn FileSource) -> Self {
        let path = file.path();
        let text = source.new_text(path).filter(|t| agrees(file, t));
        let language = Language::from_path(path)
            .or_else(|| text.as_deref().and_then(Language::from_shebang))
            .filter(|l| *l != Language::Text && *l != Language::Json);
        let mut symbols = Vec::new();
        if let Some(lang) = language {
            let cfg = ParseConfig::default();
            match &text {
                Some(t) => symbols = indexer::analyze(t, lang, &cfg).symbols,
                None => {
                    for h in &file.hunks {
                        let segment: Vec<&str> = h
                            .lines
                            .iter()
                            .filter(|l| l.new_line.is_some())
                            .map(|l| l.text.as_str())
                            .collect();
                        if segment.is_empty() {
                            continue;
                        }
                        let offset = h.new_start.saturating_sub(1);
                        let mut joined = segment.join("\n");
                        joined.push('\n');
                        for mut s in indexer::analyze(&joined, lang, &cfg).symbols {
                            s.start_line = s.start_line.saturating_add(offset);
                            s.end_line = s.end_line.saturating_add(offset);
                            s.snippet_end_line = s.snippet_end_line.saturating_add(offset);
                            symbols.push(s);
                        }
                    }
                }
            }
        }
        Self {
            file,
            language,
            text,
            symbols,
        }
    }

    /// The file's path.
    pub fn path(&self) -> &str {
        self.file.path()
    }

    /// The language's name (`text` when none).
    pub fn language_name(&self) -> &'static str {
        self.language.map(Language::name).unwrap_or("text")
    }
}

/// A part of a hunk shown to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The hunk's section text (git's guess at the enclosing function).
    pub section: String,
    /// The lines.
    pub lines: Vec<DiffLine>,
}

impl Segment {
    /// Added lines: (new line, text).
    pub fn added(&self) -> impl Iterator<Item = (u32, &str)> {
        super::diff::added_lines(&self.lines)
    }

    fn added_range(&self) -> Option<(u32, u32)> {
        let mut it = self.added().map(|(n, _)| n);
        let first = it.next()?;
        Some((first, it.fold(first, |_, n| n)))
    }

    fn new_range(&self) -> Option<(u32, u32)> {
        let mut it = self.lines.iter().filter_map(|l| l.new_line);
        let first = it.next()?;
        Some((first, it.next_back().unwrap_or(first)))
    }
}

/// One model call's worth of change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewChunk {
    /// The file.
    pub path: String,
    /// Its language name.
    pub language: &'static str,
    /// The hunks (or windows of a large hunk), in order.
    pub segments: Vec<Segment>,
    /// The enclosing functions or classes, outside what the segments show.
    pub enclosing: Vec<ContextBlock>,
    /// Definitions of symbols the added lines use.
    pub definitions: Vec<ContextBlock>,
}

impl ReviewChunk {
    /// Every added line of the chunk: (new line, text).
    pub fn added(&self) -> Vec<(u32, &str)> {
        self.segments.iter().flat_map(|s| s.added()).collect()
    }
}

/// Longest line shown to the model, in characters.
const MAX_LINE_CHARS: usize = 300;

/// How a diff line is shown to the model: marker, new-side number, text.
pub fn render_line(line: &DiffLine) -> String {
    let text = super::diff::truncate(&line.text, MAX_LINE_CHARS);
    match (line.kind, line.new_line) {
        (LineKind::Added, Some(n)) => format!("+{n:>5} | {text}"),
        (LineKind::Context, Some(n)) => format!(" {n:>5} | {text}"),
        _ => format!("-      | {text}"),
    }
}

/// Words too common to be worth a definition lookup.
const COMMON: &[&str] = &[
    "def",
    "return",
    "self",
    "None",
    "True",
    "False",
    "let",
    "mut",
    "pub",
    "impl",
    "for",
    "while",
    "if",
    "else",
    "elif",
    "match",
    "const",
    "static",
    "struct",
    "enum",
    "class",
    "function",
    "var",
    "new",
    "this",
    "import",
    "from",
    "use",
    "and",
    "not",
    "int",
    "str",
    "string",
    "bool",
    "void",
    "char",
    "len",
    "fmt",
    "Self",
    "async",
    "await",
    "try",
    "catch",
    "except",
    "raise",
    "throw",
    "with",
    "pass",
    "break",
    "continue",
    "null",
    "nil",
    "true",
    "false",
    "public",
    "private",
    "protected",
    "final",
    "package",
    "func",
    "type",
];

/// Identifiers worth a definition lookup in `code` (3+ characters, not all keywords).
fn identifiers(code: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    for c in code.chars().chain(std::iter::once(' ')) {
        if c.is_alphanumeric() || c == '_' {
            cur.push(c);
        } else {
            if cur.len() >= 3
                && !cur.starts_with(|ch: char| ch.is_ascii_digit())
                && !COMMON.contains(&cur.as_str())
                && !out.contains(&cur)
            {
                out.push(cur.clone());
            }
            cur.clear();
        }
    }
    out
}

fn is_scope_kind(kind: SymbolKind) -> bool {
    matches!(
        kind,
        SymbolKind::Function
            | SymbolKind::Method
            | SymbolKind::Class
            | SymbolKind::Struct
            | SymbolKind::Impl
            | SymbolKind::Trait
            | SymbolKind::Interface
            | SymbolKind::Enum
            | SymbolKind::Module
    )
}

/// The innermost definition around `segment`'s added lines, rendered from the whole
/// file without the lines the segment shows (at most ~30 lines).
fn enclosing(view: &FileView<'_>, segment: &Segment) -> Option<(ContextBlock, String)> {
    let text = view.text.as_deref()?;
    let (first, last) = segment.added_range()?;
    let (shown_from, shown_to) = segment.new_range()?;
    let sym = view
        .symbols
        .iter()
        .filter(|s| is_scope_kind(s.kind) && s.start_line <= first && s.end_line >= last)
        .min_by_key(|s| s.end_line - s.start_line)?;
    if sym.start_line >= shown_from && sym.end_line <= shown_to {
        return None;
    }
    let lines: Vec<&str> = text.split('\n').collect();
    let line = |n: u32| -> &str {
        lines
            .get(n as usize - 1)
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .unwrap_or("")
    };
    let mut out = String::new();
    let mut last = 0u32;
    let push = |n: u32, last: &mut u32, out: &mut String| {
        if *last != 0 && n > *last + 1 {
            out.push_str("      …\n");
        }
        out.push_str(&format!(
            "{n:>6} | {}\n",
            super::diff::truncate(line(n), MAX_LINE_CHARS)
        ));
        *last = n;
    };
    let head_end = sym.start_line.saturating_add(7).min(sym.end_line);
    for n in sym.start_line..=head_end {
        if n < shown_from {
            push(n, &mut last, &mut out);
        }
    }
    let before_from = shown_from.saturating_sub(6).max(head_end + 1);
    for n in before_from..shown_from {
        push(n, &mut last, &mut out);
    }
    if shown_to < sym.end_line {
        out.push_str("      … (the lines of the change)\n");
        last = 0;
        let after_to = shown_to.saturating_add(6).min(sym.end_line);
        for n in shown_to + 1..=after_to {
            push(n, &mut last, &mut out);
        }
        if after_to < sym.end_line {
            push(sym.end_line, &mut last, &mut out);
        }
    }
    Some((
        ContextBlock {
            label: format!("enclosing {} `{}`", sym.kind.name(), sym.name),
            path: view.path().to_string(),
            start_line: sym.start_line,
            text: out,
        },
        sym.name.clone(),
    ))
}

/// Cuts a file's change into chunks that fit `limits.prompt_tokens` (tokens as
/// counted by `count_tokens`, the reviewing model's tokenizer), each with context.
pub fn chunks(
    view: &FileView<'_>,
    definitions: Option<&dyn Definitions>,
    count_tokens: &dyn Fn(&str) -> usize,
    limits: &Limits,
) -> Vec<ReviewChunk> {
    // About 40 % of the prompt for the change, 15 % each for enclosing code and
    // definitions; the rest is instructions and the fence.
    let change_budget = (limits.prompt_tokens * 2 / 5).max(64);
    let context_budget = limits.prompt_tokens * 3 / 20;
    let segments = segments(view, count_tokens, change_budget);
    group(segments, change_budget)
        .into_iter()
        .map(|segments| with_context(view, segments, definitions, count_tokens, context_budget))
        .collect()
}

/// The hunks with added lines as segments with their token counts; a hunk larger
/// than `budget` is cut into windows, and only windows with added lines are kept.
fn segments(
    view: &FileView<'_>,
    count: &dyn Fn(&str) -> usize,
    budget: usize,
) -> Vec<(Segment, usize)> {
    let mut segments: Vec<(Segment, usize)> = Vec::new();
    for h in &view.file.hunks {
        if !h.has_additions() {
            continue;
        }
        let mut cur: Vec<DiffLine> = Vec::new();
        let mut cur_tokens = 0usize;
        for l in &h.lines {
            let t = count(&render_line(l)) + 1;
            if cur_tokens + t > budget && !cur.is_empty() {
                let seg = Segment {
                    section: h.section.clone(),
                    lines: std::mem::take(&mut cur),
                };
                if seg.added().next().is_some() {
                    segments.push((seg, cur_tokens));
                }
                cur_tokens = 0;
            }
            cur.push(l.clone());
            cur_tokens += t;
        }
        let seg = Segment {
            section: h.section.clone(),
            lines: cur,
        };
        if seg.added().next().is_some() {
            segments.push((seg, cur_tokens));
        }
    }
    segments
}

/// Neighbouring segments share a chunk while together they fit `budget`.
fn group(segments: Vec<(Segment, usize)>, budget: usize) -> Vec<Vec<Segment>> {
    let mut groups: Vec<Vec<Segment>> = Vec::new();
    let mut used = usize::MAX;
    for (seg, tokens) in segments {
        match groups.last_mut() {
            Some(g) if used + tokens <= budget => {
                g.push(seg);
                used += tokens;
            }
            _ => {
                groups.push(vec![seg]);
                used = tokens;
            }
        }
    }
    groups
}

/// One chunk of `segments` with its context: the enclosing code of each segment, then
/// definitions of the identifiers its added lines use, each kind within `budget`.
fn with_context(
    view: &FileView<'_>,
    segments: Vec<Segment>,
    definitions: Option<&dyn Definitions>,
    count: &dyn Fn(&str) -> usize,
    budget: usize,
) -> ReviewChunk {
    let mut enclosing_blocks = Vec::new();
    let mut enclosing_names: HashSet<String> = HashSet::new();
    let mut context_left = budget;
    for seg in &segments {
        if let Some((block, name)) = enclosing(view, seg) {
            let t = count(&block.text);
            if t <= context_left && enclosing_names.insert(name) {
                context_left -= t;
                enclosing_blocks.push(block);
            }
        }
    }
    let definitions = used_definitions(
        view,
        &segments,
        &mut enclosing_names,
        definitions,
        count,
        budget,
    );
    ReviewChunk {
        path: view.path().to_string(),
        language: view.language_name(),
        segments,
        enclosing: enclosing_blocks,
        definitions,
    }
}

/// Definitions of identifiers the added lines of `segments` use, within `budget`:
/// same file first (it is certainly the right definition; `known` names, such as the
/// enclosing functions, are skipped and the ones found added), then `definitions`.
fn used_definitions(
    view: &FileView<'_>,
    segments: &[Segment],
    known: &mut HashSet<String>,
    definitions: Option<&dyn Definitions>,
    count: &dyn Fn(&str) -> usize,
    budget: usize,
) -> Vec<ContextBlock> {
    let added_text: String = segments
        .iter()
        .flat_map(|s| s.added())
        .map(|(_, t)| format!("{t}\n"))
        .collect();
    let last_line = segments
        .last()
        .and_then(|s| s.added_range())
        .map(|(_, b)| b)
        .unwrap_or(1);
    let mut defs = Vec::new();
    let mut def_left = budget;
    for ident in identifiers(&added_text) {
        if known.contains(&ident) {
            continue;
        }
        let Some(sym) = view.symbols.iter().find(|s| {
            s.name == ident
                && !segments.iter().any(|seg| {
                    seg.new_range()
                        .is_some_and(|(a, b)| s.start_line <= b && s.end_line >= a)
                })
        }) else {
            continue;
        };
        let block = ContextBlock {
            label: format!("definition of `{}`", sym.name),
            path: view.path().to_string(),
            start_line: sym.start_line,
            text: sym.snippet.clone(),
        };
        let t = count(&block.text);
        if t <= def_left {
            def_left -= t;
            known.insert(ident);
            defs.push(block);
        }
    }
    if let Some(d) = definitions {
        for block in d.lookup(view.path(), &added_text, last_line, def_left, count) {
            let dup = defs
                .iter()
                .any(|b| b.path == block.path && b.start_line == block.start_line);
            let t = count(&block.text);
            if !dup && t <= def_left {
                def_left -= t;
                defs.push(block);
            }
        }
    }
    defs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::parse;

    /// Counts whitespace-separated words as tokens.
    fn words(text: &str) -> usize {
        text.split_whitespace().count()
    }

    #[test]
    fn worktree_reads_stay_inside_the_tree_after_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(repo.join("src")).expect("dirs");
        std::fs::write(repo.join("src/a.py"), "x = 1\n").expect("write");
        std::fs::write(dir.path().join("secret.py"), "KEY = 1\n").expect("write");
        std::os::unix::fs::symlink(dir.path().join("secret.py"), repo.join("link.py"))
            .expect("link");
        std::os::unix::fs::symlink(dir.path(), repo.join("up")).expect("link");
        let files = WorktreeFiles::new(repo.clone());
        assert_eq!(files.new_text("src/a.py").as_deref(), Some("x = 1\n"));
        for escaping in ["link.py", "up/secret.py", "../secret.py", "/etc/passwd"] {
            assert_eq!(files.new_text(escaping), None, "{escaping}");
        }
    }

    struct One(String);
    impl FileSource for One {
        fn new_text(&self, _path: &str) -> Option<String> {
            Some(self.0.clone())
        }
    }

    const FILE: &str = "import os\n\n\ndef helper(x):\n    return x * 2\n\n\ndef process(items):\n    total = 0\n    for item in items:\n        total += helper(item)\n    if total > 10:\n        total = 10\n    return total\n";

    #[test]
    fn enclosing_function_and_same_file_definitions() {
        let diff = "--- a/m.py\n+++ b/m.py\n@@ -12,2 +12,2 @@ def process(items):\n-    if total > 10:\n+    if helper(total) >= 10:\n         total = 10\n";
        // The diff's new side must agree with the file.
        let text = FILE.replace("    if total > 10:", "    if helper(total) >= 10:");
        let d = parse(diff).expect("diff");
        let view = FileView::new(&d.files[0], &One(text));
        assert!(view.text.is_some(), "the file agrees with the diff");
        let chunks = chunks(&view, None, &words, &Limits::default());
        assert_eq!(chunks.len(), 1);
        let c = &chunks[0];
        assert_eq!(c.enclosing.len(), 1, "{c:?}");
        assert!(c.enclosing[0].label.contains("process"));
        assert!(c.enclosing[0].text.contains("def process(items):"));
        assert!(
            !c.enclosing[0].text.contains("helper(total)"),
            "the change is not repeated"
        );
        assert!(
            c.definitions.iter().any(|b| b.label.contains("helper")),
            "{c:?}"
        );
    }

    #[test]
    fn a_file_that_disagrees_with_the_diff_is_not_used() {
        let diff = "--- a/m.py\n+++ b/m.py\n@@ -12,1 +12,1 @@\n-    if total > 10:\n+    if total >= 10:\n";
        let d = parse(diff).expect("diff");
        let view = FileView::new(&d.files[0], &One(FILE.to_string()));
        assert!(view.text.is_none());
    }

    #[test]
    fn large_hunks_are_split_and_small_ones_grouped() {
        let mut diff = String::from("--- a/big.py\n+++ b/big.py\n@@ -0,0 +1,400 @@\n");
        for i in 0..400 {
            diff.push_str(&format!("+value_{i} = compute(a, b, c, d)\n"));
        }
        let d = parse(&diff).expect("diff");
        let view = FileView::new(&d.files[0], &NoFiles);
        let limits = Limits {
            prompt_tokens: 1000,
            ..Limits::default()
        };
        let cs = chunks(&view, None, &words, &limits);
        assert!(cs.len() > 3, "{}", cs.len());
        let total: usize = cs.iter().map(|c| c.added().len()).sum();
        assert_eq!(total, 400, "every added line is in exactly one chunk");
        for c in &cs {
            let t: usize = c
                .segments
                .iter()
                .flat_map(|s| &s.lines)
                .map(|l| words(&render_line(l)) + 1)
                .sum();
            assert!(t <= 400, "{t}");
        }
        let small = "--- a/s.py\n+++ b/s.py\n@@ -1,1 +1,1 @@\n-a = 1\n+a = 2\n@@ -50,1 +50,1 @@\n-b = 1\n+b = 2\n";
        let d = parse(small).expect("diff");
        let view = FileView::new(&d.files[0], &NoFiles);
        let cs = chunks(&view, None, &words, &Limits::default());
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].segments.len(), 2);
    }
}

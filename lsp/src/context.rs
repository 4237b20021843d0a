//! Context the server cannot see: the editor's other open documents and recent edits.
//!
//! The server indexes committed code; the editor also knows unsaved buffers. From the
//! identifiers just before the cursor (complete words only, so the context stays the same
//! while a word is typed and the server's prefix cache keeps hitting), this module finds
//! * **declarations**: lines in other open documents that define one of them
//!   (`def name`, `fn name`, `class Name`, ...), with the body that follows;
//! * **snippets**: other lines that mention several of them, with a line around;
//! * **recent edits**: the latest edited lines of other documents, and of this one far
//!   from the cursor (what is near it is in the prefix or suffix already).
//!
//! Everything is bounded (counts, lines and characters) and deterministic.

use std::collections::{HashMap, HashSet};

use tower_lsp_server::ls_types::{Position, Uri};

use crate::documents::{Document, Documents, is_identifier_char};

/// Lines before the cursor whose identifiers count as "near".
const NEAR_LINES: u32 = 8;
/// At most this many identifiers are looked up.
const MAX_IDENTIFIERS: usize = 12;
/// Identifiers shorter than this are too common to be useful.
const MIN_IDENTIFIER_LEN: usize = 3;
/// Documents larger than this are not scanned.
const MAX_SCANNED_BYTES: usize = 2 << 20;
/// Longest declaration body, in lines.
const DECLARATION_LINES: u32 = 12;
/// Recent-edit snippets keep at most this many lines.
const EDIT_LINES: u32 = 10;
/// Edits in the current document closer than this to the cursor are left out.
const NEAR_CURSOR_LINES: u32 = 40;
/// Limits on what is sent.
const MAX_DECLARATIONS: usize = 3;
const MAX_SNIPPETS: usize = 3;
const MAX_EDIT_SNIPPETS: usize = 2;
/// Total characters of declarations and snippets.
const MAX_CHARS: usize = 3000;

/// Keywords that introduce a definition of the identifier after them.
const DEFINING: &[&str] = &[
    "def",
    "class",
    "fn",
    "struct",
    "enum",
    "trait",
    "type",
    "interface",
    "function",
    "func",
    "const",
    "let",
    "var",
    "static",
    "module",
    "impl",
    "union",
];

/// Words that say nothing about what the code is about.
const STOP_WORDS: &[&str] = &[
    "and",
    "not",
    "for",
    "while",
    "with",
    "pass",
    "else",
    "elif",
    "try",
    "except",
    "finally",
    "lambda",
    "yield",
    "async",
    "await",
    "return",
    "import",
    "from",
    "self",
    "Self",
    "None",
    "True",
    "False",
    "true",
    "false",
    "null",
    "nil",
    "undefined",
    "this",
    "new",
    "mut",
    "pub",
    "use",
    "match",
    "public",
    "private",
    "protected",
    "void",
    "int",
    "str",
    "string",
    "char",
    "bool",
    "float",
    "double",
    "long",
    "print",
    "println",
    "def",
    "class",
    "const",
    "let",
    "var",
    "function",
    "func",
    "struct",
    "enum",
    "impl",
    "static",
    "type",
    "break",
    "continue",
    "switch",
    "case",
    "default",
    "raise",
    "throw",
    "catch",
    "where",
    "crate",
    "super",
    "package",
];

/// A piece of another file, as the server's request wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snippet {
    /// Path of the file it comes from.
    pub filepath: String,
    /// Its text.
    pub body: String,
    /// Relevance in (0, 1].
    pub score: f32,
}

/// The context gathered for one completion.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Context {
    /// Definitions of identifiers near the cursor (Tabby's `declarations`).
    pub declarations: Vec<Snippet>,
    /// Related lines and recent edits (Tabby's `relevant_snippets_from_changed_files`).
    pub snippets: Vec<Snippet>,
}

/// Gathers context for a completion at `position` in the document at `uri`.
pub fn gather(docs: &Documents, uri: &Uri, position: Position) -> Context {
    let Some(current) = docs.get(uri) else {
        return Context::default();
    };
    let identifiers = identifiers_near(current, position);
    // Other documents in a stable order.
    let mut others: Vec<(&Uri, &Document)> = docs
        .iter()
        .filter(|(u, d)| *u != uri && d.text().len() <= MAX_SCANNED_BYTES)
        .collect();
    others.sort_by(|a, b| a.1.filepath.cmp(&b.1.filepath).then(a.0.cmp(b.0)));

    let mut budget = MAX_CHARS;
    let mut context = Context::default();
    let mut taken: Vec<(&str, u32, u32)> = Vec::new();
    if !identifiers.is_empty() {
        let (declarations, mentions) = scan(&others, &identifiers);
        for (doc, start, end) in declarations {
            if context.declarations.len() == MAX_DECLARATIONS {
                break;
            }
            if let Some(s) = take(doc, start, end, 1.0, &mut budget) {
                taken.push((&doc.filepath, start, end));
                context.declarations.push(s);
            }
        }
        for (doc, start, end, score) in mentions {
            if context.snippets.len() == MAX_SNIPPETS {
                break;
            }
            if overlaps(&taken, &doc.filepath, start, end) {
                continue;
            }
            if let Some(s) = take(doc, start, end, score, &mut budget) {
                taken.push((&doc.filepath, start, end));
                context.snippets.push(s);
            }
        }
    }
    let mut edits = 0;
    for (doc, start, end) in recent_edits(current, position, &others) {
        if edits == MAX_EDIT_SNIPPETS {
            break;
        }
        if overlaps(&taken, &doc.filepath, start, end) {
            continue;
        }
        if let Some(s) = take(doc, start, end, 0.5, &mut budget) {
            taken.push((&doc.filepath, start, end));
            context.snippets.push(s);
            edits += 1;
        }
    }
    context
}

/// Complete identifiers on the lines just before the cursor, nearest first. The word
/// touching the cursor (being typed) is left out.
pub fn identifiers_near(doc: &Document, position: Position) -> Vec<String> {
    let offset = doc.offset_at(position);
    let cursor = doc.position_at(offset);
    let first = cursor.line.saturating_sub(NEAR_LINES);
    let start = doc.offset_at(Position::new(first, 0));
    let mut text = &doc.text()[start..offset];
    // Drop the partial word at the cursor.
    let partial = text
        .char_indices()
        .rev()
        .take_while(|(_, c)| is_identifier_char(*c))
        .last()
        .map(|(i, _)| i);
    if let Some(i) = partial {
        text = &text[..i];
    }
    let mut seen = HashSet::new();
    let mut nearest_first = Vec::new();
    let words: Vec<&str> = words(text).map(|(_, w)| w).collect();
    for word in words.into_iter().rev() {
        if word.chars().count() < MIN_IDENTIFIER_LEN || STOP_WORDS.contains(&word) {
            continue;
        }
        if seen.insert(word) {
            nearest_first.push(word.to_string());
            if nearest_first.len() == MAX_IDENTIFIERS {
                break;
            }
        }
    }
    nearest_first
}

/// Identifier-like words of `text` with their byte offsets.
fn words(text: &str) -> impl Iterator<Item = (usize, &str)> {
    let mut rest = text.char_indices().peekable();
    std::iter::from_fn(move || {
        loop {
            let (start, c) = rest.next()?;
            if !is_identifier_char(c) {
                continue;
            }
            let mut end = start + c.len_utf8();
            while let Some(&(i, c)) = rest.peek() {
                if !is_identifier_char(c) {
                    break;
                }
                end = i + c.len_utf8();
                rest.next();
            }
            let word = &text[start..end];
            if word.starts_with(|c: char| c.is_ascii_digit()) {
                continue;
            }
            return Some((start, word));
        }
    })
}

type Declaration<'a> = (&'a Document, u32, u32);
type Mention<'a> = (&'a Document, u32, u32, f32);

/// Finds definitions (ordered like `identifiers`) and mentions (best first).
fn scan<'a>(
    others: &[(&Uri, &'a Document)],
    identifiers: &[String],
) -> (Vec<Declaration<'a>>, Vec<Mention<'a>>) {
    let rank: HashMap<&str, usize> = identifiers
        .iter()
        .enumerate()
        .map(|(i, w)| (w.as_str(), i))
        .collect();
    let mut definitions: Vec<(usize, Declaration<'a>)> = Vec::new();
    let mut mentions: Vec<Mention<'a>> = Vec::new();
    for (_, doc) in others {
        let lines = doc.line_count();
        for line_no in 0..lines {
            let line = doc.lines(line_no, line_no + 1);
            let mut hits: Vec<usize> = Vec::new();
            let mut previous: Option<&str> = None;
            for (_, word) in words(line) {
                if let Some(&r) = rank.get(word) {
                    if previous.is_some_and(|p| DEFINING.contains(&p))
                        && !definitions.iter().any(|(d, _)| *d == r)
                    {
                        let end = declaration_end(doc, line_no);
                        definitions.push((r, (*doc, line_no, end)));
                    }
                    if !hits.contains(&r) {
                        hits.push(r);
                    }
                }
                previous = Some(word);
            }
            if !hits.is_empty() {
                let score = hits.len() as f32 / identifiers.len() as f32;
                let start = line_no.saturating_sub(1);
                let end = (line_no + 2).min(lines);
                mentions.push((*doc, start, end, score));
            }
        }
    }
    definitions.sort_by_key(|(rank, _)| *rank);
    // Best first; the scan order (file, line) breaks ties, so the result is stable.
    mentions.sort_by(|a, b| b.3.total_cmp(&a.3));
    (definitions.into_iter().map(|(_, d)| d).collect(), mentions)
}

/// One past the last line of the definition starting at `start`: its indented body,
/// a closing bracket at its own indentation, at most [`DECLARATION_LINES`] lines.
fn declaration_end(doc: &Document, start: u32) -> u32 {
    let indent = |s: &str| s.len() - s.trim_start().len();
    let head = doc.lines(start, start + 1);
    let base = indent(head);
    let limit = (start + DECLARATION_LINES).min(doc.line_count());
    let mut end = start + 1;
    while end < limit {
        let line = doc.lines(end, end + 1);
        let trimmed = line.trim();
        if !trimmed.is_empty() && indent(line) <= base {
            if trimmed.starts_with(['}', ')', ']']) || trimmed == "end" {
                end += 1;
            }
            break;
        }
        end += 1;
    }
    // Trailing blank lines say nothing.
    while end > start + 1 && doc.lines(end - 1, end).trim().is_empty() {
        end -= 1;
    }
    end
}

/// Recently edited spans: other documents by how recently they were edited, then edits
/// of the current document away from the cursor.
fn recent_edits<'a>(
    current: &'a Document,
    position: Position,
    others: &[(&Uri, &'a Document)],
) -> Vec<(&'a Document, u32, u32)> {
    let mut by_recency: Vec<&'a Document> = others.iter().map(|(_, d)| *d).collect();
    by_recency.retain(|d| d.last_edited > 0);
    by_recency.sort_by_key(|d| std::cmp::Reverse(d.last_edited));
    let clip = |doc: &'a Document, start: u32, end: u32| {
        let end = end.min(doc.line_count());
        (doc, start.max(end.saturating_sub(EDIT_LINES)), end)
    };
    let mut spans = Vec::new();
    for doc in by_recency {
        if let Some(span) = doc.recent_edits().last() {
            spans.push(clip(doc, span.start, span.end));
        }
    }
    let far = |line: u32| line.abs_diff(position.line) > NEAR_CURSOR_LINES;
    for span in current.recent_edits().collect::<Vec<_>>().into_iter().rev() {
        if far(span.start) && far(span.end) {
            spans.push(clip(current, span.start, span.end));
        }
    }
    spans.retain(|(_, start, end)| start < end);
    spans
}

fn overlaps(taken: &[(&str, u32, u32)], path: &str, start: u32, end: u32) -> bool {
    taken
        .iter()
        .any(|(p, s, e)| *p == path && start < *e && *s < end)
}

/// The lines as a snippet, if they fit the remaining budget and are not blank.
fn take(doc: &Document, start: u32, end: u32, score: f32, budget: &mut usize) -> Option<Snippet> {
    let body = doc.lines(start, end).trim_end();
    if body.trim().is_empty() || body.len() > *budget {
        return None;
    }
    *budget -= body.len();
    Some(Snippet {
        filepath: doc.filepath.clone(),
        body: body.to_string(),
        score,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_lsp_server::ls_types::{Range, TextDocumentContentChangeEvent};

    fn uri(name: &str) -> Uri {
        format!("file:///w/{name}").parse().expect("uri")
    }

    fn open(docs: &mut Documents, name: &str, text: &str) -> Uri {
        let u = uri(name);
        docs.open(
            u.clone(),
            Document::new(text.into(), "python".into(), 1, format!("/w/{name}")),
        );
        u
    }

    const BILLING: &str = "\
import math


def compute_invoice_total(items, tax_rate):
    subtotal = sum(i.price for i in items)
    return subtotal * (1 + tax_rate)


def unrelated():
    return 42
";

    #[test]
    fn identifiers_nearest_first_without_the_partial_word() {
        let mut docs = Documents::default();
        let u = open(
            &mut docs,
            "main.py",
            "from billing import compute_invoice_total\n\ninvoice = load()\ntotal = compute_inv",
        );
        let doc = docs.get(&u).expect("doc");
        let ids = identifiers_near(doc, Position::new(3, 19));
        assert_eq!(
            ids,
            [
                "total",
                "load",
                "invoice",
                "compute_invoice_total",
                "billing"
            ]
        );
    }

    #[test]
    fn finds_definitions_and_mentions_in_other_documents() {
        let mut docs = Documents::default();
        open(&mut docs, "billing.py", BILLING);
        open(
            &mut docs,
            "report.py",
            "def report(invoices, tax_rate):\n    return [compute_invoice_total(i, tax_rate) for i in invoices]\n",
        );
        let u = open(
            &mut docs,
            "main.py",
            "from billing import compute_invoice_total\n\nx = compute_invoice_total(items, tax_rate)\ny = ",
        );
        let ctx = gather(&docs, &u, Position::new(3, 4));
        assert_eq!(ctx.declarations.len(), 1, "{ctx:#?}");
        let decl = &ctx.declarations[0];
        assert_eq!(decl.filepath, "/w/billing.py");
        assert_eq!(
            decl.body,
            "def compute_invoice_total(items, tax_rate):\n    subtotal = sum(i.price for i in items)\n    return subtotal * (1 + tax_rate)"
        );
        assert!(!decl.body.contains("unrelated"));
        assert!(
            ctx.snippets.iter().any(|s| s.filepath == "/w/report.py"
                && s.body.contains("compute_invoice_total(i, tax_rate)")),
            "{ctx:#?}"
        );
        assert!(ctx.snippets.iter().all(|s| s.score > 0.0 && s.score <= 1.0));
        // The current document itself is never a source of identifier snippets.
        assert!(ctx.snippets.iter().all(|s| s.filepath != "/w/main.py"));
        // Deterministic.
        assert_eq!(ctx, gather(&docs, &u, Position::new(3, 4)));
    }

    #[test]
    fn recent_edits_of_other_documents_come_along() {
        let mut docs = Documents::default();
        let notes = open(&mut docs, "notes.py", "a = 1\nb = 2\nc = 3\n");
        let u = open(&mut docs, "main.py", "print(1)\n");
        docs.change(
            &notes,
            2,
            &[TextDocumentContentChangeEvent {
                range: Some(Range::new(Position::new(1, 4), Position::new(1, 5))),
                range_length: None,
                text: "fresh_value(7)".into(),
            }],
        );
        let ctx = gather(&docs, &u, Position::new(1, 0));
        assert_eq!(ctx.declarations, []);
        assert_eq!(ctx.snippets.len(), 1, "{ctx:#?}");
        assert_eq!(ctx.snippets[0].body, "b = fresh_value(7)");
        assert_eq!(ctx.snippets[0].filepath, "/w/notes.py");
    }

    #[test]
    fn unknown_documents_and_empty_files_give_nothing() {
        let mut docs = Documents::default();
        assert_eq!(
            gather(&docs, &uri("x.py"), Position::new(0, 0)),
            Context::default()
        );
        let u = open(&mut docs, "empty.py", "");
        open(&mut docs, "other.py", "");
        assert_eq!(gather(&docs, &u, Position::new(9, 9)), Context::default());
    }

    #[test]
    fn the_budget_bounds_what_is_sent() {
        let mut docs = Documents::default();
        let long_body = "    step_value = step_value + 1\n".repeat(200);
        open(
            &mut docs,
            "big.py",
            &format!("def step_value():\n{long_body}"),
        );
        for i in 0..10 {
            open(
                &mut docs,
                &format!("m{i}.py"),
                &"print(step_value)\n".repeat(50),
            );
        }
        let u = open(&mut docs, "main.py", "step_value()\nx = ");
        let ctx = gather(&docs, &u, Position::new(1, 4));
        let total: usize = ctx
            .declarations
            .iter()
            .chain(&ctx.snippets)
            .map(|s| s.body.len())
            .sum();
        assert!(total <= MAX_CHARS);
        assert!(ctx.declarations.len() <= MAX_DECLARATIONS);
        assert!(ctx.snippets.len() <= MAX_SNIPPETS + MAX_EDIT_SNIPPETS);
        assert_eq!(
            ctx.declarations[0].body.lines().count(),
            DECLARATION_LINES as usize
        );
    }
}

//! What a change should not leave behind: merge-conflict markers (`merge-conflict`),
//! debug output (`debug-output`) and TODO/FIXME comments (`todo`).

use std::sync::OnceLock;

use indexer::Language;
use regex::Regex;

use super::{Hit, Kind, is_comment, re};
use crate::{Category, Severity};

/// `merge-conflict`.
const MERGE_CONFLICT: Kind = Kind::new("merge-conflict", Severity::Error, Category::Bug, 0.99);
/// `todo`.
const TODO: Kind = Kind::new("todo", Severity::Info, Category::Maintainability, 0.9);

/// Conflict markers (any file type); `=======` only counts when the file also gains a
/// `<<<<<<<` or `>>>>>>>` marker.
pub(super) fn conflict_markers(added: &[(u32, &str)]) -> Vec<Hit> {
    let has_conflict = added
        .iter()
        .any(|(_, t)| regex!(r"^(?:<{7}|>{7})(?: |$)").is_match(t));
    added
        .iter()
        .filter(|(_, t)| {
            regex!(r"^(?:<{7}|>{7}|\|{7})(?: |$)").is_match(t)
                || (has_conflict && regex!(r"^={7}$").is_match(t))
        })
        .map(|&(n, t)| {
            let message = "Merge-conflict marker added: resolve the conflict before merging.";
            Hit::new(MERGE_CONFLICT, n, t, message)
        })
        .collect()
}

/// Leftover debugger calls and debug prints in code (comments are skipped).
pub(super) fn debug_output(added: &[(u32, &str)], lang: Option<Language>) -> Vec<Hit> {
    let patterns: Vec<&DebugPattern> = debug_patterns()
        .iter()
        .filter(|p| lang.is_some_and(|l| p.languages.contains(&l)))
        .collect();
    added
        .iter()
        .filter(|(_, t)| !is_comment(t, lang))
        .filter_map(|&(n, t)| {
            let p = patterns.iter().find(|p| p.pattern.is_match(t))?;
            let kind = Kind::new("debug-output", p.severity, p.category, 0.8);
            let message = format!(
                "Leftover debug output: {}. Remove it or use the project's logger.",
                p.what
            );
            Some(Hit::new(kind, n, t, message))
        })
        .collect()
}

/// TODO / FIXME / HACK / XXX in a comment.
pub(super) fn todos(added: &[(u32, &str)]) -> Vec<Hit> {
    added
        .iter()
        .filter_map(|&(n, t)| {
            let c = regex!(r"(?:#|//|/\*|^\s*\*|<!--|--|;)\s*.*?\b(TODO|FIXME|HACK|XXX)\b")
                .captures(t)?;
            let word = c.get(1).map(|m| m.as_str()).unwrap_or("TODO");
            let message =
                format!("{word} added: track it in an issue or resolve it before merging.");
            Some(Hit::new(TODO, n, t, message))
        })
        .collect()
}

/// A debug-output pattern of some languages.
struct DebugPattern {
    /// The languages it applies to.
    languages: &'static [Language],
    /// What an added line matches.
    pattern: Regex,
    /// How serious.
    severity: Severity,
    /// What about.
    category: Category,
    /// What it found, for the message.
    what: &'static str,
}

/// The debug-output patterns, compiled once; for each language they are tried in
/// this order and the first match counts.
fn debug_patterns() -> &'static [DebugPattern] {
    static CELL: OnceLock<Vec<DebugPattern>> = OnceLock::new();
    CELL.get_or_init(|| {
        DEBUG_PATTERNS
            .iter()
            .map(
                |&(languages, pattern, severity, category, what)| DebugPattern {
                    languages,
                    pattern: re(pattern),
                    severity,
                    category,
                    what,
                },
            )
            .collect()
    })
}

/// Languages of the JavaScript family.
const JS: &[Language] = &[Language::JavaScript, Language::TypeScript, Language::Tsx];

/// A debug-output pattern as written: (languages, pattern, severity, category, what).
type PatternSpec = (
    &'static [Language],
    &'static str,
    Severity,
    Category,
    &'static str,
);

/// Every debug-output pattern.
const DEBUG_PATTERNS: &[PatternSpec] = {
    use Category::{Bug, Maintainability};
    use Language::{Bash, C, Cpp, Go, Java, Python, Ruby, Rust};
    use Severity::{Info, Warning};
    &[
        (
            &[Python],
            r"^\s*(?:breakpoint\(\)|(?:i?pdb|pudb)\.set_trace\(\)|import i?pdb\b|from i?pdb import)",
            Warning,
            Bug,
            "a debugger breakpoint",
        ),
        (
            &[Python],
            r#"^\s*print\(\s*(?:f?["'](?i:debug|here|xxx|>>>|!!!|\*\*\*|-->)|f["'][^"']*=\}|[A-Za-z_][A-Za-z0-9_.]*\s*\)\s*$)"#,
            Info,
            Maintainability,
            "a debug print",
        ),
        (
            JS,
            r"^\s*debugger\s*;?\s*$",
            Warning,
            Bug,
            "a `debugger` statement",
        ),
        (
            JS,
            r"\bconsole\.(?:log|debug|trace|dir)\(",
            Warning,
            Maintainability,
            "a `console` debug call",
        ),
        (
            &[Rust],
            r"\bdbg!\(",
            Warning,
            Maintainability,
            "a `dbg!` call",
        ),
        (
            &[Rust],
            r#"\b(?:e?println|eprint|print)!\(\s*"(?:(?i:debug|here|xxx)|\{:\?\}"\s*,)"#,
            Info,
            Maintainability,
            "a debug print",
        ),
        (
            &[Go],
            r"\bspew\.(?:Dump|Printf)\(",
            Warning,
            Maintainability,
            "a `spew` dump",
        ),
        (
            &[Go],
            r#"\bfmt\.Print(?:ln|f)?\(\s*"(?i:debug|here|xxx)"#,
            Info,
            Maintainability,
            "a debug print",
        ),
        (
            &[Java],
            r"\.printStackTrace\(\s*\)",
            Info,
            Maintainability,
            "`printStackTrace()`",
        ),
        (
            &[Java],
            r"\bSystem\.(?:out|err)\.print(?:ln|f)?\(",
            Info,
            Maintainability,
            "a `System.out` print",
        ),
        (
            &[Ruby],
            r"\b(?:binding\.(?:pry|irb)|byebug)\b",
            Warning,
            Bug,
            "a debugger breakpoint",
        ),
        (
            &[Ruby],
            r#"^\s*(?:puts|p)\s+["']?(?i:debug|here)"#,
            Info,
            Maintainability,
            "a debug print",
        ),
        (
            &[C, Cpp],
            r#"\bf?printf\((?:\s*stderr\s*,)?\s*"(?i:debug|here|xxx)"#,
            Info,
            Maintainability,
            "a debug print",
        ),
        (
            &[Bash],
            r"^\s*set\s+-x\s*$",
            Info,
            Maintainability,
            "`set -x` tracing",
        ),
    ]
};

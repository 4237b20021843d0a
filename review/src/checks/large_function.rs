//! Very large new functions (`large-function`).

use indexer::SymbolKind;

use super::{Added, Hit, Kind};
use crate::context::FileView;
use crate::{Category, Severity};

/// `large-function`.
const LARGE_FUNCTION: Kind = Kind::new(
    "large-function",
    Severity::Warning,
    Category::Maintainability,
    0.9,
);

/// Functions and methods longer than `limit` lines that the change adds: their first
/// line is added, and so are at least four fifths of their lines.
pub(super) fn large_functions(view: &FileView<'_>, added: &Added<'_>, limit: u32) -> Vec<Hit> {
    let mut hits = Vec::new();
    for s in &view.symbols {
        if !matches!(s.kind, SymbolKind::Function | SymbolKind::Method) {
            continue;
        }
        let len = s.end_line.saturating_sub(s.start_line) + 1;
        let new_lines = (s.start_line..=s.end_line)
            .filter(|k| added.numbers.contains(k))
            .count() as u32;
        if len > limit && added.numbers.contains(&s.start_line) && new_lines * 5 >= len * 4 {
            let quote = added
                .lines
                .iter()
                .find(|(k, _)| *k == s.start_line)
                .map(|(_, t)| *t)
                .unwrap_or("");
            let message = format!(
                "New {} `{}` has {len} lines (limit {limit}): split it into smaller functions.",
                s.kind.name(),
                s.name
            );
            hits.push(Hit::new(LARGE_FUNCTION, s.start_line, quote, message));
        }
    }
    hits
}

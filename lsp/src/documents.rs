//! The open documents, kept in sync with the editor through incremental edits.
//!
//! LSP positions are (line, UTF-16 code unit) pairs; lines end at `\n`, `\r\n` or `\r`.
//! Every conversion here clamps: a line past the end means the end of the document, a
//! character past the end of a line means the end of that line, and a character inside a
//! surrogate pair means the start of that character. No position a client sends can make
//! the adapter panic or cut a UTF-8 sequence.

use std::collections::{HashMap, VecDeque};

use tower_lsp_server::ls_types::{Position, Range, TextDocumentContentChangeEvent, Uri};

/// How many recently edited spans a document remembers.
const RECENT_EDITS: usize = 8;

/// A span of lines, `start..end` (end exclusive), that was edited recently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineSpan {
    /// First edited line.
    pub start: u32,
    /// One past the last edited line.
    pub end: u32,
}

/// One open document.
#[derive(Debug, Clone)]
pub struct Document {
    /// The client's language id (`python`, `rust`, ...).
    pub language_id: String,
    /// The client's version number of the text.
    pub version: i32,
    /// Absolute file path (from a `file:` URI), else the URI itself.
    pub filepath: String,
    /// The `origin` remote of the repository holding the file, if any.
    pub git_url: Option<String>,
    /// When it was last edited, in edits counted across all documents (0: never).
    pub last_edited: u64,
    text: String,
    /// Byte offset where each line starts; never empty (line 0 starts at 0).
    line_starts: Vec<usize>,
    /// Most recent last; line numbers follow later edits.
    recent_edits: VecDeque<LineSpan>,
}

impl Document {
    /// A document with `text` as opened by the client.
    pub fn new(text: String, language_id: String, version: i32, filepath: String) -> Self {
        let line_starts = line_starts(&text);
        Self {
            language_id,
            version,
            filepath,
            git_url: None,
            last_edited: 0,
            text,
            line_starts,
            recent_edits: VecDeque::new(),
        }
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Number of lines (a text ending in a line break has an empty last line).
    pub fn line_count(&self) -> u32 {
        u32::try_from(self.line_starts.len()).unwrap_or(u32::MAX)
    }

    /// Recently edited line spans, most recent last.
    pub fn recent_edits(&self) -> impl Iterator<Item = LineSpan> + '_ {
        self.recent_edits.iter().copied()
    }

    /// The byte offset of an LSP position (clamped, always a char boundary).
    pub fn offset_at(&self, position: Position) -> usize {
        let line = position.line as usize;
        let Some(&start) = self.line_starts.get(line) else {
            return self.text.len();
        };
        let end = self.content_end(line);
        let mut units = 0u32;
        for (i, ch) in self.text[start..end].char_indices() {
            let width = ch.len_utf16() as u32;
            if position.character < units + width {
                return start + i;
            }
            units += width;
        }
        end
    }

    /// The LSP position of a byte offset (clamped to the text; rounds down to a char).
    pub fn position_at(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let end = self.content_end(line).max(start);
        let upto = offset.min(end);
        let character = self.text[start..upto]
            .chars()
            .map(|c| c.len_utf16() as u32)
            .sum();
        Position::new(u32::try_from(line).unwrap_or(u32::MAX), character)
    }

    /// The text of lines `start..end` (end exclusive, clamped), line breaks included.
    pub fn lines(&self, start: u32, end: u32) -> &str {
        let count = self.line_starts.len();
        let from = (start as usize).min(count);
        let to = (end as usize).clamp(from, count);
        let a = self
            .line_starts
            .get(from)
            .copied()
            .unwrap_or(self.text.len());
        let b = self.line_starts.get(to).copied().unwrap_or(self.text.len());
        &self.text[a..b]
    }

    /// Applies one change event: a range replacement, or the whole text when it has no range.
    pub fn apply_change(&mut self, change: &TextDocumentContentChangeEvent) {
        let Some(range) = change.range else {
            self.text = change.text.clone();
            self.line_starts = line_starts(&self.text);
            self.recent_edits.clear();
            return;
        };
        let (a, b) = (self.offset_at(range.start), self.offset_at(range.end));
        let (start, end) = (a.min(b), a.max(b));
        let first_line = self.position_at(start).line;
        let removed_lines = self.position_at(end).line - first_line;
        self.text.replace_range(start..end, &change.text);
        self.line_starts = line_starts(&self.text);
        let added_lines = u32::try_from(line_starts(&change.text).len() - 1).unwrap_or(u32::MAX);
        self.note_edit(first_line, removed_lines, added_lines);
    }

    /// Records that lines `first..=first+removed` became `first..=first+added`.
    fn note_edit(&mut self, first: u32, removed: u32, added: u32) {
        let old_end = first.saturating_add(removed).saturating_add(1);
        for span in &mut self.recent_edits {
            if span.start >= old_end {
                span.start = span.start.saturating_sub(removed).saturating_add(added);
                span.end = span.end.saturating_sub(removed).saturating_add(added);
            } else if span.end > first {
                // Overlaps the edited lines: keep it within what is left of them.
                span.start = span.start.min(first);
                span.end = span
                    .end
                    .max(first + 1)
                    .min(first.saturating_add(added).saturating_add(1))
                    .max(span.start + 1);
            }
        }
        let new = LineSpan {
            start: first,
            end: first.saturating_add(added).saturating_add(1),
        };
        // A span touching the new one merges into it.
        let mut merged = new;
        self.recent_edits.retain(|s| {
            let touches = s.end >= merged.start && s.start <= merged.end;
            if touches {
                merged.start = merged.start.min(s.start);
                merged.end = merged.end.max(s.end);
            }
            !touches
        });
        self.recent_edits.push_back(merged);
        while self.recent_edits.len() > RECENT_EDITS {
            self.recent_edits.pop_front();
        }
    }

    /// Byte offset where the content of `line` ends (before its line break).
    fn content_end(&self, line: usize) -> usize {
        let Some(&next) = self.line_starts.get(line + 1) else {
            return self.text.len();
        };
        let bytes = self.text.as_bytes();
        if next >= 2 && bytes[next - 2] == b'\r' && bytes[next - 1] == b'\n' {
            next - 2
        } else {
            next - 1
        }
    }

    /// The prefix (text before `position`) and suffix (text after it).
    pub fn split_at(&self, position: Position) -> (&str, &str) {
        self.text.split_at(self.offset_at(position))
    }

    /// The range from `position` back over the identifier characters before it (the word
    /// being typed), and that word. Stays on `position`'s line.
    pub fn word_before(&self, position: Position) -> (Range, &str) {
        let offset = self.offset_at(position);
        let line = self.position_at(offset).line;
        let line_start = self.line_starts[line as usize];
        let before = &self.text[line_start..offset];
        let word_start = before
            .char_indices()
            .rev()
            .take_while(|(_, c)| is_identifier_char(*c))
            .last()
            .map_or(offset, |(i, _)| line_start + i);
        let range = Range::new(self.position_at(word_start), self.position_at(offset));
        (range, &self.text[word_start..offset])
    }
}

/// Letters, digits, `_` and `$`: what editors treat as part of a word.
pub fn is_identifier_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

/// Byte offsets where lines start: 0, and after every `\n`, `\r\n` and lone `\r`.
fn line_starts(text: &str) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b'\n' => starts.push(i + 1),
            b'\r' if bytes.get(i + 1) != Some(&b'\n') => starts.push(i + 1),
            _ => {}
        }
    }
    starts
}

/// The open documents by URI.
#[derive(Debug, Default)]
pub struct Documents {
    docs: HashMap<Uri, Document>,
    edits: u64,
}

impl Documents {
    /// Starts tracking (or replaces) a document.
    pub fn open(&mut self, uri: Uri, document: Document) {
        self.docs.insert(uri, document);
    }

    /// Applies `didChange` events in order; unknown documents are ignored.
    pub fn change(&mut self, uri: &Uri, version: i32, changes: &[TextDocumentContentChangeEvent]) {
        if let Some(doc) = self.docs.get_mut(uri) {
            for change in changes {
                doc.apply_change(change);
            }
            doc.version = version;
            self.edits += 1;
            doc.last_edited = self.edits;
        }
    }

    /// Stops tracking a document.
    pub fn close(&mut self, uri: &Uri) {
        self.docs.remove(uri);
    }

    /// The document at `uri`.
    pub fn get(&self, uri: &Uri) -> Option<&Document> {
        self.docs.get(uri)
    }

    /// Every open document.
    pub fn iter(&self) -> impl Iterator<Item = (&Uri, &Document)> {
        self.docs.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> Document {
        Document::new(text.into(), "python".into(), 1, "/t.py".into())
    }

    fn edit(doc: &mut Document, (l1, c1): (u32, u32), (l2, c2): (u32, u32), text: &str) {
        doc.apply_change(&TextDocumentContentChangeEvent {
            range: Some(Range::new(Position::new(l1, c1), Position::new(l2, c2))),
            range_length: None,
            text: text.into(),
        });
    }

    #[test]
    fn utf16_positions_count_surrogate_pairs_as_two() {
        // 'é' is 1 UTF-16 unit (2 bytes), '😀' is 2 units (4 bytes), '中' 1 unit (3 bytes).
        let d = doc("é😀中x\nnext");
        assert_eq!(d.offset_at(Position::new(0, 0)), 0);
        assert_eq!(d.offset_at(Position::new(0, 1)), 2);
        assert_eq!(
            d.offset_at(Position::new(0, 2)),
            2,
            "inside the pair: before it"
        );
        assert_eq!(d.offset_at(Position::new(0, 3)), 6);
        assert_eq!(d.offset_at(Position::new(0, 4)), 9);
        assert_eq!(d.offset_at(Position::new(0, 5)), 10, "end of line");
        assert_eq!(d.offset_at(Position::new(0, 99)), 10, "clamped to the line");
        assert_eq!(d.offset_at(Position::new(1, 2)), 13);
        assert_eq!(d.offset_at(Position::new(7, 0)), d.text().len());
        assert_eq!(d.position_at(6), Position::new(0, 3));
        assert_eq!(
            d.position_at(7),
            Position::new(0, 3),
            "mid-char rounds down"
        );
        assert_eq!(d.position_at(13), Position::new(1, 2));
    }

    #[test]
    fn incremental_edits_with_astral_characters() {
        let mut d = doc("let s = \"😀😀\";\nprint(s)\n");
        // Replace the second emoji (UTF-16 columns 11..13) with "ab".
        edit(&mut d, (0, 11), (0, 13), "ab");
        assert_eq!(d.text(), "let s = \"😀ab\";\nprint(s)\n");
        // Insert at the end of line 0 (character far past the end is clamped).
        edit(&mut d, (0, 500), (0, 500), " // x");
        assert_eq!(d.text(), "let s = \"😀ab\"; // x\nprint(s)\n");
        // Delete across the line break.
        edit(&mut d, (0, 15), (1, 0), "");
        assert_eq!(d.text(), "let s = \"😀ab\";print(s)\n");
        // Insert a multi-line text.
        edit(&mut d, (1, 0), (1, 0), "a\nb\n");
        assert_eq!(d.text(), "let s = \"😀ab\";print(s)\na\nb\n");
        assert_eq!(d.line_count(), 4);
    }

    #[test]
    fn crlf_and_lone_cr_end_lines() {
        let mut d = doc("ab\r\ncd\ref\n");
        assert_eq!(d.line_count(), 4);
        assert_eq!(d.offset_at(Position::new(0, 9)), 2, "before \\r\\n");
        assert_eq!(d.offset_at(Position::new(1, 2)), 6);
        assert_eq!(d.offset_at(Position::new(2, 1)), 8);
        edit(&mut d, (1, 1), (2, 1), "X");
        assert_eq!(d.text(), "ab\r\ncXf\n");
        assert_eq!(d.lines(1, 2), "cXf\n");
        assert_eq!(d.lines(5, 9), "");
    }

    #[test]
    fn a_sequence_of_typed_characters_matches_the_expected_text() {
        let mut d = doc("def f():\n    \n");
        for (i, ch) in "return 1".chars().enumerate() {
            let col = 4 + i as u32;
            edit(&mut d, (1, col), (1, col), &ch.to_string());
        }
        assert_eq!(d.text(), "def f():\n    return 1\n");
        let (prefix, suffix) = d.split_at(Position::new(1, 12));
        assert_eq!(prefix, "def f():\n    return 1");
        assert_eq!(suffix, "\n");
    }

    #[test]
    fn reversed_or_out_of_range_edits_do_not_panic() {
        let mut d = doc("abc\n");
        edit(&mut d, (0, 3), (0, 1), "Z");
        assert_eq!(d.text(), "aZ\n");
        edit(&mut d, (40, 2), (90, 0), "tail");
        assert_eq!(d.text(), "aZ\ntail");
        d.apply_change(&TextDocumentContentChangeEvent {
            range: None,
            range_length: None,
            text: "fresh".into(),
        });
        assert_eq!(d.text(), "fresh");
        assert_eq!(d.recent_edits().count(), 0);
    }

    #[test]
    fn recent_edits_follow_line_shifts_and_merge() {
        let mut d = doc("a\nb\nc\nd\ne\n");
        edit(&mut d, (3, 0), (3, 1), "D");
        assert_eq!(
            d.recent_edits().collect::<Vec<_>>(),
            [LineSpan { start: 3, end: 4 }]
        );
        // Two lines inserted above shift the earlier span down.
        edit(&mut d, (0, 0), (0, 0), "x\ny\n");
        let spans: Vec<_> = d.recent_edits().collect();
        assert_eq!(
            spans,
            [LineSpan { start: 5, end: 6 }, LineSpan { start: 0, end: 3 }]
        );
        // Typing on the same line again merges.
        edit(&mut d, (5, 1), (5, 1), "!");
        assert_eq!(d.recent_edits().count(), 2);
        assert_eq!(d.lines(5, 6), "D!\n");
    }

    #[test]
    fn word_before_the_cursor() {
        let d = doc("x = compute_to\n");
        let (range, word) = d.word_before(Position::new(0, 14));
        assert_eq!(word, "compute_to");
        assert_eq!(range, Range::new(Position::new(0, 4), Position::new(0, 14)));
        let (range, word) = d.word_before(Position::new(0, 3));
        assert_eq!(word, "");
        assert_eq!(range.start, range.end);
        let (_, word) = d.word_before(Position::new(1, 0));
        assert_eq!(word, "");
    }
}

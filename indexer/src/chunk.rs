//! Splitting a file into chunks: syntax-aware line ranges for parsed files,
//! line windows for everything else. Chunks are bounded in lines and bytes.

use serde::{Deserialize, Serialize};

/// Bounds for chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkConfig {
    /// A chunk never spans more lines than this (except a single over-long line).
    pub max_lines: usize,
    /// A chunk's text never exceeds this many bytes unless it is one line
    /// (and then it is cut at twice this size).
    pub max_bytes: usize,
    /// Adjacent small syntax units are merged while the result has at most this many lines.
    pub merge_lines: usize,
    /// Chunks shorter than this are merged into the previous one when bounds allow.
    pub min_lines: usize,
    /// Window size in lines for files without a grammar.
    pub text_window_lines: usize,
}

impl Default for ChunkConfig {
    fn default() -> Self {
        ChunkConfig {
            max_lines: 60,
            max_bytes: 3000,
            merge_lines: 30,
            min_lines: 4,
            text_window_lines: 40,
        }
    }
}

/// Byte offsets of line starts, for line/byte arithmetic on one file.
#[derive(Debug)]
pub(crate) struct LineIndex {
    /// `starts[i]` is the byte offset where line `i` (0-based) begins;
    /// the last element is the text length (a sentinel).
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> LineIndex {
        let mut starts = Vec::with_capacity(text.len() / 32 + 2);
        starts.push(0);
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' && i + 1 < text.len() {
                starts.push(i + 1);
            }
        }
        starts.push(text.len());
        LineIndex { starts }
    }

    /// Number of lines (a final line without newline counts; empty text has 0 lines).
    pub(crate) fn line_count(&self) -> usize {
        if self.starts.last().copied().unwrap_or(0) == 0 {
            0
        } else {
            self.starts.len() - 1
        }
    }

    /// Byte range of lines `first..=last` (0-based, clamped).
    pub(crate) fn byte_range(&self, first: usize, last: usize) -> (usize, usize) {
        let n = self.starts.len() - 1;
        let first = first.min(n);
        let last = (last + 1).min(n);
        (self.starts[first], self.starts[last.max(first)])
    }

    /// Bytes of lines `first..=last`.
    pub(crate) fn bytes(&self, first: usize, last: usize) -> usize {
        let (a, b) = self.byte_range(first, last);
        b - a
    }

    /// Text of lines `first..=last`, without the final newline, cut at `cap` bytes.
    pub(crate) fn text<'a>(&self, text: &'a str, first: usize, last: usize, cap: usize) -> &'a str {
        let (a, b) = self.byte_range(first, last);
        let slice = text.get(a..b).unwrap_or("");
        let slice = slice.strip_suffix('\n').unwrap_or(slice);
        truncate_at_char(slice, cap)
    }
}

/// Cuts `s` to at most `cap` bytes at a character boundary.
pub(crate) fn truncate_at_char(s: &str, cap: usize) -> &str {
    if s.len() <= cap {
        return s;
    }
    let mut end = cap;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Merges sorted syntax units (inclusive 0-based row ranges) into chunks.
pub(crate) fn merge_units(
    mut units: Vec<(usize, usize)>,
    lines: &LineIndex,
    cfg: &ChunkConfig,
) -> Vec<(usize, usize)> {
    units.sort_unstable();
    let mut chunks: Vec<(usize, usize)> = Vec::new();
    let mut cur: Option<(usize, usize)> = None;
    for (s, e) in units {
        cur = match cur {
            None => Some((s, e)),
            Some((cs, ce)) => {
                if e <= ce {
                    Some((cs, ce))
                } else if e - cs < cfg.merge_lines && lines.bytes(cs, e) <= cfg.max_bytes {
                    Some((cs, e))
                } else {
                    chunks.push((cs, ce));
                    Some((s.max(ce + 1), e))
                }
            }
        };
    }
    if let Some(c) = cur {
        chunks.push(c);
    }
    // Fold tiny chunks (a closing brace, a lone import) into their predecessor.
    let mut out: Vec<(usize, usize)> = Vec::with_capacity(chunks.len());
    for (s, e) in chunks {
        if let Some(prev) = out.last_mut() {
            let small = e - s + 1 < cfg.min_lines;
            if small && e - prev.0 < cfg.max_lines && lines.bytes(prev.0, e) <= cfg.max_bytes {
                prev.1 = e;
                continue;
            }
        }
        out.push((s, e));
    }
    out
}

/// Line windows over lines `first..=last`, bounded by `window` lines and `max_bytes`.
pub(crate) fn line_windows(
    first: usize,
    last: usize,
    window: usize,
    lines: &LineIndex,
    max_bytes: usize,
    out: &mut Vec<(usize, usize)>,
) {
    let window = window.max(1);
    let mut s = first;
    while s <= last {
        let mut e = s;
        while e < last && e + 1 - s < window && lines.bytes(s, e + 1) <= max_bytes {
            e += 1;
        }
        out.push((s, e));
        s = e + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_and_slices() {
        let text = "a\nbb\nccc";
        let li = LineIndex::new(text);
        assert_eq!(li.line_count(), 3);
        assert_eq!(li.text(text, 1, 2, 100), "bb\nccc");
        assert_eq!(li.text(text, 0, 0, 100), "a");
        assert_eq!(LineIndex::new("").line_count(), 0);
        assert_eq!(LineIndex::new("x\n").line_count(), 1);
    }

    #[test]
    fn windows_respect_bounds() {
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let li = LineIndex::new(&text);
        let mut out = Vec::new();
        line_windows(0, 99, 40, &li, 10_000, &mut out);
        assert_eq!(out, vec![(0, 39), (40, 79), (80, 99)]);
        out.clear();
        line_windows(0, 99, 40, &li, 50, &mut out);
        assert!(out.iter().all(|&(s, e)| li.bytes(s, e) <= 50 || s == e));
        assert_eq!(out.first().map(|c| c.0), Some(0));
        assert_eq!(out.last().map(|c| c.1), Some(99));
    }

    #[test]
    fn merge_joins_small_units_and_splits_large() {
        let text: String = (0..200).map(|i| format!("l{i}\n")).collect();
        let li = LineIndex::new(&text);
        let cfg = ChunkConfig::default();
        let units = vec![(0, 4), (5, 9), (10, 50), (51, 52), (60, 119)];
        let chunks = merge_units(units, &li, &cfg);
        assert_eq!(chunks, vec![(0, 9), (10, 52), (60, 119)]);
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate_at_char("héllo", 2), "h");
        assert_eq!(truncate_at_char("abc", 10), "abc");
    }
}

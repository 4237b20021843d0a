//! Turns raw model output into what an editor should show as ghost text.

/// Whether the completion should fill the rest of the line or whole lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The cursor is inside a line: complete up to its end.
    SingleLine,
    /// The cursor ends a line (or sits on an empty one): complete a block.
    MultiLine,
}

/// Chooses the mode from the text around the cursor.
pub fn mode(prefix: &str, suffix: &str) -> Mode {
    let rest_of_line = suffix.split('\n').next().unwrap_or("");
    // Only closing brackets and quotes after the cursor still allow a block.
    let only_closers = rest_of_line
        .trim()
        .chars()
        .all(|c| matches!(c, ')' | ']' | '}' | '"' | '\'' | '`' | ';' | ','));
    if !only_closers {
        return Mode::SingleLine;
    }
    let line = prefix.rsplit('\n').next().unwrap_or("");
    let trimmed = line.trim_end();
    if trimmed.trim().is_empty()
        || trimmed.ends_with(['{', '(', '['])
        || (trimmed.ends_with(':') && !trimmed.ends_with("::"))
        || trimmed.ends_with("=>")
        || trimmed.ends_with(" do")
        || trimmed.ends_with(" then")
    {
        Mode::MultiLine
    } else {
        Mode::SingleLine
    }
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// Cleans up `raw`; `None` means nothing worth showing.
pub fn finish(
    raw: &str,
    prefix: &str,
    suffix: &str,
    mode: Mode,
    max_lines: usize,
) -> Option<String> {
    let raw = normalise_indent(raw, prefix);
    let mut text = match mode {
        Mode::SingleLine => raw.split('\n').next().unwrap_or("").to_string(),
        Mode::MultiLine => cut_block(&raw, prefix, suffix, max_lines),
    };
    text = trim_suffix_overlap(&text, suffix);
    let text = text.trim_end().to_string();
    if text.trim().is_empty() {
        return None;
    }
    // A completion that only repeats what follows the cursor adds nothing.
    let next = suffix.trim_start();
    if !next.is_empty() && next.starts_with(text.trim()) {
        return None;
    }
    Some(text)
}

/// Whether a generation that produced `raw` so far can stop: [`finish`] already cuts
/// text that more tokens could not bring back — a single-line completion has reached
/// the line's end; a block has a line (with text, so its indentation is final) below
/// the cursor's block, closes a bracket opened before the cursor, or passes
/// `max_lines`. Checked after every token, so a block ends where it ends, not at the
/// token limit.
pub fn would_cut(raw: &str, prefix: &str, suffix: &str, mode: Mode, max_lines: usize) -> bool {
    match mode {
        Mode::SingleLine => raw.contains('\n'),
        Mode::MultiLine => {
            let Some(last_nl) = raw.rfind('\n') else {
                return false;
            };
            // A last line of whitespace alone may still be indented further.
            let decided = if raw[last_nl + 1..].trim().is_empty() {
                &raw[..last_nl]
            } else {
                raw
            };
            let text = normalise_indent(decided, prefix);
            cut_block(&text, prefix, suffix, max_lines).trim_end().len() < text.trim_end().len()
        }
    }
}

/// The spaces and tabs a line starts with.
fn leading_ws(line: &str) -> &str {
    let n = line.len() - line.trim_start_matches([' ', '\t']).len();
    &line[..n]
}

/// Whether a line continues a block comment (` * …` in C, Java, JavaScript, Go, Rust docs),
/// whose one-space alignment says nothing about the block's indentation unit.
fn is_comment_continuation(line: &str) -> bool {
    line.trim_start().starts_with('*')
}

/// What the text before the cursor says about indentation: the indentation unit and the
/// indentation strings a line may start with.
struct Indentation<'a> {
    /// Whether the block is indented with tabs (one tab a level) rather than spaces.
    tabs: bool,
    /// Spaces per level when indented with spaces; `None` when the prefix does not show.
    unit: Option<usize>,
    /// The indentation of the nearest non-blank line above the cursor line, which a
    /// continuation (a comment's ` * `, an aligned argument) may repeat.
    above: Option<&'a str>,
}

impl<'a> Indentation<'a> {
    /// Reads the indentation of `lines` (the prefix's lines before the cursor line) and
    /// of `cursor_ws`, the whitespace left of the cursor.
    fn of(lines: &[&'a str], cursor_ws: &str) -> Self {
        let above = lines
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .map(|l| leading_ws(l));
        let tabs = if cursor_ws.is_empty() {
            lines
                .iter()
                .rev()
                .map(|l| leading_ws(l))
                .find(|ws| !ws.is_empty())
                .is_some_and(|ws| ws.starts_with('\t'))
        } else {
            cursor_ws.contains('\t')
        };
        // The indentation unit: the most frequent increase of indentation from one code line
        // to the next (ties go to the smaller), the cursor line counting as the last line.
        let mut counts: Vec<(usize, usize)> = Vec::new();
        let mut previous: Option<usize> = None;
        let widths = lines
            .iter()
            .filter(|l| !l.trim().is_empty() && !is_comment_continuation(l))
            .map(|l| leading_ws(l))
            .chain((!cursor_ws.is_empty()).then_some(cursor_ws));
        for ws in widths {
            if ws.contains('\t') {
                previous = None;
                continue;
            }
            let width = ws.len();
            if let Some(p) = previous.filter(|&p| width > p) {
                let delta = width - p;
                match counts.iter_mut().find(|(d, _)| *d == delta) {
                    Some((_, n)) => *n += 1,
                    None => counts.push((delta, 1)),
                }
            }
            previous = Some(width);
        }
        let unit = counts
            .iter()
            .max_by(|(d1, n1), (d2, n2)| n1.cmp(n2).then(d2.cmp(d1)))
            .map(|&(d, _)| d);
        Indentation { tabs, unit, above }
    }

    /// Whether a line may start with `ws`: whole levels of the block's unit, or the same
    /// indentation as the line above the cursor.
    fn fits(&self, ws: &str) -> bool {
        if self.above == Some(ws) {
            return true;
        }
        if self.tabs {
            ws.chars().all(|c| c == '\t')
        } else {
            ws.chars().all(|c| c == ' ') && self.unit.is_some_and(|u| ws.len().is_multiple_of(u))
        }
    }
}

/// Drops whitespace the model put at the start of a completion in excess of the block's
/// indentation, when the text left of the cursor is whitespace only.
///
/// After an editor has indented a new line (say four spaces), models often continue with a
/// token that starts with a space (` return`): accepted as is, the line ends up indented by
/// five. The first line's whitespace is shortened to the longest that gives whole levels of
/// the block's unit (or the line above's indentation); each later line that shows the same
/// excess loses it too, so that the block stays consistent with its first line. A cursor after
/// other text on its line keeps the completion's spaces: there they separate words.
fn normalise_indent(raw: &str, prefix: &str) -> String {
    let mut lines: Vec<&str> = prefix.split('\n').collect();
    let cursor_line = lines.pop().unwrap_or("");
    if !cursor_line.chars().all(|c| c == ' ' || c == '\t') {
        return raw.to_string();
    }
    let mut lines_out = raw.split('\n');
    let first = lines_out.next().unwrap_or("");
    let first_ws = leading_ws(first);
    if first_ws.is_empty() || first.trim().is_empty() || is_comment_continuation(first) {
        return raw.to_string();
    }
    let indentation = Indentation::of(&lines, cursor_line);
    if !indentation.tabs && indentation.unit.is_none() {
        // Nothing shows how deep a level is: the model's indentation may well be right.
        return raw.to_string();
    }
    let fits_at = |n: usize| indentation.fits(&format!("{cursor_line}{}", &first_ws[..n]));
    if fits_at(first_ws.len()) {
        return raw.to_string();
    }
    // `first_ws` holds only ASCII spaces and tabs, so every length is a character boundary.
    let Some(keep) = (0..first_ws.len()).rev().find(|&n| fits_at(n)) else {
        return raw.to_string();
    };
    let excess = &first_ws[keep..];
    let mut out = vec![format!("{}{}", &first_ws[..keep], &first[first_ws.len()..])];
    for line in lines_out {
        let ws = leading_ws(line);
        let kept = ws.strip_suffix(excess).filter(|kept| {
            !line.trim().is_empty()
                && !is_comment_continuation(line)
                && !indentation.fits(ws)
                && indentation.fits(kept)
        });
        out.push(match kept {
            Some(kept) => format!("{kept}{}", &line[ws.len()..]),
            None => line.to_string(),
        });
    }
    out.join("\n")
}

/// Keeps the lines of a multi-line completion that belong to the block at the cursor:
/// stops where the indentation drops below the cursor line's, where a bracket opened
/// before the cursor would be closed, or after `max_lines`.
fn cut_block(raw: &str, prefix: &str, suffix: &str, max_lines: usize) -> String {
    let cursor_line = prefix.rsplit('\n').next().unwrap_or("");
    let opener = cursor_line.trim_end().ends_with(['{', '(', '[', ':'])
        || cursor_line.trim_end().ends_with("=>");
    let base = if cursor_line.trim().is_empty() {
        cursor_line.len()
    } else {
        indent_of(cursor_line) + usize::from(opener)
    };
    let mut out: Vec<&str> = Vec::new();
    let mut depth: i64 = 0;
    let mut blank_run = 0;
    // Indentation of the completion's first line with text: after a blank line, a line
    // indented less than it starts something else (the next function, test code).
    let mut first_indent: Option<usize> = None;
    for (i, line) in raw.split('\n').enumerate() {
        if i >= max_lines {
            break;
        }
        if line.trim().is_empty() {
            blank_run += 1;
            if blank_run >= 2 {
                break;
            }
            out.push(line);
            continue;
        }
        let indent = if i > 0 {
            indent_of(line)
        } else if cursor_line.trim().is_empty() {
            cursor_line.len() + indent_of(line)
        } else {
            indent_of(cursor_line)
        };

        if blank_run > 0 && first_indent.is_some_and(|f| indent < f) {
            break;
        }
        blank_run = 0;
        if i > 0 && indent_of(line) < base {
            break;
        }
        first_indent.get_or_insert(indent);
        let mut cut_at = None;
        for (pos, c) in line.char_indices() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth < 0 {
                        // The suffix already closes it: stop before the closer. Else the
                        // closing line is the block's last.
                        cut_at = Some(if suffix.trim_start().starts_with(c) {
                            pos
                        } else {
                            line.len()
                        });
                        break;
                    }
                }
                _ => {}
            }
        }
        if let Some(pos) = cut_at {
            let kept = &line[..pos];
            if !kept.trim().is_empty() {
                out.push(kept);
            }
            break;
        }
        out.push(line);
    }
    while out.last().is_some_and(|l| l.trim().is_empty()) {
        out.pop();
    }
    out.join("\n")
}

/// Removes the end of `text` that the suffix's current line already starts with,
/// such as closing brackets and quotes the editor shows after the cursor. Closers
/// are removed only when the completion has more of them than it opened.
fn trim_suffix_overlap(text: &str, suffix: &str) -> String {
    let rest = suffix.split('\n').next().unwrap_or("").trim_end();
    if rest.is_empty() {
        return text.to_string();
    }
    let last_line_start = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let last = &text[last_line_start..];
    for k in (1..=rest.len().min(last.len())).rev() {
        if !rest.is_char_boundary(k) || !last.is_char_boundary(last.len() - k) {
            continue;
        }
        if last.ends_with(&rest[..k]) && removable(text, &rest[..k]) {
            return format!("{}{}", &text[..last_line_start], &last[..last.len() - k]);
        }
    }
    // Closing characters the suffix starts with, added by the completion in excess.
    let closers: Vec<char> = rest
        .trim_start()
        .chars()
        .take_while(|c| matches!(c, ')' | ']' | '}' | '"' | '\'' | '`'))
        .collect();
    let mut out = text.to_string();
    for c in closers {
        if out.ends_with(c) && removable(&out, &c.to_string()) {
            out.pop();
        } else {
            break;
        }
    }
    out
}

/// Whether dropping `tail` from the end of `text` removes only closers that `text`
/// has in excess (brackets it never opened, quotes left unpaired).
fn removable(text: &str, tail: &str) -> bool {
    let mut excess = 0i64;
    for c in text.chars() {
        match c {
            '(' | '[' | '{' => excess -= 1,
            ')' | ']' | '}' => excess += 1,
            _ => {}
        }
    }
    let closing = tail
        .chars()
        .filter(|c| matches!(c, ')' | ']' | '}'))
        .count() as i64;
    if closing > excess.max(0) {
        return false;
    }
    ['"', '\'', '`'].iter().all(|q| {
        let removed = tail.chars().filter(|c| c == q).count();
        removed == 0 || (text.chars().filter(|c| c == q).count() % 2 == 1 && removed == 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_stops_where_post_processing_cuts() {
        let prefix = "def f(x):\n    ";
        let block = Mode::MultiLine;
        // Still inside the block: go on.
        assert!(!would_cut("y = x + 1\n    return y", prefix, "", block, 20));
        // A new line that may still be indented: go on.
        assert!(!would_cut(
            "y = x + 1\n    return y\n",
            prefix,
            "",
            block,
            20
        ));
        assert!(!would_cut(
            "y = x + 1\n    return y\n  ",
            prefix,
            "",
            block,
            20
        ));
        // A line below the block's indentation: stop, and finish() keeps the block.
        let raw = "y = x + 1\n    return y\n\ndef test_f";
        assert!(would_cut(raw, prefix, "", block, 20));
        assert_eq!(
            finish(raw, prefix, "", block, 20).as_deref(),
            Some("y = x + 1\n    return y")
        );
        // A bracket opened before the cursor is closed: the closing line ends the block,
        // and a closer the suffix already holds is left out.
        assert!(would_cut("1,\n    2)\nx", "call(\n    ", "", block, 20));
        assert_eq!(
            finish("1,\n    2)\nx = 1", "call(\n    ", "", block, 20).as_deref(),
            Some("1,\n    2)")
        );
        assert_eq!(
            finish("1,\n    2)\nx = 1", "call(\n    ", "\n)", block, 20).as_deref(),
            Some("1,\n    2")
        );
        // Past max_lines.
        assert!(would_cut("a\n    b\n    c", prefix, "", block, 2));
        // At column 0 of an empty line: a blank line and a line indented less than the
        // block's first line end it.
        let raw = "    largest = 1\n    return largest\n\n# Check\ndef check():";
        assert!(would_cut(raw, "def f(n):\n", "", block, 20));
        assert_eq!(
            finish(raw, "def f(n):\n", "", block, 20).as_deref(),
            Some("    largest = 1\n    return largest")
        );
        assert!(!would_cut(
            "    a = 1\n\n    b = 2",
            "def f(n):\n",
            "",
            block,
            20
        ));
        // Single line: at the newline.
        assert!(!would_cut("x + 1", "y = ", "", Mode::SingleLine, 20));
        assert!(would_cut("x + 1\n", "y = ", "", Mode::SingleLine, 20));
    }

    #[test]
    fn mode_follows_the_cursor_position() {
        assert_eq!(mode("let x = foo(", "a, b);\n"), Mode::SingleLine);
        assert_eq!(mode("let x = ", "\n"), Mode::SingleLine);
        assert_eq!(mode("fn f() {\n", "\n}"), Mode::MultiLine);
        assert_eq!(mode("fn f() {", "}\n"), Mode::MultiLine);
        assert_eq!(mode("def f():", "\n"), Mode::MultiLine);
        assert_eq!(mode("let d = Decoder::", "\n"), Mode::SingleLine);
        assert_eq!(mode("x = [\n    ", ""), Mode::MultiLine);
    }

    #[test]
    fn single_line_stops_at_the_newline() {
        let out = finish(" 1 + 2;\nlet y = 3;", "let x =", "\n", Mode::SingleLine, 10);
        assert_eq!(out.as_deref(), Some(" 1 + 2;"));
    }

    #[test]
    fn closing_brackets_the_suffix_has_are_not_repeated() {
        let out = finish("a, b)", "foo(", ")\n", Mode::SingleLine, 10);
        assert_eq!(out.as_deref(), Some("a, b"));
        let out = finish("hello\")", "print(\"", "\")\n", Mode::SingleLine, 10);
        assert_eq!(out.as_deref(), Some("hello"));
    }

    #[test]
    fn balanced_brackets_in_the_completion_are_kept() {
        let out = finish("foo()", "bar(", ")\n", Mode::SingleLine, 10);
        assert_eq!(out.as_deref(), Some("foo()"));
        let out = finish("x + y;", "let z = ", ";\n", Mode::SingleLine, 10);
        assert_eq!(out.as_deref(), Some("x + y"));
    }

    #[test]
    fn block_ends_where_indentation_drops() {
        let prefix = "fn main() {\n    let x = 1;\n";
        let raw = "    let y = x + 1;\n    println!(\"{y}\");\n}\n\nfn other() {}";
        // The editor shows the closing brace after the cursor: the block stops before it.
        let out = finish(raw, prefix, "}\n", Mode::MultiLine, 10);
        assert_eq!(
            out.as_deref(),
            Some("    let y = x + 1;\n    println!(\"{y}\");")
        );
        // Nothing closes the function yet: the closing line is the block's last.
        let out = finish(raw, prefix, "", Mode::MultiLine, 10);
        assert_eq!(
            out.as_deref(),
            Some("    let y = x + 1;\n    println!(\"{y}\");\n}")
        );
    }

    #[test]
    fn block_stops_at_a_bracket_opened_before_the_cursor() {
        let prefix = "if (ready) {\n";
        let raw = "  run();\n}\nelse {";
        let out = finish(raw, prefix, "}\n", Mode::MultiLine, 10);
        assert_eq!(out.as_deref(), Some("  run();"));
    }

    #[test]
    fn empty_and_suffix_repeating_completions_are_dropped() {
        assert_eq!(finish("   \n  ", "x = ", "", Mode::SingleLine, 10), None);
        assert_eq!(
            finish("return a;", "  ", "return a;\n}", Mode::SingleLine, 10),
            None
        );
        assert_eq!(finish("", "a", "", Mode::MultiLine, 10), None);
    }

    /// Checks what `finish` makes of `raw` in the mode the cursor position gives.
    #[track_caller]
    fn check(raw: &str, prefix: &str, want: &str) {
        let got = finish(raw, prefix, "\n", mode(prefix, "\n"), 10);
        assert_eq!(got.as_deref(), Some(want), "raw {raw:?} after {prefix:?}");
    }

    const PY: &str = "def add(a, b):\n    return a + b\n\n\ndef multiply(a, b):\n    ";

    #[test]
    fn a_space_after_the_editors_indentation_is_dropped() {
        // VS Code indents the new line by four spaces; the model continues with ` return`.
        check(" return a * b", PY, "return a * b");
        // Also when the editor's indentation is the only one the prefix has.
        check(" return a * b", "def multiply(a, b):\n    ", "return a * b");
        // Five extra spaces after four: one extra level is kept, the odd space is not.
        check("     return a", PY, "    return a");
    }

    #[test]
    fn whole_levels_and_no_leading_whitespace_are_kept() {
        check("return a * b", PY, "return a * b");
        check("    return a", PY, "    return a");
        let js = "function f() {\n  if (a) {\n    ";
        check("  b();", js, "  b();");
        check(" b();", js, "b();");
    }

    #[test]
    fn later_lines_lose_the_same_excess_only_when_they_show_it() {
        // The model indented its whole block by five: every line moves back by one.
        check(
            " x = a * b\n     if x:\n         return x",
            PY,
            "x = a * b\n    if x:\n        return x",
        );
        // Only the first line's space was extra: the later lines are already right.
        check(" x = a * b\n    return x", PY, "x = a * b\n    return x");
    }

    #[test]
    fn text_left_of_the_cursor_keeps_the_completions_spaces() {
        check(" * b", "def multiply(a, b):\n    return a", " * b");
        check(" b", "    x = a +\n    y = a", " b");
    }

    #[test]
    fn tab_indented_blocks_drop_spaces_after_the_tabs() {
        let go = "func f() int {\n\tx := 1\n\t";
        check(" return x", go, "return x");
        check("  return x", go, "return x");
        check("\treturn x", go, "\treturn x");
        // A space-indented file: a tab after the editor's spaces is dropped.
        check("\treturn a", PY, "return a");
    }

    #[test]
    fn comment_alignment_and_the_line_above_are_respected() {
        // ` * ` continues a block comment, aligned by one space.
        check(" * @param a", "/**\n * Adds.\n", " * @param a");
        check(" * b", "    /**\n     * a\n    ", " * b");
        // An alignment the line above already uses.
        let sql = "def q():\n    sql = (\"SELECT a\"\n     \"FROM t\")\n    ";
        check(" x = 1", sql, " x = 1");
    }

    #[test]
    fn column_zero_strips_only_against_a_known_unit() {
        check("    return 1", "def f():\n", "    return 1");
        check("     return 1", "def f():\n    x = 1\n", "    return 1");
    }

    #[test]
    fn line_limit_applies() {
        let raw = "a\nb\nc\nd\ne";
        let out = finish(raw, "\n", "", Mode::MultiLine, 3);
        assert_eq!(out.as_deref(), Some("a\nb\nc"));
    }
}

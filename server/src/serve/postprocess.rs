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
    let mut text = match mode {
        Mode::SingleLine => raw.split('\n').next().unwrap_or("").to_string(),
        Mode::MultiLine => cut_block(raw, prefix, max_lines),
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

/// Keeps the lines of a multi-line completion that belong to the block at the cursor:
/// stops where the indentation drops below the cursor line's, where a bracket opened
/// before the cursor would be closed, or after `max_lines`.
fn cut_block(raw: &str, prefix: &str, max_lines: usize) -> String {
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
        blank_run = 0;
        if i > 0 && indent_of(line) < base {
            break;
        }
        let mut cut_at = None;
        for (pos, c) in line.char_indices() {
            match c {
                '(' | '[' | '{' => depth += 1,
                ')' | ']' | '}' => {
                    depth -= 1;
                    if depth < 0 {
                        cut_at = Some(pos);
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
        let out = finish(raw, prefix, "", Mode::MultiLine, 10);
        assert_eq!(
            out.as_deref(),
            Some("    let y = x + 1;\n    println!(\"{y}\");")
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

    #[test]
    fn line_limit_applies() {
        let raw = "a\nb\nc\nd\ne";
        let out = finish(raw, "\n", "", Mode::MultiLine, 3);
        assert_eq!(out.as_deref(), Some("a\nb\nc"));
    }
}

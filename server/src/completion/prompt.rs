//! Builds a completion prompt within token budgets: retrieved and client-sent
//! snippets, then the text around the cursor cut at line boundaries, in the model's
//! fill-in-the-middle layout. Models trained with a repository-level format
//! (Qwen2.5-Coder, StarCoder2) see the snippets as files of the repository before the
//! current file; other models see them as comments naming their paths.

use engine::{Model, RepoContext, RepoFile};

/// A piece of context for the prompt.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ContextSnippet {
    /// Path shown to the model (repository-relative where known).
    pub path: String,
    /// The code.
    pub text: String,
    /// Where it came from: `index`, `declaration` or `changed_file`.
    pub source: &'static str,
    /// Repository of an index snippet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// Token budgets of the parts of a prompt.
#[derive(Debug, Clone, Copy)]
pub struct Budgets {
    /// Text before the cursor.
    pub prefix: usize,
    /// Text after the cursor.
    pub suffix: usize,
    /// All snippets together.
    pub snippets: usize,
}

/// The file a completion happens in, for the repository-level format.
#[derive(Debug, Clone)]
pub struct FilePlace {
    /// Repository name.
    pub repo: String,
    /// Repository-relative path of the file.
    pub path: String,
}

/// A prompt ready for the engine.
#[derive(Debug, Clone)]
pub struct BuiltPrompt {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// The text before the cursor as the model sees it (snippets included).
    pub prefix_text: String,
    /// The text after the cursor as the model sees it.
    pub suffix_text: String,
    /// The snippets that fit the budget.
    pub snippets: Vec<ContextSnippet>,
}

/// The line-comment marker of a language (editor or index language ids).
pub fn comment_marker(language: &str) -> &'static str {
    match language.to_ascii_lowercase().as_str() {
        "python" | "ruby" | "bash" | "shellscript" | "sh" | "shell" | "perl" | "r" | "yaml"
        | "toml" | "dockerfile" | "makefile" | "elixir" | "julia" | "powershell" | "nim" => "#",
        "sql" | "lua" | "haskell" | "ada" | "elm" => "--",
        "lisp" | "clojure" | "scheme" => ";;",
        "erlang" | "latex" | "tex" | "matlab" => "%",
        _ => "//",
    }
}

fn count(model: &Model, text: &str) -> usize {
    model.tokenizer().count(text)
}

/// Characters a token covers at most, as far as cutting is concerned: a text is first
/// cut to `budget × CHARS_PER_TOKEN` characters so that nothing long is tokenized whole.
const CHARS_PER_TOKEN: usize = 16;

/// The longest end of `text` that fits in `budget` tokens.
pub fn tail_fit<'a>(model: &Model, text: &'a str, budget: usize) -> &'a str {
    // The common case (a short cursor line) is one tokenization.
    if count_capped(model, text, budget) <= budget {
        return text;
    }
    let starts: Vec<usize> = text
        .char_indices()
        .map(|(i, _)| i)
        .rev()
        .take(budget.saturating_mul(CHARS_PER_TOKEN))
        .collect();
    // starts[k - 1] is where the last k characters begin; find the largest k that fits.
    let (mut lo, mut hi) = (0usize, starts.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(model, &text[starts[mid - 1]..]) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 { "" } else { &text[starts[lo - 1]..] }
}

/// The longest start of `text` that fits in `budget` tokens.
pub fn head_fit<'a>(model: &Model, text: &'a str, budget: usize) -> &'a str {
    if count_capped(model, text, budget) <= budget {
        return text;
    }
    let ends: Vec<usize> = text
        .char_indices()
        .map(|(i, c)| i + c.len_utf8())
        .take(budget.saturating_mul(CHARS_PER_TOKEN))
        .collect();
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if count(model, &text[..ends[mid - 1]]) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    if lo == 0 { "" } else { &text[..ends[lo - 1]] }
}

/// The last whole lines of `text` that fit in `budget` tokens. Only a last line that
/// does not fit alone is cut (keeping its end, nearest the cursor): the window starts at
/// a line start, so it stays the same while the lines near the cursor change, and the
/// engine's prefix cache keeps matching.
pub fn tail_lines(model: &Model, text: &str, budget: usize) -> String {
    let mut used = 0;
    let mut start = text.len();
    for line in text.split_inclusive('\n').rev() {
        let n = count_capped(model, line, budget - used);
        if used + n > budget {
            if start == text.len() {
                let part = tail_fit(model, line, budget - used);
                start -= part.len();
            }
            break;
        }
        used += n;
        start -= line.len();
        if used >= budget {
            break;
        }
    }
    text[start..].to_string()
}

/// The first whole lines of `text` that fit in `budget` tokens; only a first line that
/// does not fit alone is cut, keeping its start.
pub fn head_lines(model: &Model, text: &str, budget: usize) -> String {
    let mut used = 0;
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let n = count_capped(model, line, budget - used);
        if used + n > budget {
            if end == 0 {
                end += head_fit(model, line, budget - used).len();
            }
            break;
        }
        used += n;
        end += line.len();
    }
    text[..end].to_string()
}

/// Tokens of `line`, or more than `budget` without tokenizing all of a very long line.
fn count_capped(model: &Model, line: &str, budget: usize) -> usize {
    let cap = budget.saturating_mul(CHARS_PER_TOKEN).max(1);
    match line.char_indices().nth(cap) {
        Some(_) => budget + 1,
        None => count(model, line),
    }
}

/// Renders a snippet as a comment block naming its path.
pub fn render_snippet(marker: &str, snippet: &ContextSnippet) -> String {
    let mut out = format!("{marker} Path: {}\n", snippet.path);
    for line in snippet.text.lines() {
        out.push_str(marker);
        if !line.is_empty() {
            out.push(' ');
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Text a snippet takes in the repository-level format (its markers count as one
/// token each, added by the caller).
fn repo_file_text(snippet: &ContextSnippet) -> String {
    format!(
        "{}\n{}\n",
        snippet.path,
        snippet.text.trim_end_matches('\n')
    )
}

/// Lines of the suffix always kept before [`enclosing_part`] looks for a boundary.
const SUFFIX_MIN_LINES: usize = 4;

/// The part of `suffix` up to the next top-level line (one that starts at column 0 with
/// something other than a closing bracket, after the first few lines): the rest of the
/// function or item at the cursor. What follows it helps the model little, and the
/// suffix is prefilled again at every keystroke (it follows the prefix in the prompt).
pub fn enclosing_part(suffix: &str) -> &str {
    let mut end = 0;
    for (i, line) in suffix.split_inclusive('\n').enumerate() {
        let top_level = line
            .chars()
            .next()
            .is_some_and(|c| !c.is_whitespace() && !matches!(c, '}' | ')' | ']'));
        if i > SUFFIX_MIN_LINES && top_level {
            break;
        }
        end += line.len();
    }
    &suffix[..end]
}

/// Above this many bytes before the cursor line, the prefix's first line is not used
/// (see [`build`]).
const WINDOW_GUARD_BYTES: usize = 1024;

/// Tokens of the prefix budget kept for the cursor line (see [`build`]).
const CURSOR_LINE_RESERVE: usize = 48;

/// The prefix as the lines before the cursor line (less a partial first line, see
/// below) and the cursor line.
fn split_cursor_line(prefix: &str) -> (&str, &str) {
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let (head, cursor_line) = prefix.split_at(line_start);
    // Editors send a window of the file cut at a character count: its first line is
    // partial and its start moves with every keystroke, which would change the prompt's
    // start (and miss the prefix cache) each time. A longer prefix therefore starts at
    // its second line; a short one is taken whole (it likely starts the file).
    let head = match head.find('\n') {
        Some(i) if head.len() > WINDOW_GUARD_BYTES => &head[i + 1..],
        _ => head,
    };
    (head, cursor_line)
}

/// The lines before the cursor line and after it that [`build`] shows the model with
/// these budgets (before any shrinking to the prompt's limit; the cursor line itself
/// left out, so the answer stays the same while a line is typed). Retrieval leaves out
/// of its snippets what the model sees already, and only that.
pub fn visible_lines(
    model: &Model,
    prefix: &str,
    suffix: &str,
    budgets: Budgets,
) -> (String, String) {
    let (head, _) = split_cursor_line(prefix);
    let rest = budgets
        .prefix
        .saturating_sub(CURSOR_LINE_RESERVE.min(budgets.prefix / 4));
    let after = &suffix[suffix.find('\n').map_or(suffix.len(), |i| i + 1)..];
    let after = if model.fim().uses_suffix() {
        head_lines(model, enclosing_part(after), budgets.suffix)
    } else {
        String::new()
    };
    (tail_lines(model, head, rest), after)
}

/// Builds the prompt for a completion at the cursor, at most `max_tokens` long (and
/// never longer than the model's context allows). With `place` known and a model
/// that has a repository-level format, snippets become files of the repository.
#[allow(clippy::too_many_arguments)]
pub fn build(
    model: &Model,
    language: &str,
    place: Option<&FilePlace>,
    prefix: &str,
    suffix: &str,
    snippets: &[ContextSnippet],
    budgets: Budgets,
    max_tokens: usize,
) -> engine::Result<BuiltPrompt> {
    // Never more than the model's context leaves room for.
    let max_tokens = max_tokens.min(model.info().config.context_length.saturating_sub(1));
    let place = place.filter(|p| !p.path.is_empty() && model.fim().has_repo_format());
    let marker = comment_marker(language);
    let mut used = 0;
    let mut kept = Vec::new();
    for s in snippets {
        if s.text.trim().is_empty() {
            continue;
        }
        let block = match place {
            Some(_) => repo_file_text(s),
            None => render_snippet(marker, s),
        };
        // A file separator marker in the repository format.
        let n = count(model, &block) + usize::from(place.is_some());
        if used + n > budgets.snippets {
            continue;
        }
        used += n;
        kept.push((s.clone(), block));
    }
    // Snippets come best first; the best goes nearest the cursor, where the model
    // attends most.
    kept.reverse();
    let header: String = match place {
        Some(_) => String::new(),
        None => kept.iter().map(|(_, block)| block.as_str()).collect(),
    };
    let kept: Vec<ContextSnippet> = kept.into_iter().map(|(s, _)| s).collect();
    // The window is anchored on the lines before the cursor line, so typing on a line
    // keeps the prompt's start (and with it the prefix cache) unchanged. The cursor
    // line comes out of the same budget: a long one is cut, keeping its end.
    let (head, cursor_line) = split_cursor_line(prefix);
    let mut prefix_budget = budgets.prefix;
    let mut suffix_budget = budgets.suffix;
    loop {
        let cursor_part = tail_fit(model, cursor_line, prefix_budget);
        // The lines before the cursor line get the budget less a reserve for the cursor
        // line, so their window does not move while a line is typed (up to the reserve).
        let reserve = count(model, cursor_part).max(CURSOR_LINE_RESERVE.min(prefix_budget / 4));
        let rest = prefix_budget.saturating_sub(reserve);
        let prefix = format!("{}{cursor_part}", tail_lines(model, head, rest));
        let suffix = if model.fim().uses_suffix() {
            head_lines(model, enclosing_part(suffix), suffix_budget)
        } else {
            String::new()
        };
        let (tokens, prefix_text) = match place {
            Some(place) => {
                let files: Vec<RepoFile<'_>> = kept
                    .iter()
                    .map(|s| RepoFile {
                        path: &s.path,
                        text: &s.text,
                    })
                    .collect();
                let repo = RepoContext {
                    name: &place.repo,
                    files: &files,
                    path: &place.path,
                };
                let tokens = model.completion_prompt_in_repo(&repo, &prefix, &suffix)?;
                // The text as the model sees it, markers named, for debugging and audit.
                let mut text = format!("<|repo_name|>{}\n", place.repo);
                for s in &kept {
                    text.push_str("<|file_sep|>");
                    text.push_str(&repo_file_text(s));
                }
                text.push_str(&format!("<|file_sep|>{}\n{prefix}", place.path));
                (tokens, text)
            }
            None => {
                let prefix_text = format!("{header}{prefix}");
                (model.completion_prompt(&prefix_text, &suffix)?, prefix_text)
            }
        };
        // Pieces counted apart can tokenize longer together: shrink until it fits.
        let over = tokens.len().saturating_sub(max_tokens);
        if over == 0 || (prefix_budget == 0 && suffix_budget == 0) {
            return Ok(BuiltPrompt {
                tokens,
                prefix_text,
                suffix_text: suffix,
                snippets: kept,
            });
        }
        let cut = over + 8;
        let from_suffix = cut.min(suffix_budget);
        suffix_budget -= from_suffix;
        prefix_budget = prefix_budget.saturating_sub(cut - from_suffix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suffix_ends_before_the_next_top_level_item() {
        let suffix = ")\n    y = 2\n    return y\n\n\n\ndef other():\n    pass\n";
        assert_eq!(enclosing_part(suffix), ")\n    y = 2\n    return y\n\n\n\n");
        let rust = "x;\n    a();\n    b();\n    c();\n    d();\n}\n\nfn next() {}\n";
        assert_eq!(
            enclosing_part(rust),
            "x;\n    a();\n    b();\n    c();\n    d();\n}\n\n"
        );
        // The first lines are kept whatever they hold.
        assert_eq!(enclosing_part("a\nb\n"), "a\nb\n");
    }

    #[test]
    fn snippets_are_commented_with_their_path() {
        let s = ContextSnippet {
            path: "src/util.py".into(),
            text: "def helper(x):\n\n    return x * 2".into(),
            source: "index",
            repo: Some("app".into()),
        };
        assert_eq!(
            render_snippet(comment_marker("python"), &s),
            "# Path: src/util.py\n# def helper(x):\n#\n#     return x * 2\n"
        );
        assert_eq!(comment_marker("rust"), "//");
        assert_eq!(comment_marker("sql"), "--");
    }
}

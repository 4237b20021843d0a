//! Builds a completion prompt within token budgets: retrieved and client-sent
//! snippets as comments with their paths, then the text around the cursor cut at
//! line boundaries, in the model's fill-in-the-middle layout.

use engine::Model;

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

/// Longest part of the cursor line kept before the cursor.
const MAX_CURSOR_LINE_CHARS: usize = 1000;

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
    model
        .tokenizer()
        .encode(text)
        .map(|t| t.len())
        // Unencodable text cannot be in a prompt anyway; count it as large.
        .unwrap_or(text.len())
}

/// The last lines of `text` that fit in `budget` tokens (a cut first line is dropped).
pub fn tail_lines(model: &Model, text: &str, budget: usize) -> String {
    let mut used = 0;
    let mut start = text.len();
    let mut lines = text.split_inclusive('\n').rev().peekable();
    // The cursor line is always kept, even alone over budget.
    while let Some(line) = lines.next() {
        let n = count(model, line);
        if used + n > budget && start != text.len() {
            break;
        }
        used += n;
        start -= line.len();
        if used >= budget && lines.peek().is_some() {
            break;
        }
    }
    text[start..].to_string()
}

/// The first lines of `text` that fit in `budget` tokens.
pub fn head_lines(model: &Model, text: &str, budget: usize) -> String {
    let mut used = 0;
    let mut end = 0;
    for line in text.split_inclusive('\n') {
        let n = count(model, line);
        if used + n > budget {
            break;
        }
        used += n;
        end += line.len();
    }
    text[..end].to_string()
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

/// Builds the prompt for a completion at the cursor.
pub fn build(
    model: &Model,
    language: &str,
    prefix: &str,
    suffix: &str,
    snippets: &[ContextSnippet],
    budgets: Budgets,
) -> engine::Result<BuiltPrompt> {
    let marker = comment_marker(language);
    let mut used = 0;
    let mut header = String::new();
    let mut kept = Vec::new();
    for s in snippets {
        if s.text.trim().is_empty() {
            continue;
        }
        let block = render_snippet(marker, s);
        let n = count(model, &block);
        if used + n > budgets.snippets {
            continue;
        }
        used += n;
        header.push_str(&block);
        kept.push(s.clone());
    }
    // The window is anchored on the lines before the cursor line, so typing on a line
    // keeps the prompt's start (and with it the prefix cache) unchanged.
    let line_start = prefix.rfind('\n').map_or(0, |i| i + 1);
    let (head, cursor_line) = prefix.split_at(line_start);
    let cursor_line = match cursor_line.char_indices().rev().nth(MAX_CURSOR_LINE_CHARS) {
        Some((cut, _)) => &cursor_line[cut..],
        None => cursor_line,
    };
    let prefix = format!("{}{cursor_line}", tail_lines(model, head, budgets.prefix));
    let suffix = if model.fim().uses_suffix() {
        head_lines(model, suffix, budgets.suffix)
    } else {
        String::new()
    };
    let prefix_text = format!("{header}{prefix}");
    let tokens = model.completion_prompt(&prefix_text, &suffix)?;
    Ok(BuiltPrompt {
        tokens,
        prefix_text,
        suffix_text: suffix,
        snippets: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

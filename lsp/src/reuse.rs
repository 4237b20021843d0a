//! Typing through the ghost text.
//!
//! When the user types the characters the last completion proposed, the server would
//! only be asked to say the rest of it again. If the new prefix is the old prefix plus
//! a (proper) prefix of the old completion, and the text after the cursor is unchanged,
//! the rest of the old completion is the answer — no HTTP round trip. A request at the
//! very same place gets the same answer again (completions are greedy by default).

use tower_lsp_server::ls_types::Uri;

/// The last answer the server gave, with where it was asked.
#[derive(Debug, Clone)]
pub struct LastAnswer {
    /// The document it was for.
    pub uri: Uri,
    /// Text before the cursor when it was asked.
    pub prefix: String,
    /// Text after the cursor when it was asked.
    pub suffix: String,
    /// The server's completion id (for acceptance events).
    pub completion_id: String,
    /// The ghost text (may be empty: the server had nothing to say there).
    pub text: String,
}

/// What a reused answer offers at the new cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reused {
    /// The completion id of the original answer.
    pub completion_id: String,
    /// The part of the ghost text not typed yet (empty when nothing was proposed).
    pub text: String,
}

impl LastAnswer {
    /// The remaining ghost text if `prefix`/`suffix` at `uri` continue this answer.
    pub fn reuse(&self, uri: &Uri, prefix: &str, suffix: &str) -> Option<Reused> {
        if *uri != self.uri || suffix != self.suffix {
            return None;
        }
        let typed = prefix.strip_prefix(self.prefix.as_str())?;
        let rest = self.text.strip_prefix(typed)?;
        // Typed the whole completion: what comes next is a new question.
        if rest.is_empty() && !typed.is_empty() {
            return None;
        }
        Some(Reused {
            completion_id: self.completion_id.clone(),
            text: rest.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(prefix: &str, suffix: &str, text: &str) -> LastAnswer {
        LastAnswer {
            uri: "file:///w/a.py".parse().expect("uri"),
            prefix: prefix.into(),
            suffix: suffix.into(),
            completion_id: "cmpl-1".into(),
            text: text.into(),
        }
    }

    fn uri() -> Uri {
        "file:///w/a.py".parse().expect("uri")
    }

    #[test]
    fn typing_through_returns_the_rest() {
        let last = answer("def total(items):\n    return ", "\n", "sum(items)");
        let got = last.reuse(&uri(), "def total(items):\n    return su", "\n");
        assert_eq!(
            got,
            Some(Reused {
                completion_id: "cmpl-1".into(),
                text: "m(items)".into()
            })
        );
        let same = last.reuse(&uri(), "def total(items):\n    return ", "\n");
        assert_eq!(same.map(|r| r.text).as_deref(), Some("sum(items)"));
    }

    #[test]
    fn diverging_or_finished_text_needs_a_new_request() {
        let last = answer("x = ", "", "compute(a, b)");
        assert_eq!(
            last.reuse(&uri(), "x = compx", ""),
            None,
            "typed something else"
        );
        assert_eq!(
            last.reuse(&uri(), "x = compute(a, b)", ""),
            None,
            "typed it all"
        );
        assert_eq!(last.reuse(&uri(), "x =", ""), None, "deleted a character");
        assert_eq!(last.reuse(&uri(), "x = co", ")"), None, "suffix changed");
        let other: Uri = "file:///w/b.py".parse().expect("uri");
        assert_eq!(last.reuse(&other, "x = co", ""), None, "other document");
    }

    #[test]
    fn multibyte_text_is_split_on_char_boundaries() {
        let last = answer("s = ", "", "\"héllo 😀\"");
        let got = last.reuse(&uri(), "s = \"hé", "").map(|r| r.text);
        assert_eq!(got.as_deref(), Some("llo 😀\""));
    }

    #[test]
    fn an_empty_answer_is_reused_only_in_place() {
        let last = answer("pass", "", "");
        assert_eq!(
            last.reuse(&uri(), "pass", "").map(|r| r.text).as_deref(),
            Some("")
        );
        assert_eq!(last.reuse(&uri(), "pass\n", ""), None);
    }
}

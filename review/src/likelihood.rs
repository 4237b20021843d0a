//! The code model's own judgement of a change: for every block of a hunk that replaces
//! lines, the added lines and the lines they replace are both scored as the
//! fill-in-the-middle of the code around them (mean log-probability per token). A change
//! that makes the code much less likely than what it replaced — an inverted comparison,
//! an off-by-one, swapped arguments — is reported as an unusual change, with the model's
//! own infill of that spot as the suggestion.
//!
//! This needs no instruction following, only a code model with fill-in-the-middle
//! tokens, so it works with models far too small to review in words.

use crate::context::FileView;
use crate::diff::{Hunk, LineKind};
use crate::{Category, Finding, FindingSource, ReviewError, Severity};

/// A fill-in-the-middle code model that can judge code in place.
pub trait InfillJudge: Sync {
    /// The model's name for the report.
    fn judge_name(&self) -> String;
    /// Mean natural-log probability per token of `middle` between `prefix` and `suffix`.
    fn mean_logprob(&self, prefix: &str, middle: &str, suffix: &str) -> Result<f64, ReviewError>;
    /// The model's own code between `prefix` and `suffix` (greedy), at most `max_lines`
    /// lines.
    fn infill(&self, prefix: &str, suffix: &str, max_lines: usize) -> Result<String, ReviewError>;
}

/// How the judgement is made.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Nats per token by which the replaced code must be likelier than the new code for
    /// a finding (calibrated on `benches/review_eval`'s clean refactorings).
    pub threshold: f64,
    /// Lines of the new file before a block that the model sees.
    pub lines_before: usize,
    /// Lines of the new file after a block that the model sees.
    pub lines_after: usize,
    /// Blocks that add more lines than this are rewrites, not slips: not judged.
    pub max_block_lines: usize,
    /// Most blocks judged in one review.
    pub max_blocks: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            lines_before: 40,
            lines_after: 12,
            max_block_lines: 6,
            max_blocks: 64,
        }
    }
}

/// Lines replaced by other lines at one place of a file, with the code around them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacement {
    /// The file's path (new side).
    pub path: String,
    /// First added line (new side, 1-based).
    pub line: u32,
    /// Last added line.
    pub end_line: u32,
    /// The removed lines.
    pub old: String,
    /// The added lines.
    pub new: String,
    /// New-side code before the block (ends with a line break, or is empty).
    pub prefix: String,
    /// New-side code after the block (starts with a line break).
    pub suffix: String,
}

/// What the judge made of one replacement.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// Where.
    pub replacement: Replacement,
    /// Mean log-probability per token of the removed lines.
    pub old_logprob: f64,
    /// Mean log-probability per token of the added lines.
    pub new_logprob: f64,
}

impl Judged {
    /// How much likelier the replaced code is than the new code, in nats per token.
    pub fn margin(&self) -> f64 {
        self.old_logprob - self.new_logprob
    }
}

/// The replacements of `view`'s hunks: runs of removed and added lines with both sides
/// non-empty, not only whitespace changes, at most `settings.max_block_lines` added lines.
pub fn replacements(view: &FileView<'_>, settings: &Settings) -> Vec<Replacement> {
    let file_lines: Option<Vec<&str>> = view.text.as_deref().map(|t| {
        t.split('\n')
            .map(|l| l.strip_suffix('\r').unwrap_or(l))
            .collect()
    });
    let mut out = Vec::new();
    for hunk in &view.file.hunks {
        for (start, end) in change_runs(hunk) {
            let run = &hunk.lines[start..end];
            let old: Vec<&str> = run
                .iter()
                .filter(|l| l.kind == LineKind::Removed)
                .map(|l| l.text.as_str())
                .collect();
            let added: Vec<(u32, &str)> = run
                .iter()
                .filter(|l| l.kind == LineKind::Added)
                .filter_map(|l| Some((l.new_line?, l.text.as_str())))
                .collect();
            let (Some(&(first, _)), Some(&(last, _))) = (added.first(), added.last()) else {
                continue;
            };
            if old.is_empty() || added.len() > settings.max_block_lines {
                continue;
            }
            let new: Vec<&str> = added.iter().map(|(_, t)| *t).collect();
            if squeeze(&old.join("\n")) == squeeze(&new.join("\n")) {
                continue;
            }
            let (before, after) = match &file_lines {
                Some(lines) => file_context(lines, first, last, settings),
                None => hunk_context(hunk, start, end, settings),
            };
            out.push(Replacement {
                path: view.path().to_string(),
                line: first,
                end_line: last,
                old: old.join("\n"),
                new: new.join("\n"),
                prefix: before.iter().map(|l| format!("{l}\n")).collect(),
                suffix: after.iter().map(|l| format!("\n{l}")).collect(),
            });
        }
    }
    out
}

/// `text` without any whitespace.
fn squeeze(text: &str) -> String {
    text.chars().filter(|c| !c.is_whitespace()).collect()
}

/// Index ranges of the maximal runs of removed/added lines of `hunk`.
fn change_runs(hunk: &Hunk) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, line) in hunk.lines.iter().enumerate() {
        match (line.kind, start) {
            (LineKind::Context, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            (LineKind::Context, None) => {}
            (_, None) => start = Some(i),
            (_, Some(_)) => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, hunk.lines.len()));
    }
    runs
}

/// The new file's lines before `first` and after `last` (1-based), within the settings.
fn file_context<'a>(
    lines: &[&'a str],
    first: u32,
    last: u32,
    settings: &Settings,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let first = (first as usize).saturating_sub(1).min(lines.len());
    let after = (last as usize).min(lines.len());
    let before = lines[first.saturating_sub(settings.lines_before)..first].to_vec();
    let after_end = (after + settings.lines_after).min(lines.len());
    let mut after_lines = lines[after..after_end].to_vec();
    // A file's final line break is not a line of its own.
    if after_end == lines.len() && after_lines.last() == Some(&"") {
        after_lines.pop();
    }
    (before, after_lines)
}

/// New-side lines of the hunk before and after the run `start..end` (what the diff shows
/// when the file itself is not available).
fn hunk_context<'a>(
    hunk: &'a Hunk,
    start: usize,
    end: usize,
    settings: &Settings,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let new_side = |lines: &'a [crate::diff::DiffLine]| -> Vec<&'a str> {
        lines
            .iter()
            .filter(|l| l.kind != LineKind::Removed)
            .map(|l| l.text.as_str())
            .collect()
    };
    let before = new_side(&hunk.lines[..start]);
    let after = new_side(&hunk.lines[end..]);
    let skip = before.len().saturating_sub(settings.lines_before);
    (
        before[skip..].to_vec(),
        after.into_iter().take(settings.lines_after).collect(),
    )
}

/// The part of a replacement that differs, in context: the text both sides share at the
/// start and end joins the prefix and the suffix, so the judgement rests on the tokens
/// that changed (a whole line's mean would dilute one flipped `<` with the tokens around
/// it). The shared start is cut back to a word's beginning and the shared end forward to
/// a word's end, so a changed name is scored whole, and neither side is left empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Focus {
    /// Code before the differing part.
    pub prefix: String,
    /// The removed side of the differing part.
    pub old: String,
    /// The added side of the differing part.
    pub new: String,
    /// Code after it.
    pub suffix: String,
}

/// The differing part of `r` (see [`Focus`]).
pub fn focus(r: &Replacement) -> Focus {
    let old: Vec<char> = r.old.chars().collect();
    let new: Vec<char> = r.new.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut start = old.iter().zip(&new).take_while(|(a, b)| a == b).count();
    while start > 0
        && word(old[start - 1])
        && (old.get(start).is_some_and(|&c| word(c)) || new.get(start).is_some_and(|&c| word(c)))
    {
        start -= 1;
    }
    let max_end = old.len().min(new.len()) - start;
    let mut end = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(max_end)
        .take_while(|(a, b)| a == b)
        .count();
    let at = |v: &[char], i: usize| v.get(i).copied();
    while end > 0
        && at(&old, old.len() - end).is_some_and(word)
        && (old.len() - end > start && at(&old, old.len() - end - 1).is_some_and(word)
            || new.len() - end > start && at(&new, new.len() - end - 1).is_some_and(word))
    {
        end -= 1;
    }
    // Neither side empty: take characters of the shared end into both.
    while end > 0 && (old.len() - end == start || new.len() - end == start) {
        end -= 1;
    }
    while start > 0 && (old.len() - end == start || new.len() - end == start) {
        start -= 1;
    }
    let text = |v: &[char]| v.iter().collect::<String>();
    Focus {
        prefix: format!("{}{}", r.prefix, text(&old[..start])),
        old: text(&old[start..old.len() - end]),
        new: text(&new[start..new.len() - end]),
        suffix: format!("{}{}", text(&old[old.len() - end..]), r.suffix),
    }
}

/// Scores every replacement with `judge` (on its [`focus`]); stops early (keeping what
/// was judged) when the judge fails on one, and passes cancellation on.
pub fn judge_all(
    replacements: Vec<Replacement>,
    judge: &dyn InfillJudge,
) -> Result<(Vec<Judged>, usize), ReviewError> {
    let mut judged = Vec::with_capacity(replacements.len());
    let mut errors = 0;
    for replacement in replacements {
        let f = focus(&replacement);
        let scores = judge
            .mean_logprob(&f.prefix, &f.old, &f.suffix)
            .and_then(|old| {
                judge
                    .mean_logprob(&f.prefix, &f.new, &f.suffix)
                    .map(|new| (old, new))
            });
        match scores {
            Ok((old_logprob, new_logprob)) => judged.push(Judged {
                replacement,
                old_logprob,
                new_logprob,
            }),
            Err(ReviewError::Cancelled) => return Err(ReviewError::Cancelled),
            Err(e) => {
                tracing::warn!(error = %e, path = %replacement.path, line = replacement.line,
                    "could not judge a change");
                errors += 1;
            }
        }
    }
    Ok((judged, errors))
}

/// The findings for judged replacements whose margin reaches `settings.threshold`, each
/// with the model's own infill as the suggestion (when it differs from the new code).
pub fn findings(
    judged: &[Judged],
    judge: &dyn InfillJudge,
    settings: &Settings,
) -> Result<Vec<Finding>, ReviewError> {
    let mut out = Vec::new();
    for j in judged.iter().filter(|j| j.margin() >= settings.threshold) {
        let r = &j.replacement;
        let lines = (r.end_line - r.line + 1) as usize;
        let expected = match judge.infill(&r.prefix, &r.suffix, lines) {
            Ok(text) => {
                Some(text).filter(|t| !t.trim().is_empty() && squeeze(t) != squeeze(&r.new))
            }
            Err(ReviewError::Cancelled) => return Err(ReviewError::Cancelled),
            Err(_) => None,
        };
        let expectation = match &expected {
            Some(t) => format!("; it expected `{}`", t.trim()),
            None => format!("; the replaced code was `{}`", r.old.trim()),
        };
        out.push(Finding {
            path: r.path.clone(),
            line: r.line,
            end_line: r.end_line,
            severity: Severity::Warning,
            category: Category::Bug,
            message: format!(
                "Unusual change: the code model finds the replaced code much likelier here than the new one ({:.2} nats per token){expectation}.",
                j.margin()
            ),
            suggestion: expected,
            source: FindingSource::Model,
            confidence: (j.margin() / (2.0 * settings.threshold.max(0.1))).clamp(0.3, 0.95),
            rule: "model.unlikely-change".into(),
            quote: r.new.lines().next().unwrap_or("").to_string(),
            secret: None,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::{FileView, NoFiles};

    fn view_of(diff: &str) -> crate::diff::Diff {
        crate::diff::parse(diff).expect("diff")
    }

    const DIFF: &str = "diff --git a/m.py b/m.py\n--- a/m.py\n+++ b/m.py\n@@ -1,5 +1,6 @@\n def clamp(x, lo, hi):\n-    if x < lo:\n+    if x > lo:\n         return lo\n-    # bound\n+    #  bound\n     return x\n+# end\n";

    #[test]
    fn replacements_are_runs_with_both_sides_and_real_change() {
        let diff = view_of(DIFF);
        let view = FileView::new(&diff.files[0], &NoFiles);
        let found = replacements(&view, &Settings::default());
        // The comment's whitespace change and the pure addition are not replacements.
        assert_eq!(found.len(), 1, "{found:?}");
        let r = &found[0];
        assert_eq!((r.line, r.end_line), (2, 2));
        assert_eq!(r.old, "    if x < lo:");
        assert_eq!(r.new, "    if x > lo:");
        assert_eq!(r.prefix, "def clamp(x, lo, hi):\n");
        assert_eq!(
            r.suffix,
            "\n        return lo\n    #  bound\n    return x\n# end"
        );
    }

    struct Scripted;

    impl InfillJudge for Scripted {
        fn judge_name(&self) -> String {
            "scripted".into()
        }
        fn mean_logprob(&self, _: &str, middle: &str, _: &str) -> Result<f64, ReviewError> {
            Ok(if middle.contains('<') { -0.2 } else { -1.4 })
        }
        fn infill(&self, _: &str, _: &str, _: usize) -> Result<String, ReviewError> {
            Ok("    if x < lo:".into())
        }
    }

    fn replacement(old: &str, new: &str) -> Replacement {
        Replacement {
            path: "a.py".into(),
            line: 1,
            end_line: 1,
            old: old.into(),
            new: new.into(),
            prefix: "P\n".into(),
            suffix: "\nS".into(),
        }
    }

    #[test]
    fn the_focus_is_the_differing_words_never_empty() {
        let f = focus(&replacement("    if x < lo:", "    if x > lo:"));
        assert_eq!((f.old.as_str(), f.new.as_str()), ("<", ">"));
        assert_eq!(
            (f.prefix.as_str(), f.suffix.as_str()),
            ("P\n    if x ", " lo:\nS")
        );
        // A changed name is scored whole.
        let f = focus(&replacement(
            "total = first + second",
            "total = first + third",
        ));
        assert_eq!((f.old.as_str(), f.new.as_str()), ("second", "third"));
        let f = focus(&replacement(
            "for i in range(n):",
            "for i in range(n_items):",
        ));
        assert_eq!((f.old.as_str(), f.new.as_str()), ("n", "n_items"));
        // An insertion: the shared end gives both sides something.
        let f = focus(&replacement("range(len(x))", "range(len(x) + 1)"));
        assert!(!f.old.is_empty() && !f.new.is_empty(), "{f:?}");
        assert_eq!(
            format!("{}{}{}", f.prefix, f.old, f.suffix),
            "P\nrange(len(x))\nS"
        );
        assert_eq!(
            format!("{}{}{}", f.prefix, f.new, f.suffix),
            "P\nrange(len(x) + 1)\nS"
        );
        // A deletion at the end, and a line replaced whole.
        let f = focus(&replacement("x = f(a)?;", "x = f(a);"));
        assert_eq!(
            format!("{}{}{}", f.prefix, f.new, f.suffix),
            "P\nx = f(a);\nS"
        );
        assert!(!f.old.is_empty() && !f.new.is_empty(), "{f:?}");
        let f = focus(&replacement("a", "b"));
        assert_eq!((f.old.as_str(), f.new.as_str()), ("a", "b"));
        let f = focus(&replacement("é < ü", "é > ü"));
        assert_eq!((f.old.as_str(), f.new.as_str()), ("<", ">"));
    }

    #[test]
    fn a_much_less_likely_change_is_a_warning_with_the_models_line() {
        let diff = view_of(DIFF);
        let view = FileView::new(&diff.files[0], &NoFiles);
        let settings = Settings::default();
        let (judged, errors) =
            judge_all(replacements(&view, &settings), &Scripted).expect("judged");
        assert_eq!(errors, 0);
        assert!((judged[0].margin() - 1.2).abs() < 1e-9);
        let found = findings(&judged, &Scripted, &settings).expect("findings");
        assert_eq!(found.len(), 1);
        let f = &found[0];
        assert_eq!(
            (f.line, f.severity, f.rule.as_str()),
            (2, Severity::Warning, "model.unlikely-change")
        );
        assert_eq!(f.suggestion.as_deref(), Some("    if x < lo:"));
        assert!(
            f.message.contains("it expected `if x < lo:`"),
            "{}",
            f.message
        );
        assert_eq!(f.quote, "    if x > lo:");
        // Below the threshold: nothing.
        let strict = Settings {
            threshold: 1.5,
            ..settings
        };
        assert!(
            findings(&judged, &Scripted, &strict)
                .expect("findings")
                .is_empty()
        );
    }
}

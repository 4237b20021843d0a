//! The rules file: a team's own review settings, in TOML.
//!
//! ```toml
//! instructions = "We use parameterized SQL everywhere; flag string-built queries."
//! exclude = ["docs/**", "**/*.snap"]     # never reviewed (listed as `excluded`)
//! disable = ["todo", "debug-output"]     # static checks to turn off (not secrets or conflict markers)
//! max_function_lines = 80                # `large-function` threshold
//! model_max_severity = "warning"         # model findings are capped here (default), so the
//!                                        # default `--fail-on error` gate rests on static checks
//! unlikely_change_threshold = 0.5        # nats per token for `model.unlikely-change` (lower:
//!                                        # more findings; `disable` it to turn the judge off)
//!
//! [[rule]]
//! id = "no-unwrap"
//! pattern = '\.unwrap\(\)'              # a regular expression over each added line
//! paths = ["**/*.rs"]                    # optional globs; default: every file
//! message = "Avoid unwrap() in library code; return an error."
//! severity = "warning"                   # error | warning | info
//! category = "maintainability"           # bug | security | performance | maintainability | test
//! ```

use globset::{Glob, GlobSet, GlobSetBuilder};
use regex::Regex;
use serde::Deserialize;

use super::{Category, ReviewError, Severity};

/// Static checks that a rules file may not disable.
pub const ALWAYS_ON: &[&str] = &[
    "secret.private-key",
    "secret.token",
    "secret.credential",
    "secret.url-password",
    "merge-conflict",
];

/// Every check a rules file may name in `disable`: the static checks and the code
/// model's judgement.
pub const CHECK_IDS: &[&str] = &[
    "secret.private-key",
    "secret.token",
    "secret.credential",
    "secret.url-password",
    "merge-conflict",
    "debug-output",
    "todo",
    "large-function",
    "prompt-injection",
    "sql-concat",
    // Not a static check: the code model's judgement of replaced lines (`likelihood`).
    "model.unlikely-change",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    instructions: Option<String>,
    #[serde(default)]
    exclude: Vec<String>,
    #[serde(default)]
    disable: Vec<String>,
    max_function_lines: Option<u32>,
    model_max_severity: Option<String>,
    unlikely_change_threshold: Option<f64>,
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    pattern: String,
    #[serde(default)]
    paths: Vec<String>,
    message: String,
    severity: Option<String>,
    category: Option<String>,
}

/// One custom rule: a pattern over added lines.
#[derive(Debug, Clone)]
pub struct CustomRule {
    /// The rule's id (findings carry `rule.<id>`).
    pub id: String,
    /// What an added line must match.
    pub pattern: Regex,
    /// Files the rule applies to (`None`: all).
    pub paths: Option<GlobSet>,
    /// The finding's message.
    pub message: String,
    /// The finding's severity.
    pub severity: Severity,
    /// The finding's category.
    pub category: Category,
}

/// Parsed rules.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Instructions for the model.
    pub instructions: Option<String>,
    /// Paths never reviewed.
    pub exclude: Option<GlobSet>,
    /// Static checks turned off.
    pub disabled: Vec<String>,
    /// `large-function` threshold in lines.
    pub max_function_lines: u32,
    /// The highest severity a model finding may have.
    pub model_max_severity: Severity,
    /// The margin (nats per token) from which the code model's judgement reports an
    /// unusual change ([`crate::likelihood`]); `None`: the default.
    pub unlikely_change_threshold: Option<f64>,
    /// Custom pattern rules.
    pub custom: Vec<CustomRule>,
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            instructions: None,
            exclude: None,
            disabled: Vec::new(),
            max_function_lines: 80,
            model_max_severity: Severity::Warning,
            unlikely_change_threshold: None,
            custom: Vec::new(),
        }
    }
}

fn globs(patterns: &[String], what: &str) -> Result<Option<GlobSet>, ReviewError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let g =
            Glob::new(p).map_err(|e| ReviewError::Rules(format!("{what}: bad glob `{p}`: {e}")))?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| ReviewError::Rules(format!("{what}: {e}")))
}

impl Rules {
    /// Parses a rules file's text; every mistake is an error that names it.
    pub fn parse(text: &str) -> Result<Rules, ReviewError> {
        let file: RulesFile = toml::from_str(text)
            .map_err(|e| ReviewError::Rules(e.to_string().trim().to_string()))?;
        for d in &file.disable {
            if !CHECK_IDS.contains(&d.as_str()) {
                return Err(ReviewError::Rules(format!(
                    "`disable`: unknown check `{d}` (known: {})",
                    CHECK_IDS.join(", ")
                )));
            }
            if ALWAYS_ON.contains(&d.as_str()) {
                return Err(ReviewError::Rules(format!(
                    "`disable`: `{d}` cannot be turned off"
                )));
            }
        }
        let mut custom = Vec::new();
        for r in file.rule {
            let where_ = format!("rule `{}`", r.id);
            if r.id.is_empty()
                || !r
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return Err(ReviewError::Rules(format!(
                    "{where_}: an id is letters, digits, `-`, `_` and `.`"
                )));
            }
            if r.message.trim().is_empty() {
                return Err(ReviewError::Rules(format!("{where_}: `message` is empty")));
            }
            let pattern = regex::RegexBuilder::new(&r.pattern)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| ReviewError::Rules(format!("{where_}: bad `pattern`: {e}")))?;
            let severity = match &r.severity {
                None => Severity::Warning,
                Some(s) => Severity::parse(s).ok_or_else(|| {
                    ReviewError::Rules(format!(
                        "{where_}: `severity` is error, warning or info, not `{s}`"
                    ))
                })?,
            };
            let category = match &r.category {
                None => Category::Maintainability,
                Some(s) => Category::parse(s).ok_or_else(|| {
                    ReviewError::Rules(format!(
                        "{where_}: `category` is bug, security, performance, maintainability or test, not `{s}`"
                    ))
                })?,
            };
            custom.push(CustomRule {
                paths: globs(&r.paths, &where_)?,
                id: r.id,
                pattern,
                message: r.message,
                severity,
                category,
            });
        }
        let model_max_severity = match &file.model_max_severity {
            None => Severity::Warning,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                ReviewError::Rules(format!(
                    "`model_max_severity` is error, warning or info, not `{s}`"
                ))
            })?,
        };
        if let Some(t) = file.unlikely_change_threshold
            && !(t.is_finite() && (-20.0..=20.0).contains(&t))
        {
            return Err(ReviewError::Rules(format!(
                "`unlikely_change_threshold` is a number of nats per token between -20 and 20, not {t}"
            )));
        }
        Ok(Rules {
            model_max_severity,
            unlikely_change_threshold: file.unlikely_change_threshold,
            instructions: file.instructions.filter(|s| !s.trim().is_empty()),
            exclude: globs(&file.exclude, "exclude")?,
            disabled: file.disable,
            max_function_lines: file.max_function_lines.unwrap_or(80).max(5),
            custom,
        })
    }

    /// Whether `path` is excluded from review.
    pub fn excludes(&self, path: &str) -> bool {
        self.exclude.as_ref().is_some_and(|g| g.is_match(path))
    }

    /// Whether the static check `id` runs.
    pub fn enabled(&self, id: &str) -> bool {
        !self.disabled.iter().any(|d| d == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_rules_file() {
        let r = Rules::parse(
            "instructions = \"be strict\"\nexclude = [\"docs/**\"]\ndisable = [\"todo\"]\nmax_function_lines = 40\n[[rule]]\nid = \"no-unwrap\"\npattern = '\\.unwrap\\(\\)'\npaths = [\"**/*.rs\"]\nmessage = \"no unwrap\"\nseverity = \"error\"\ncategory = \"bug\"\n",
        )
        .expect("rules");
        assert_eq!(r.instructions.as_deref(), Some("be strict"));
        assert!(r.excludes("docs/a/b.md") && !r.excludes("src/docs.rs"));
        assert!(!r.enabled("todo") && r.enabled("debug-output"));
        assert_eq!(r.max_function_lines, 40);
        assert_eq!(r.model_max_severity, Severity::Warning);
        let strict = Rules::parse("model_max_severity = \"error\"").expect("rules");
        assert_eq!(strict.model_max_severity, Severity::Error);
        let c = &r.custom[0];
        assert!(c.pattern.is_match("x.unwrap()"));
        assert!(c.paths.as_ref().is_some_and(|p| p.is_match("src/a.rs")));
        assert_eq!((c.severity, c.category), (Severity::Error, Category::Bug));
    }

    #[test]
    fn mistakes_are_named() {
        for (text, needle) in [
            ("disable = [\"secret.token\"]", "cannot be turned off"),
            ("disable = [\"nope\"]", "unknown check"),
            ("surprise = 1", "surprise"),
            (
                "[[rule]]\nid = \"x\"\npattern = \"(\"\nmessage = \"m\"",
                "bad `pattern`",
            ),
            (
                "[[rule]]\nid = \"x\"\npattern = \"a\"\nmessage = \"m\"\nseverity = \"fatal\"",
                "severity",
            ),
            ("exclude = [\"[\"]", "bad glob"),
            (
                "[[rule]]\nid = \"a b\"\npattern = \"a\"\nmessage = \"m\"",
                "an id is",
            ),
        ] {
            let e = Rules::parse(text).expect_err(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}

//! Output formats for forges and tools: Souffleur's JSON, SARIF 2.1.0 (code scanning),
//! a GitHub pull-request review payload (`gh api …/pulls/N/reviews --input -`), GitLab
//! Code Quality JSON, reviewdog's rdjson, and a Markdown summary.
//!
//! Every format is rendered here from the grounded findings; nothing the model or the
//! diff says can change a format's shape.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Category, Finding, FindingSource, Report, Severity};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Souffleur's report: findings, summary, skipped files.
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// A GitHub pull-request review (body, event, comments with suggestions).
    Github,
    /// GitLab Code Quality report.
    Gitlab,
    /// reviewdog diagnostic format (rdjson).
    Rdjson,
    /// A Markdown summary with a table of findings.
    Markdown,
}

impl Format {
    /// Every format, in the order help texts list them.
    pub const ALL: [Format; 6] = [
        Format::Json,
        Format::Sarif,
        Format::Github,
        Format::Gitlab,
        Format::Rdjson,
        Format::Markdown,
    ];

    /// The format's name, as [`Format::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Sarif => "sarif",
            Format::Github => "github",
            Format::Gitlab => "gitlab",
            Format::Rdjson => "rdjson",
            Format::Markdown => "markdown",
        }
    }

    /// Parses a format name.
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Format::Json),
            "sarif" => Some(Format::Sarif),
            "github" => Some(Format::Github),
            "gitlab" => Some(Format::Gitlab),
            "rdjson" => Some(Format::Rdjson),
            "markdown" | "md" => Some(Format::Markdown),
            _ => None,
        }
    }

    /// The media type of the rendered output.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Markdown => "text/markdown; charset=utf-8",
            _ => "application/json",
        }
    }
}

/// The official schema URI of SARIF 2.1.0 (OASIS, errata 01).
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

/// Renders `report` as `format` (JSON formats pretty-printed, ending with a newline).
pub fn render(report: &Report, format: Format) -> String {
    let value = match format {
        Format::Json => json(report),
        Format::Sarif => sarif(report),
        Format::Github => github(report),
        Format::Gitlab => gitlab(report),
        Format::Rdjson => rdjson(report),
        Format::Markdown => return markdown(report),
    };
    let mut s = serde_json::to_string_pretty(&value).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// Souffleur's own report shape.
pub fn json(report: &Report) -> Value {
    json!({
        "tool": {"name": "souffleur", "version": env!("CARGO_PKG_VERSION")},
        "findings": report.findings,
        "summary": report.summary,
        "skipped": report.skipped,
    })
}

/// A stable fingerprint: path, rule, category, the quoted line and the message (not
/// the line number, so it survives code moving), plus an occurrence counter.
fn fingerprints(findings: &[Finding]) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    findings
        .iter()
        .map(|f| {
            let mut h = Sha256::new();
            for part in [
                f.path.as_str(),
                f.rule.as_str(),
                f.category.name(),
                f.quote.trim(),
                f.message.as_str(),
            ] {
                h.update(part.as_bytes());
                h.update([0u8]);
            }
            let base = hex::encode(h.finalize());
            let n = seen.entry(base.clone()).or_insert(0);
            *n += 1;
            if *n == 1 {
                base[..32].to_string()
            } else {
                let mut h = Sha256::new();
                h.update(base.as_bytes());
                h.update(n.to_le_bytes());
                hex::encode(h.finalize())[..32].to_string()
            }
        })
        .collect()
}

/// Percent-encodes a repository path for a URI reference (keeps `/`).
pub fn uri_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Info => "note",
    }
}

fn rule_description(rule: &str) -> &'static str {
    match rule {
        "secret.private-key" => "A private key added to the repository",
        "secret.token" => "A token with a known prefix added in plain text",
        "secret.credential" => "A hard-coded credential assigned to a credential-like name",
        "secret.url-password" => "A password written into a URL",
        "merge-conflict" => "A merge-conflict marker",
        "debug-output" => "Leftover debug output",
        "todo" => "A TODO/FIXME/HACK comment added",
        "large-function" => "A very large new function",
        "prompt-injection" => "Text addressed to an automated reviewer",
        "model" => "A defect found by the review model",
        _ => "A rule of the rules file",
    }
}

/// SARIF 2.1.0: one run, rules for the checks that fired, results with regions,
/// snippets, fingerprints and fixes for suggestions.
pub fn sarif(report: &Report) -> Value {
    let mut rule_index: BTreeMap<&str, (usize, Severity, Category)> = BTreeMap::new();
    let mut order: Vec<&str> = Vec::new();
    for f in &report.findings {
        if !rule_index.contains_key(f.rule.as_str()) {
            rule_index.insert(&f.rule, (order.len(), f.severity, f.category));
            order.push(&f.rule);
        }
    }
    let rules: Vec<Value> = order
        .iter()
        .map(|id| {
            let (_, severity, category) = rule_index[id];
            json!({
                "id": id,
                "name": id.replace(['.', '-'], "_"),
                "shortDescription": {"text": rule_description(id)},
                "defaultConfiguration": {"level": sarif_level(severity)},
                "properties": {"tags": [category.name()]},
            })
        })
        .collect();
    let prints = fingerprints(&report.findings);
    let results: Vec<Value> = report
        .findings
        .iter()
        .zip(&prints)
        .map(|(f, fp)| {
            let uri = uri_path(&f.path);
            let mut result = json!({
                "ruleId": f.rule,
                "ruleIndex": rule_index[f.rule.as_str()].0,
                "level": sarif_level(f.severity),
                "message": {"text": f.message},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                        "region": {
                            "startLine": f.line,
                            "endLine": f.end_line,
                            "snippet": {"text": f.quote},
                        },
                    },
                }],
                "partialFingerprints": {"souffleur/v1": fp},
                "properties": {
                    "category": f.category.name(),
                    "severity": f.severity.name(),
                    "confidence": f.confidence,
                    "source": match f.source { FindingSource::Model => "model", FindingSource::Static => "static" },
                },
            });
            if let Some(s) = &f.suggestion {
                result["fixes"] = json!([{
                    "description": {"text": "Suggested replacement"},
                    "artifactChanges": [{
                        "artifactLocation": {"uri": uri, "uriBaseId": "%SRCROOT%"},
                        "replacements": [{
                            "deletedRegion": {"startLine": f.line, "endLine": f.end_line},
                            "insertedContent": {"text": format!("{s}\n")},
                        }],
                    }],
                }]);
            }
            result
        })
        .collect();
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "souffleur",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "The repository root."}}},
            "results": results,
            "properties": {
                "summary": report.summary.text,
                "skipped": report.skipped,
            },
        }],
    })
}

/// A code fence longer than any run of backticks in `text`.
fn fence(text: &str) -> String {
    let mut longest = 0usize;
    let mut run = 0usize;
    for c in text.chars() {
        if c == '`' {
            run += 1;
            longest = longest.max(run);
        } else {
            run = 0;
        }
    }
    "`".repeat(longest.max(2) + 1)
}

fn badge(s: Severity) -> &'static str {
    match s {
        Severity::Error => "🔴 error",
        Severity::Warning => "🟠 warning",
        Severity::Info => "🔵 info",
    }
}

fn comment_body(f: &Finding) -> String {
    let mut body = format!(
        "**{}** · {} · `{}`\n\n{}",
        badge(f.severity),
        f.category.name(),
        f.rule,
        f.message
    );
    if let Some(s) = &f.suggestion {
        let fence = fence(s);
        body.push_str(&format!("\n\n{fence}suggestion\n{s}\n{fence}"));
    }
    body.push_str(&format!(
        "\n\n<sub>Souffleur review · {} · confidence {:.2}</sub>",
        match f.source {
            FindingSource::Model => "model",
            FindingSource::Static => "static check",
        },
        f.confidence
    ));
    body
}

/// A GitHub pull-request review: `POST /repos/{owner}/{repo}/pulls/{n}/reviews`.
pub fn github(report: &Report) -> Value {
    let comments: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut c = json!({
                "path": f.path,
                "line": f.end_line,
                "side": "RIGHT",
                "body": comment_body(f),
            });
            if f.end_line > f.line {
                c["start_line"] = json!(f.line);
                c["start_side"] = json!("RIGHT");
            }
            c
        })
        .collect();
    json!({
        "event": "COMMENT",
        "body": format!("**Souffleur review** — {}", report.summary.text),
        "comments": comments,
    })
}

/// GitLab Code Quality (Code Climate subset): severity `info|minor|major|critical|blocker`.
pub fn gitlab(report: &Report) -> Value {
    let prints = fingerprints(&report.findings);
    let issues: Vec<Value> = report
        .findings
        .iter()
        .zip(prints)
        .map(|(f, fp)| {
            json!({
                "type": "issue",
                "check_name": f.rule,
                "description": f.message,
                "categories": [match f.category {
                    Category::Bug | Category::Test => "Bug Risk",
                    Category::Security => "Security",
                    Category::Performance => "Performance",
                    Category::Maintainability => "Style",
                }],
                "severity": match f.severity {
                    Severity::Error => "critical",
                    Severity::Warning => "major",
                    Severity::Info => "info",
                },
                "fingerprint": fp,
                "location": {"path": f.path, "lines": {"begin": f.line, "end": f.end_line}},
            })
        })
        .collect();
    Value::Array(issues)
}

/// reviewdog's rdjson: `reviewdog -f=rdjson -reporter=github-pr-review`.
pub fn rdjson(report: &Report) -> Value {
    let diagnostics: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            let mut d = json!({
                "message": f.message,
                "location": {
                    "path": f.path,
                    "range": {"start": {"line": f.line}, "end": {"line": f.end_line}},
                },
                "severity": match f.severity {
                    Severity::Error => "ERROR",
                    Severity::Warning => "WARNING",
                    Severity::Info => "INFO",
                },
                "source": {"name": "souffleur"},
                "code": {"value": f.rule},
                "original_output": format!("{}:{}: {}", f.path, f.line, f.message),
            });
            if let Some(s) = &f.suggestion {
                d["suggestions"] = json!([{
                    "range": {
                        "start": {"line": f.line, "column": 1},
                        "end": {"line": f.end_line + 1, "column": 1},
                    },
                    "text": format!("{s}\n"),
                }]);
            }
            d
        })
        .collect();
    json!({
        "source": {"name": "souffleur"},
        "severity": if report.reaches(Severity::Error) { "ERROR" } else if report.reaches(Severity::Warning) { "WARNING" } else { "INFO" },
        "diagnostics": diagnostics,
    })
}

/// Escapes text for a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}

/// A Markdown summary: counts, a table of findings, skipped files.
pub fn markdown(report: &Report) -> String {
    let mut out = String::from("## Souffleur review\n\n");
    out.push_str(&report.summary.text);
    out.push_str("\n\n");
    if !report.findings.is_empty() {
        out.push_str("| severity | location | category | finding |\n|---|---|---|---|\n");
        for f in &report.findings {
            let loc = if f.end_line > f.line {
                format!("{}:{}-{}", f.path, f.line, f.end_line)
            } else {
                format!("{}:{}", f.path, f.line)
            };
            out.push_str(&format!(
                "| {} | `{}` | {} | {} <sub>({}{})</sub> |\n",
                badge(f.severity),
                cell(&loc).replace('`', "'"),
                f.category.name(),
                cell(&f.message),
                cell(&f.rule),
                match f.source {
                    FindingSource::Model => ", model",
                    FindingSource::Static => "",
                }
            ));
        }
        out.push('\n');
    }
    if !report.skipped.is_empty() {
        out.push_str("<details><summary>Skipped files</summary>\n\n");
        for s in &report.skipped {
            out.push_str(&format!(
                "- `{}` ({})\n",
                cell(&s.path).replace('`', "'"),
                s.reason
            ));
        }
        out.push_str("\n</details>\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Skipped, Summary};

    fn report() -> Report {
        Report {
            findings: vec![
                Finding {
                    path: "src/my app.py".into(),
                    line: 3,
                    end_line: 4,
                    severity: Severity::Error,
                    category: Category::Bug,
                    message: "Off by one | reads past the end".into(),
                    suggestion: Some("for i in range(n):\n    use(i)".into()),
                    source: FindingSource::Model,
                    confidence: 0.5,
                    rule: "model".into(),
                    quote: "for i in range(n + 1):".into(),
                    secret: None,
                },
                Finding {
                    path: "src/a.py".into(),
                    line: 7,
                    end_line: 7,
                    severity: Severity::Info,
                    category: Category::Maintainability,
                    message: "TODO added".into(),
                    suggestion: None,
                    source: FindingSource::Static,
                    confidence: 0.9,
                    rule: "todo".into(),
                    quote: "# TODO".into(),
                    secret: None,
                },
            ],
            summary: Summary {
                text: "2 findings.".into(),
                ..Summary::default()
            },
            skipped: vec![Skipped {
                path: "Cargo.lock".into(),
                reason: "lock".into(),
            }],
        }
    }

    #[test]
    fn sarif_has_rules_regions_fixes_and_encoded_uris() {
        let v = sarif(&report());
        assert_eq!(v["version"], "2.1.0");
        let run = &v["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().map(Vec::len),
            Some(2)
        );
        let r0 = &run["results"][0];
        assert_eq!(r0["level"], "error");
        assert_eq!(r0["ruleIndex"], 0);
        let loc = &r0["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "src/my%20app.py");
        assert_eq!(loc["region"]["startLine"], 3);
        assert_eq!(loc["region"]["endLine"], 4);
        assert!(
            r0["fixes"][0]["artifactChanges"][0]["replacements"][0]["insertedContent"]["text"]
                .as_str()
                .is_some_and(|t| t.ends_with("use(i)\n"))
        );
        assert_eq!(run["results"][1]["level"], "note");
        assert!(run["results"][1].get("fixes").is_none());
    }

    /// The official SARIF 2.1.0 schema (vendored in tests/schemas; see its README).
    pub(crate) fn sarif_validator() -> jsonschema::Validator {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/schemas/sarif-schema-2.1.0.json"
        );
        let text = std::fs::read_to_string(path).expect("vendored SARIF schema");
        let schema: Value = serde_json::from_str(&text).expect("schema is JSON");
        jsonschema::Validator::options()
            .with_draft(jsonschema::Draft::Draft4)
            .should_validate_formats(true)
            .build(&schema)
            .expect("schema compiles")
    }

    #[test]
    fn sarif_is_valid_against_the_official_schema() {
        let validator = sarif_validator();
        for r in [report(), Report::default()] {
            let v = sarif(&r);
            let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:#?}");
        }
        // The validator does reject what breaks the schema.
        let mut broken = sarif(&report());
        broken["runs"][0]["results"][0]["level"] = json!("fatal");
        assert!(!validator.is_valid(&broken));
        let mut broken = sarif(&report());
        broken["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
            json!(0);
        assert!(!validator.is_valid(&broken));
    }

    #[test]
    fn github_review_has_multiline_comments_and_suggestion_blocks() {
        let v = github(&report());
        assert_eq!(v["event"], "COMMENT");
        let c = &v["comments"][0];
        assert_eq!(
            (c["line"].as_u64(), c["start_line"].as_u64()),
            (Some(4), Some(3))
        );
        assert_eq!(c["side"], "RIGHT");
        let body = c["body"].as_str().unwrap_or("");
        assert!(
            body.contains("```suggestion\nfor i in range(n):\n    use(i)\n```"),
            "{body}"
        );
        assert!(v["comments"][1].get("start_line").is_none());
        // A suggestion containing a fence gets a longer one.
        assert_eq!(fence("a ``` b"), "````");
    }

    #[test]
    fn gitlab_rdjson_and_markdown() {
        let g = gitlab(&report());
        assert_eq!(g[0]["severity"], "critical");
        assert_eq!(g[1]["severity"], "info");
        assert_eq!(g[0]["location"]["lines"]["begin"], 3);
        assert_ne!(g[0]["fingerprint"], g[1]["fingerprint"]);
        let r = rdjson(&report());
        assert_eq!(r["diagnostics"][0]["severity"], "ERROR");
        assert_eq!(
            r["diagnostics"][0]["suggestions"][0]["range"]["end"]["line"],
            5
        );
        assert_eq!(r["severity"], "ERROR");
        let md = markdown(&report());
        assert!(md.contains("Off by one \\| reads past the end"), "{md}");
        assert!(md.contains("`src/my app.py:3-4`"));
        assert!(md.contains("- `Cargo.lock` (lock)"));
        assert_eq!(Format::parse("MD"), Some(Format::Markdown));
    }

    #[test]
    fn fingerprints_are_stable_and_unique() {
        let mut r = report();
        let a = fingerprints(&r.findings);
        r.findings[0].line += 10;
        r.findings[0].end_line += 10;
        assert_eq!(
            a,
            fingerprints(&r.findings),
            "line moves keep the fingerprint"
        );
        let dup = vec![r.findings[1].clone(), r.findings[1].clone()];
        let d = fingerprints(&dup);
        assert_ne!(d[0], d[1]);
    }
}

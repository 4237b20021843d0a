//! Secrets added in plain text: private keys, tokens with a known prefix, passwords in
//! URLs and credentials assigned to credential-like names (`secret.*`).

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use super::{Added, Hit, Kind, re};
use crate::{Category, Severity};

/// `secret.private-key`.
const PRIVATE_KEY: Kind = Kind::new(
    "secret.private-key",
    Severity::Error,
    Category::Security,
    0.99,
);
/// `secret.token`.
const TOKEN: Kind = Kind::new("secret.token", Severity::Error, Category::Security, 0.95);
/// `secret.url-password`.
const URL_PASSWORD: Kind = Kind::new(
    "secret.url-password",
    Severity::Error,
    Category::Security,
    0.85,
);
/// `secret.credential` outside tests.
const CREDENTIAL: Kind = Kind::new(
    "secret.credential",
    Severity::Error,
    Category::Security,
    0.8,
);
/// `secret.credential` in a test file.
const TEST_CREDENTIAL: Kind = Kind::new(
    "secret.credential",
    Severity::Warning,
    Category::Security,
    0.6,
);

/// At most one secret per added line: a private key, else a token, else a password in
/// a URL, else a credential (warning only in test files).
pub(super) fn hard_coded(added: &Added<'_>, test_file: bool) -> Vec<Hit> {
    added
        .lines
        .iter()
        .filter_map(|&(n, t)| {
            private_key(added, n, t)
                .or_else(|| token(n, t))
                .or_else(|| url_password(n, t))
                .or_else(|| credential(n, t, test_file))
        })
        .collect()
}

/// A private key block starting on line `n`; the hit spans to its `-----END` line.
fn private_key(added: &Added<'_>, n: u32, t: &str) -> Option<Hit> {
    let m = regex!(
        r"-----BEGIN (?:(?:RSA|DSA|EC|OPENSSH|PGP|ENCRYPTED|SSH2 ENCRYPTED) )?PRIVATE KEY(?: BLOCK)?-----"
    )
    .find(t)?;
    let end = added
        .lines
        .iter()
        .skip_while(|(k, _)| *k < n)
        .take_while(|(k, _)| added.numbers.contains(k))
        .find(|(_, x)| x.contains("-----END "))
        .map(|(k, _)| *k)
        .unwrap_or(n);
    let message = "A private key is added to the repository: remove it, rotate the key and load it from a secret store.";
    Some(Hit::new(PRIVATE_KEY, n, format!("{}…", &t[..m.end()]), message).through(end))
}

/// The first token of a known kind on line `n`.
fn token(n: u32, t: &str) -> Option<Hit> {
    token_patterns().iter().find_map(|(name, pattern)| {
        let m = pattern.find(t)?;
        let message = format!(
            "{name} added in plain text: revoke it and load it from the environment or a secret store."
        );
        Some(Hit::new(TOKEN, n, mask(t, m.start(), m.end()), message).about_secret(m.as_str()))
    })
}

/// A real-looking password inside a URL on line `n`.
fn url_password(n: u32, t: &str) -> Option<Hit> {
    let c =
        regex!(r#"\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@'"]+:([^\s/@'"]+)@[^\s/'"]+"#).captures(t)?;
    let pw = c.get(1)?;
    if placeholder(pw.as_str()) || pw.as_str().starts_with('$') || pw.as_str().len() < 4 {
        return None;
    }
    let message =
        "A password is written into a URL: take it from the environment or a secret store.";
    Some(
        Hit::new(URL_PASSWORD, n, mask(t, pw.start(), pw.end()), message).about_secret(pw.as_str()),
    )
}

/// A real-looking value assigned to a credential-like name on line `n`.
fn credential(n: u32, t: &str, test_file: bool) -> Option<Hit> {
    let (value_range, name, password_like) = credential_assignment(t)?;
    if benign_name(&name) {
        return None;
    }
    let value = &t[value_range.clone()];
    if !real_secret(value, password_like) {
        return None;
    }
    let kind = if test_file {
        TEST_CREDENTIAL
    } else {
        CREDENTIAL
    };
    let message = format!(
        "Hard-coded credential assigned to `{name}`: load it from the environment or a secret store."
    );
    let quote = mask(t, value_range.start, value_range.end);
    Some(Hit::new(kind, n, quote, message).about_secret(value))
}

/// Whether `value` looks like a real secret: any non-placeholder, non-word value for a
/// password, a long high-entropy one otherwise.
fn real_secret(value: &str, password_like: bool) -> bool {
    if password_like {
        value.len() >= 6 && !placeholder(value) && !regex!(r"^[A-Za-z_]+$").is_match(value)
            || (value.len() >= 6 && !placeholder(value) && entropy(value) >= 3.0)
    } else {
        !placeholder(value)
            && ((value.len() >= 16 && entropy(value) >= 3.5)
                || (value.len() >= 12
                    && entropy(value) >= 3.0
                    && value.chars().any(|c| c.is_ascii_digit())
                    && value.chars().any(|c| c.is_ascii_alphabetic())))
    }
}

/// Tokens recognised by their prefix: (name, pattern).
fn token_patterns() -> &'static [(&'static str, Regex)] {
    static CELL: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    CELL.get_or_init(|| {
        [
            (
                "AWS access key id",
                r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
            ),
            ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,255}\b"),
            (
                "GitHub fine-grained token",
                r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b",
            ),
            ("GitLab token", r"\bglpat-[A-Za-z0-9_\-]{20,}"),
            ("Slack token", r"\bxox[abprs]-[A-Za-z0-9\-]{10,}"),
            (
                "Slack webhook",
                r"https://hooks\.slack\.com/services/T[A-Za-z0-9_]+/B[A-Za-z0-9_]+/[A-Za-z0-9_]+",
            ),
            ("Stripe live key", r"\b[sr]k_live_[A-Za-z0-9]{20,}\b"),
            (
                "OpenAI/Anthropic API key",
                r"\bsk-(?:proj-|ant-[a-z0-9]+-)?[A-Za-z0-9_\-]{20,}",
            ),
            ("Google API key", r"\bAIza[0-9A-Za-z_\-]{35}"),
            ("npm token", r"\bnpm_[A-Za-z0-9]{36}\b"),
            ("PyPI token", r"\bpypi-AgEIcHlwaS5vcmc[A-Za-z0-9_\-]{50,}"),
            ("Hugging Face token", r"\bhf_[A-Za-z0-9]{34,}\b"),
            (
                "SendGrid key",
                r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b",
            ),
            ("Souffleur token", r"\bsfl_[0-9a-f]{32,}\b"),
            (
                "JSON web token",
                r"\beyJ[A-Za-z0-9_\-]{10,}\.eyJ[A-Za-z0-9_\-]{10,}\.[A-Za-z0-9_\-]{10,}",
            ),
        ]
        .into_iter()
        .map(|(n, p)| (n, re(p)))
        .collect()
    })
}

/// Shannon entropy of `s` in bits per character.
pub fn entropy(s: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    let mut n = 0usize;
    for c in s.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    counts
        .values()
        .map(|&c| {
            let p = c as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// Values that are obviously not real secrets.
fn placeholder(value: &str) -> bool {
    let lower = value.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "${",
        "{{",
        "<",
        "%(",
        "%s",
        "xxx",
        "***",
        "...",
        "changeme",
        "change_me",
        "change-me",
        "example",
        "dummy",
        "placeholder",
        "your_",
        "your-",
        "yourpass",
        "redacted",
        "replace",
        "todo",
        "fixme",
        "fake",
        "sample",
        "foobar",
        "none",
        "null",
        "undefined",
        "process.env",
        "os.environ",
        "getenv",
        "env(",
        "secret_key_here",
        "password",
        "secret",
        "token",
        "******",
    ];
    if WORDS.iter().any(|w| lower.contains(w)) {
        return true;
    }
    if value.contains(char::is_whitespace) {
        return true;
    }
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with('/') {
        return true;
    }
    let mut chars = value.chars();
    let first = chars.next();
    chars.all(|c| Some(c) == first)
}

/// Names that contain a credential word but hold no secret (`token_type`, `password_field`).
fn benign_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    const SUFFIXES: &[&str] = &[
        "_url",
        "_uri",
        "_path",
        "_file",
        "_name",
        "_env",
        "_var",
        "_header",
        "_length",
        "_len",
        "_min",
        "_max",
        "_regex",
        "_pattern",
        "_prompt",
        "_label",
        "_message",
        "_msg",
        "_id",
        "_type",
        "_field",
        "_hash",
        "_policy",
        "_endpoint",
        "_dir",
        "_key_name",
        "_format",
        "_count",
        "_size",
        "_ttl",
        "_timeout",
        "_expiry",
        "_expires",
        "_mode",
        "_kind",
        "_prefix",
        "url",
        "uri",
        "path",
        "name",
        "type",
        "field",
        "len",
        "length",
    ];
    SUFFIXES.iter().any(|s| lower.ends_with(s))
}

/// Whether `path` is a test file or lies in a test or fixture directory.
pub(super) fn is_test_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    lower.split('/').any(|part| {
        matches!(
            part,
            "test" | "tests" | "testing" | "spec" | "specs" | "fixtures" | "testdata" | "__tests__"
        )
    }) || {
        let name = lower.rsplit('/').next().unwrap_or(&lower);
        name.starts_with("test_")
            || name.contains("_test.")
            || name.contains(".test.")
            || name.contains(".spec.")
            || name.ends_with("_spec.rb")
    }
}

/// `line` with byte range `start..end` masked (first 4 characters kept).
fn mask(line: &str, start: usize, end: usize) -> String {
    let secret = line.get(start..end).unwrap_or("");
    let keep: String = secret.chars().take(4).collect();
    format!(
        "{}{keep}…(redacted){}",
        line.get(..start).unwrap_or(""),
        line.get(end..).unwrap_or("")
    )
}

/// A string literal (or an unquoted env/YAML value) assigned to a credential-like
/// name: (byte range of the value, the name, the name is password-like).
fn credential_assignment(line: &str) -> Option<(Range<usize>, String, bool)> {
    let quoted = regex!(
        r#"(?i)\b([A-Za-z0-9_.\-]*(?:password|passwd|passphrase|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key|auth[_\-]?key|credentials?|client[_\-]?secret|signing[_\-]?key)[A-Za-z0-9_]*)["']?\]?\s*(?::=|=>|=|:|,)\s*(?:[bruf]{0,2})(["'`])([^"'`]{6,})["'`]"#
    );
    let bare = regex!(
        r#"(?i)^\s*(?:export\s+|-\s+)?([A-Za-z0-9_.\-]*(?:password|passwd|pwd|secret|token|api[_\-]?key|apikey|access[_\-]?key|private[_\-]?key)[A-Za-z0-9_.\-]*)\s*[=:]\s*([^\s"'#{}\[\]$`]{8,})\s*$"#
    );
    let (name, value) = if let Some(c) = quoted.captures(line) {
        (c.get(1)?, c.get(3)?)
    } else if let Some(c) = bare.captures(line) {
        (c.get(1)?, c.get(2)?)
    } else {
        return None;
    };
    let n = name.as_str().to_ascii_lowercase();
    let password_like = n.contains("pass") || n.contains("pwd");
    Some((value.range(), name.as_str().to_string(), password_like))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_bits_per_char() {
        assert_eq!(entropy("aaaa"), 0.0);
        assert!((entropy("abcd") - 2.0).abs() < 1e-9);
    }
}

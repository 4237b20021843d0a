//! SQL statements built from strings (`sql-concat`).

use indexer::Language;

use super::{Hit, Kind, is_comment};
use crate::{Category, Severity};

/// `sql-concat`.
const SQL_CONCAT: Kind = Kind::new("sql-concat", Severity::Warning, Category::Security, 0.75);

/// Code lines (not comments) that hold an SQL statement in a string literal and build
/// a string by concatenation or formatting.
pub(super) fn sql_concatenation(added: &[(u32, &str)], lang: Option<Language>) -> Vec<Hit> {
    let sql = regex!(
        r#"["'`]\s*(?:SELECT\s.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+[\w.`"]+\s+SET\b|DELETE\s+FROM\b|select\s.*\bfrom\s+[\w.]+\s+where\b|insert\s+into\s+[\w.]+\s*[(v]|update\s+[\w.]+\s+set\s+\w+\s*=|delete\s+from\s+[\w.]+\s+where\b)"#
    );
    let built = regex!(
        r#"["'`]\s*\+\s*[\w(]|[\w)\]]\s*\+\s*["'`]|\bf["'][^"']*\{|["']\s*%\s*[\w(]|["']\s*\.format\(|\$\{|\bformat!\(|\bSprintf\(|\bString\.format\(|["']\s*\.\s*\$\w"#
    );
    added
        .iter()
        .filter(|(_, t)| !is_comment(t, lang) && sql.is_match(t) && built.is_match(t))
        .map(|&(n, t)| {
            let message = "SQL built by string concatenation or formatting: pass values as query parameters to avoid SQL injection.";
            Hit::new(SQL_CONCAT, n, t, message)
        })
        .collect()
}

//! The rules file's own patterns (`rule.<id>`).

use super::{Hit, Kind};
use crate::rules::Rules;

/// Added lines of the file at `path` that match a custom rule applying to it, rule by
/// rule.
pub(super) fn rule_patterns(rules: &Rules, path: &str, added: &[(u32, &str)]) -> Vec<Hit> {
    let mut hits = Vec::new();
    for rule in &rules.custom {
        if rule.paths.as_ref().is_some_and(|p| !p.is_match(path)) {
            continue;
        }
        let kind = Kind {
            rule: format!("rule.{}", rule.id).into(),
            severity: rule.severity,
            category: rule.category,
            confidence: 0.9,
        };
        for &(n, t) in added {
            if rule.pattern.is_match(t) {
                hits.push(Hit::new(kind.clone(), n, t, rule.message.clone()));
            }
        }
    }
    hits
}

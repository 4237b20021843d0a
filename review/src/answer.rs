//! Reading the model's answer: the JSON shape the prompt asks for
//! (`{"findings": [{"line", "code", "severity", "category", "message", "suggestion"}]}`),
//! read tolerantly, because small models break JSON in small ways: a fenced code
//! block around it, prose before or after, a list without its object, a truncated
//! answer (the findings completed before the cut are kept), field names in another
//! case, line numbers as strings (`"+12"`, `"12-14"`). An answer with no JSON finding in
//! it is read as the older `LINE|SEVERITY|CATEGORY|MESSAGE` lines ([`ground::parse_output`]).

use serde_json::{Map, Value};

use super::ground::{self, RawFinding, category_of, line_of, severity_of};
use super::{Category, Severity};

/// Names a finding's message goes by in small models' answers.
const MESSAGE_KEYS: &[&str] = &["message", "description", "issue"];

/// Whether `o` has a message field (a finding, not a wrapper around findings).
fn has_message(o: &Map<String, Value>) -> bool {
    o.keys()
        .any(|k| MESSAGE_KEYS.iter().any(|m| k.eq_ignore_ascii_case(m)))
}

/// The findings in `text`: JSON objects when there are any, else pipe lines.
pub fn parse(text: &str) -> Vec<RawFinding> {
    let objects = json_objects(text);
    if objects.is_empty() {
        return ground::parse_output(text);
    }
    objects.iter().filter_map(finding).collect()
}

/// The finding objects of an answer: the `findings` list of the first complete JSON
/// value, or else every complete `{…}` object found at any depth that has a message.
fn json_objects(text: &str) -> Vec<Map<String, Value>> {
    if let Some(start) = text.find(['{', '[']) {
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(value)) = values.next() {
            let list = match value {
                Value::Array(items) => Some(items),
                Value::Object(mut o) => match lookup(&mut o, "findings") {
                    Some(Value::Array(items)) => Some(items),
                    Some(_) => Some(Vec::new()),
                    None if has_message(&o) => Some(vec![Value::Object(o)]),
                    None => None,
                },
                _ => None,
            };
            if let Some(items) = list {
                return items
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Object(o) => Some(o),
                        _ => None,
                    })
                    .collect();
            }
        }
    }
    balanced_objects(text)
        .into_iter()
        .filter_map(|s| match serde_json::from_str::<Value>(s) {
            Ok(Value::Object(o)) if has_message(&o) => Some(o),
            _ => None,
        })
        .collect()
}

/// Every complete `{…}` span of `text`, at any depth (braces inside JSON strings do
/// not count); an object cut off by the end of the answer is not returned. A wrapper
/// such as `{"findings": …}` is among them but has no `message` of its own.
fn balanced_objects(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut opens: Vec<usize> = Vec::new();
    for (i, c) in structure(text) {
        match c {
            '{' => opens.push(i),
            '}' => {
                if let Some(start) = opens.pop() {
                    out.push(&text[start..=i]);
                }
            }
            _ => {}
        }
    }
    out
}

/// Whether `text` holds a complete JSON object or list from its first `{` or `[` on
/// (brackets inside strings do not count): the answer is finished.
pub fn json_closed(text: &str) -> bool {
    let Some(start) = text.find(['{', '[']) else {
        return false;
    };
    let mut depth = 0usize;
    for (_, c) in structure(&text[start..]) {
        if matches!(c, '{' | '[') {
            depth += 1;
        } else {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return true;
            }
        }
    }
    false
}

/// The brackets and braces of `text` that are JSON structure (outside strings, where
/// quotes and backslash escapes are followed), with their byte offsets.
fn structure(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let (mut in_string, mut escaped) = (false, false);
    text.char_indices().filter(move |&(_, c)| {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            return false;
        }
        in_string = c == '"';
        matches!(c, '{' | '}' | '[' | ']')
    })
}

/// The value of `key` in `o`, with the key's case ignored (and removed from `o`).
fn lookup(o: &mut Map<String, Value>, key: &str) -> Option<Value> {
    let name = o.keys().find(|k| k.eq_ignore_ascii_case(key))?.clone();
    o.remove(&name)
}

/// A string field, or a number written as one.
fn text_of(o: &mut Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match lookup(o, k)? {
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// One finding object as a [`RawFinding`]; `None` without a readable message.
fn finding(o: &Map<String, Value>) -> Option<RawFinding> {
    let mut o = o.clone();
    let (line, end_line) = match text_of(&mut o, &["line", "lines", "line_number"]) {
        Some(l) => line_of(&l),
        None => (None, None),
    };
    let end_line = end_line.or_else(|| {
        text_of(&mut o, &["end_line"])
            .and_then(|l| line_of(&l).0)
            .filter(|e| line.is_some_and(|l| *e >= l))
    });
    let severity = text_of(&mut o, &["severity", "level"]);
    let category = text_of(&mut o, &["category", "type", "kind"]);
    let message = text_of(&mut o, MESSAGE_KEYS)?.trim().to_string();
    if message.split_whitespace().count() < 3 {
        return None;
    }
    let code = text_of(&mut o, &["code", "quote", "line_code"])
        .map(|c| c.trim().trim_matches('`').to_string())
        .filter(|c| !c.trim().is_empty());
    let suggestion = text_of(&mut o, &["suggestion", "fix", "replacement"])
        .map(|s| s.trim_matches('`').to_string())
        .filter(|s| !s.trim().is_empty());
    let severity = severity.as_deref().and_then(severity_of);
    let category = category.as_deref().and_then(category_of);
    Some(RawFinding {
        line,
        end_line,
        severity: severity.unwrap_or(Severity::Warning),
        category: category.unwrap_or(Category::Bug),
        message,
        suggestion,
        code,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_asked_shape() {
        let raw = parse(
            r#"{"findings": [{"line": 12, "code": "for i in range(n + 1):", "severity": "error", "category": "bug", "message": "The loop reads one past the end."}]}"#,
        );
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].line, Some(12));
        assert_eq!(raw[0].code.as_deref(), Some("for i in range(n + 1):"));
        assert_eq!(
            (raw[0].severity, raw[0].category),
            (Severity::Error, Category::Bug)
        );
        assert!(parse(r#"{"findings": []}"#).is_empty());
    }

    #[test]
    fn tolerates_fences_prose_case_strings_and_a_bare_list() {
        let raw = parse(
            "Sure! Here is the review:\n```json\n[{\"Line\": \"+7-9\", \"Severity\": \"HIGH\", \"Category\": \"Security issue\", \"Message\": \"The query is built from user input.\", \"Fix\": \"`cur.execute(q, (k,))`\"}]\n```\nHope this helps.",
        );
        assert_eq!(raw.len(), 1, "{raw:?}");
        assert_eq!((raw[0].line, raw[0].end_line), (Some(7), Some(9)));
        assert_eq!(raw[0].severity, Severity::Error);
        assert_eq!(raw[0].category, Category::Security);
        assert_eq!(raw[0].suggestion.as_deref(), Some("cur.execute(q, (k,))"));
    }

    #[test]
    fn keeps_the_complete_findings_of_a_truncated_answer() {
        let raw = parse(
            r#"{"findings": [{"line": 3, "code": "x = a[i]", "message": "No bounds check on i here."}, {"line": 4, "code": "y = {\"}\": 1}", "message": "Braces in strings are text."}, {"line": 9, "message": "This one was cut of"#,
        );
        assert_eq!(raw.len(), 2, "{raw:?}");
        assert_eq!(raw[1].code.as_deref(), Some(r#"y = {"}": 1}"#));
        // Defaults when severity and category are missing or unreadable.
        assert_eq!(
            (raw[0].severity, raw[0].category),
            (Severity::Warning, Category::Bug)
        );
    }

    #[test]
    fn messages_of_fewer_than_three_words_and_other_json_are_not_findings() {
        assert!(parse(r#"{"findings": [{"line": 3, "message": "bad"}]}"#).is_empty());
        assert!(parse(r#"{"answer": "no bugs found in this change"}"#).is_empty());
        assert!(parse("NONE").is_empty());
    }

    #[test]
    fn an_answer_is_closed_when_its_json_value_is() {
        assert!(!json_closed(r#"{"findings": ["#));
        assert!(!json_closed(r#"{"findings": [{"message": "a ] in text"}"#));
        assert!(json_closed(r#"{"findings": [{"message": "a ] in text"}]}"#));
        assert!(json_closed(r#"{"findings": []} and then prose"#));
        assert!(!json_closed("Yes"));
    }

    #[test]
    fn pipe_lines_still_read_when_there_is_no_json() {
        let raw = parse("11|error|bug|Off-by-one: the loop reads past the end\n");
        assert_eq!(raw.len(), 1);
        assert_eq!(raw[0].code, None);
    }
}

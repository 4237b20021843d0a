//! The previous keystroke's completion as a hint for the next one.
//!
//! While a developer types what the editor suggested, each new completion is most
//! often the rest of the previous one. The server keeps, per caller and file, the
//! model's raw output for the latest request; when the next request's prefix is the
//! old one plus a few typed characters (or minus a few erased ones) and its suffix
//! is unchanged, what is left of that output becomes the new request's hint
//! ([`engine::GenerationRequest::hint`]): drafted and verified in one pass instead of
//! decoded token by token. It only saves time; the output stays the model's greedy
//! output. Nothing is written anywhere: the entries live in memory, a bounded number
//! of them.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::completion::service::{head_chars, tail_chars};

/// Characters of the prefix (before the edit) that must agree.
const CONTEXT_CHARS: usize = 256;
/// Most characters typed or erased between two requests that still match.
const MAX_EDIT_CHARS: usize = 32;
/// Characters of the suffix that must agree.
const SUFFIX_CHARS: usize = 256;

/// One caller's latest completion in one file.
struct Recent {
    /// The end of the prefix it was made for (`CONTEXT_CHARS + MAX_EDIT_CHARS`).
    prefix_tail: String,
    /// The start of its suffix.
    suffix_head: String,
    /// The model's raw output.
    raw: String,
    /// When it was stored (for eviction).
    stamp: u64,
}

/// The entries by (caller, file), and the clock that stamps them.
type Entries = (HashMap<(String, String), Recent>, u64);

/// The latest raw completion per (caller, file), at most `capacity` of them.
pub struct RecentCompletions {
    entries: Mutex<Entries>,
    capacity: usize,
}

impl RecentCompletions {
    /// An empty store for at most `capacity` (caller, file) pairs.
    pub fn new(capacity: usize) -> Self {
        Self {
            entries: Mutex::new((HashMap::new(), 0)),
            capacity: capacity.max(1),
        }
    }

    /// Records `raw`, the model's output for `prefix` and `suffix` in `file`.
    pub fn remember(&self, caller: &str, file: &str, prefix: &str, suffix: &str, raw: &str) {
        let Ok(mut guard) = self.entries.lock() else {
            return;
        };
        let (map, clock) = &mut *guard;
        *clock += 1;
        let key = (caller.to_string(), file.to_string());
        if map.len() >= self.capacity
            && !map.contains_key(&key)
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, r)| r.stamp)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            key,
            Recent {
                prefix_tail: tail_chars(prefix, CONTEXT_CHARS + MAX_EDIT_CHARS).to_string(),
                suffix_head: head_chars(suffix, SUFFIX_CHARS).to_string(),
                raw: raw.to_string(),
                stamp: *clock,
            },
        );
    }

    /// The text the completion for `prefix` and `suffix` in `file` is expected to
    /// start with, from the caller's previous completion there.
    pub fn hint(&self, caller: &str, file: &str, prefix: &str, suffix: &str) -> Option<String> {
        let guard = self.entries.lock().ok()?;
        let recent = guard.0.get(&(caller.to_string(), file.to_string()))?;
        if head_chars(suffix, SUFFIX_CHARS) != recent.suffix_head {
            return None;
        }
        continuation(&recent.prefix_tail, &recent.raw, prefix)
    }
}

/// What is left of `raw` (the completion after `old`, the end of the previous
/// prefix) at the end of `new`: the rest of `raw` after the characters typed since,
/// or the erased characters followed by `raw`. `None` when `new` is neither, or the
/// typed characters are not the start of `raw`, or nothing is left.
fn continuation(old: &str, raw: &str, new: &str) -> Option<String> {
    let same = |a: &str, b: &str| tail_chars(a, CONTEXT_CHARS) == tail_chars(b, CONTEXT_CHARS);
    for typed in 0..=MAX_EDIT_CHARS {
        let Some((before, chars)) = split_last_chars(new, typed) else {
            break;
        };
        if same(before, old) {
            return raw
                .strip_prefix(chars)
                .filter(|rest| !rest.is_empty())
                .map(str::to_string);
        }
    }
    for erased in 1..=MAX_EDIT_CHARS {
        let Some((before, chars)) = split_last_chars(old, erased) else {
            break;
        };
        if same(new, before) {
            return Some(format!("{chars}{raw}"));
        }
    }
    None
}

/// `text` split before its last `n` characters (`None` if it has fewer).
fn split_last_chars(text: &str, n: usize) -> Option<(&str, &str)> {
    if n == 0 {
        return Some((text, ""));
    }
    let (i, _) = text.char_indices().rev().nth(n - 1)?;
    Some(text.split_at(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "fn main() {\n    let total = items.iter().map(|x| x.price).sum::<u32>();\n";

    fn prefix(end: usize) -> &'static str {
        &FILE[..end]
    }

    #[test]
    fn typing_what_was_suggested_leaves_the_rest_as_the_hint() {
        let store = RecentCompletions::new(8);
        let at = FILE.find("items").expect("in file");
        store.remember("ann", "a.rs", prefix(at), ";\n}\n", "items.iter().sum()");
        let hint = store.hint("ann", "a.rs", prefix(at + 3), ";\n}\n");
        assert_eq!(hint.as_deref(), Some("ms.iter().sum()"));
        // The same request again: all of it.
        let hint = store.hint("ann", "a.rs", prefix(at), ";\n}\n");
        assert_eq!(hint.as_deref(), Some("items.iter().sum()"));
    }

    #[test]
    fn erased_characters_come_before_the_old_completion() {
        let store = RecentCompletions::new(8);
        let at = FILE.find("items").expect("in file");
        store.remember("ann", "a.rs", prefix(at), "", "items");
        let hint = store.hint("ann", "a.rs", prefix(at - 2), "");
        assert_eq!(hint.as_deref(), Some("= items"));
    }

    #[test]
    fn no_hint_when_the_typing_left_the_suggestion_or_the_place_changed() {
        let store = RecentCompletions::new(8);
        let at = FILE.find("items").expect("in file");
        store.remember("ann", "a.rs", prefix(at), "", "values.len()");
        // Typed "ite", not "val".
        assert_eq!(store.hint("ann", "a.rs", prefix(at + 3), ""), None);
        // Typed all of it: nothing left.
        store.remember("ann", "a.rs", prefix(at), "", "items");
        assert_eq!(store.hint("ann", "a.rs", prefix(at + 5), ""), None);
        // Another suffix, another file, another caller, a jump elsewhere.
        store.remember("ann", "a.rs", prefix(at), "", "items.iter()");
        assert_eq!(store.hint("ann", "a.rs", prefix(at + 1), "}"), None);
        assert_eq!(store.hint("ann", "b.rs", prefix(at + 1), ""), None);
        assert_eq!(store.hint("bob", "a.rs", prefix(at + 1), ""), None);
        assert_eq!(
            store.hint("ann", "a.rs", "fn main() {\n    let count = ", ""),
            None
        );
    }

    #[test]
    fn a_sliding_prefix_window_still_matches() {
        // Editors send the last N characters: both ends of the window move.
        let long: String = (0..200).map(|i| format!("let v{i} = {i};\n")).collect();
        let store = RecentCompletions::new(8);
        let end = long.len() - 10;
        store.remember("ann", "a.rs", &long[100..end], "", &long[end..]);
        let hint = store.hint("ann", "a.rs", &long[104..end + 4], "");
        assert_eq!(hint.as_deref(), Some(&long[end + 4..]));
    }

    #[test]
    fn the_store_keeps_at_most_its_capacity_dropping_the_oldest() {
        let store = RecentCompletions::new(2);
        for file in ["a.rs", "b.rs", "c.rs"] {
            store.remember("ann", file, "x = ", "", "1;");
        }
        assert_eq!(store.hint("ann", "a.rs", "x = ", ""), None);
        assert_eq!(store.hint("ann", "b.rs", "x = ", "").as_deref(), Some("1;"));
        assert_eq!(store.hint("ann", "c.rs", "x = ", "").as_deref(), Some("1;"));
    }
}

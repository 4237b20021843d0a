//! Acceptance telemetry: which completions were accepted or dismissed.
//!
//! Editors report through the custom notifications `souffleur/accepted` and
//! `souffleur/dismissed` (params `{"completion_id", "choice_index"}`), or through
//! `workspace/executeCommand` with the commands `souffleur.accepted` /
//! `souffleur.dismissed` — every item the adapter returns carries the `accepted` command,
//! so clients that run an item's command after inserting it report acceptance by
//! themselves. The adapter forwards them to `POST /v1/events`; only ids travel, never code.

use serde::Deserialize;
use serde_json::Value;

use crate::client::EventKind;

/// Notification sent by an editor when the user accepted a completion.
pub const ACCEPTED_NOTIFICATION: &str = "souffleur/accepted";
/// Notification sent by an editor when the user dismissed a completion.
pub const DISMISSED_NOTIFICATION: &str = "souffleur/dismissed";
/// Command run by an editor when the user accepted a completion.
pub const ACCEPTED_COMMAND: &str = "souffleur.accepted";
/// Command run by an editor when the user dismissed a completion.
pub const DISMISSED_COMMAND: &str = "souffleur.dismissed";

/// Which completion an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct EventParams {
    /// The id the server gave the completion (`cmpl-...`).
    pub completion_id: String,
    /// Which of its choices.
    #[serde(default)]
    pub choice_index: u32,
}

/// The event kind of a command name, if it is one of ours.
pub fn command_kind(command: &str) -> Option<EventKind> {
    match command {
        ACCEPTED_COMMAND => Some(EventKind::Select),
        DISMISSED_COMMAND => Some(EventKind::Dismiss),
        _ => None,
    }
}

/// Reads a command's arguments: `[{"completion_id", "choice_index"}]` or
/// `["cmpl-...", 0]`.
pub fn command_params(arguments: &[Value]) -> Option<EventParams> {
    match arguments {
        [object @ Value::Object(_), ..] => serde_json::from_value(object.clone()).ok(),
        [Value::String(id), rest @ ..] => Some(EventParams {
            completion_id: id.clone(),
            choice_index: rest
                .first()
                .and_then(Value::as_u64)
                .and_then(|i| u32::try_from(i).ok())
                .unwrap_or(0),
        }),
        _ => None,
    }
    .filter(|p| !p.completion_id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn both_argument_shapes() {
        let want = Some(EventParams {
            completion_id: "cmpl-7".into(),
            choice_index: 1,
        });
        assert_eq!(
            command_params(&[json!({"completion_id": "cmpl-7", "choice_index": 1})]),
            want
        );
        assert_eq!(command_params(&[json!("cmpl-7"), json!(1)]), want);
        assert_eq!(
            command_params(&[json!("cmpl-7")]).map(|p| p.choice_index),
            Some(0)
        );
        assert_eq!(command_params(&[]), None);
        assert_eq!(command_params(&[json!(5)]), None);
        assert_eq!(command_params(&[json!({"completion_id": ""})]), None);
        assert_eq!(command_kind(ACCEPTED_COMMAND), Some(EventKind::Select));
        assert_eq!(command_kind("other"), None);
    }
}

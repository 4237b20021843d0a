//! Which fields of an OpenAI request this server reads, which it may safely ignore,
//! and which it must refuse: a client is never told "200" for a parameter that had no
//! effect.
//!
//! Every top-level field of a request is checked before the request is read:
//! - fields the endpoint implements are read by its request type;
//! - fields that change nothing in the answer (end-user ids, metadata for OpenAI's own
//!   dashboards) are accepted and ignored: [`HARMLESS`];
//! - fields we do not implement are accepted only with the value that means "off"
//!   (`logprobs: false`, `logit_bias: {}`, `functions: []`, …),
//!   which some clients send on every request; any other value is a 422 naming the
//!   field;
//! - a field nobody defines is a 422 naming it, as OpenAI answers.
//!
//! `null` counts as absent everywhere, as OpenAI treats it.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// Fields accepted and ignored: they describe the caller or ask OpenAI's platform
/// to keep or bill the request, and change nothing in the tokens generated.
pub const HARMLESS: &[&str] = &[
    "user",
    "metadata",
    "store",
    "service_tier",
    "safety_identifier",
    "prompt_cache_key",
];

/// Which endpoint a request body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/completions`.
    Legacy,
}

/// Whether `endpoint` implements the field `name` (its request type reads it).
fn implemented(endpoint: Endpoint, name: &str) -> bool {
    const COMMON: &[&str] = &[
        "model",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "stream",
        "stream_options",
        "n",
        "presence_penalty",
        "frequency_penalty",
        "repetition_penalty",
        "speculation",
    ];
    let own: &[&str] = match endpoint {
        Endpoint::Chat => &[
            "messages",
            "tools",
            "tool_choice",
            "parallel_tool_calls",
            "response_format",
            "logprobs",
            "top_logprobs",
        ],
        // `echo` is read: only `false` is accepted, with its own message.
        Endpoint::Legacy => &["prompt", "suffix", "echo", "logprobs"],
    };
    COMMON.contains(&name) || own.contains(&name)
}

/// Whether `value` of the not-implemented field `name` means "feature off" for
/// `endpoint`; `None` when the field is not a known OpenAI parameter there.
fn is_off(endpoint: Endpoint, name: &str, value: &Value) -> Option<bool> {
    let empty = || match value {
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    };
    let off = match (endpoint, name) {
        (_, "logit_bias") => empty(),
        (Endpoint::Legacy, "best_of") => value.as_u64() == Some(1),
        // The deprecated forms of `tools` and `tool_choice`.
        (Endpoint::Chat, "functions") => empty(),
        (Endpoint::Chat, "function_call") => matches!(value.as_str(), Some("auto" | "none")),
        (Endpoint::Chat, "modalities") => value
            .as_array()
            .is_some_and(|a| a == &[Value::from("text")]),
        (
            Endpoint::Chat,
            "audio" | "prediction" | "reasoning_effort" | "web_search_options" | "verbosity",
        ) => false,
        _ => return None,
    };
    Some(off)
}

/// Checks every top-level field of a request `body` for `endpoint`: `Ok` when each
/// one is implemented, harmless, `null`, or a not-implemented field set to "off".
pub fn check(endpoint: Endpoint, body: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in body {
        if value.is_null() || implemented(endpoint, name) || HARMLESS.contains(&name.as_str()) {
            continue;
        }
        match is_off(endpoint, name, value) {
            Some(true) => {}
            Some(false) => {
                return Err(ApiError::unprocessable(format!(
                    "`{name}` is not supported by this server (only its default, or leaving it out, is accepted)"
                ))
                .with_param(name));
            }
            None => {
                return Err(
                    ApiError::unprocessable(format!("unknown field `{name}`")).with_param(name)
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(endpoint: Endpoint, body: Value) -> Result<(), ApiError> {
        check(endpoint, body.as_object().expect("an object"))
    }

    #[test]
    fn implemented_harmless_and_null_fields_pass() {
        let body = json!({
            "model": "m", "messages": [], "temperature": 0.2, "user": "u-1",
            "metadata": {"team": "a"}, "tools": null, "logprobs": null, "presence_penalty": 1,
        });
        assert!(run(Endpoint::Chat, body).is_ok());
        let body = json!({"prompt": "x", "suffix": "y", "store": false, "best_of": 1});
        assert!(run(Endpoint::Legacy, body).is_ok());
    }

    #[test]
    fn features_that_are_off_pass() {
        let body = json!({
            "messages": [], "logit_bias": {}, "top_logprobs": 0, "logprobs": false, "functions": [], "function_call": "none",
            "modalities": ["text"],
        });
        assert!(run(Endpoint::Chat, body).is_ok());
    }

    #[test]
    fn features_that_are_on_are_refused_by_name() {
        let cases = [
            (
                Endpoint::Chat,
                json!({"function_call": {"name": "f"}}),
                "function_call",
            ),
            (
                Endpoint::Chat,
                json!({"functions": [{"name": "f"}]}),
                "functions",
            ),
            (
                Endpoint::Chat,
                json!({"logit_bias": {"42": 5}}),
                "logit_bias",
            ),
            (
                Endpoint::Chat,
                json!({"reasoning_effort": "low"}),
                "reasoning_effort",
            ),
            (Endpoint::Legacy, json!({"best_of": 3}), "best_of"),
            // Chat-only parameters are not parameters of legacy completions.
            (Endpoint::Legacy, json!({"tools": []}), "tools"),
            (Endpoint::Chat, json!({"suffix": "x"}), "suffix"),
            (Endpoint::Chat, json!({"temperture": 0.1}), "temperture"),
        ];
        for (endpoint, body, field) in cases {
            let err = run(endpoint, body.clone()).expect_err(&body.to_string());
            assert_eq!(err.status.as_u16(), 422, "{body}");
            assert!(
                err.message.contains(&format!("`{field}`")),
                "{}",
                err.message
            );
            assert_eq!(err.param.as_deref(), Some(field));
        }
    }
}

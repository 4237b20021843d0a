//! Tabby's `v1beta` endpoints that Tabby's own clients call besides completions, answered
//! the way a Tabby server does so that `tabby-agent` (and the editor plugins built on it)
//! work against Souffleur unchanged.
//!
//! * `GET /v1beta/server_setting` → `{"disable_client_side_telemetry": true}`.
//!   tabby-agent asks for it after every successful `/v1/health` and, on `true`, stops
//!   posting anonymous usage events to its vendor's servers (and remembers that in
//!   `~/.tabby-client/agent/data.json` for its next start). Without this endpoint (404) it
//!   keeps sending them. No token is needed: the answer is a constant with nothing secret
//!   in it, and a client whose token is missing or wrong must be told as well (Tabby's own
//!   server serves it outside its authentication, too).
//! * `GET /v1beta/models` → `{"completion": [ids], "chat": [ids]}`, Tabby's shape: the
//!   models a client may name for code completion and for chat. Souffleur serves one model
//!   for both. Like `/v1/models`, it needs a token (unless the server runs `--local`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::error::ApiError;
use super::state::{AppState, Caller};

/// The body of `GET /v1beta/server_setting` (Tabby's `ServerSetting`).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ServerSetting {
    /// Tells Tabby's clients not to send usage data to their vendor; always `true`.
    pub disable_client_side_telemetry: bool,
}

/// The body of `GET /v1beta/models` (Tabby's `ModelInfo`).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ModelInfo {
    /// Model ids a completion request may use.
    pub completion: Vec<String>,
    /// Model ids a chat request may use.
    pub chat: Vec<String>,
}

/// `GET /v1beta/server_setting`: the settings Tabby's clients apply; no token needed.
pub async fn server_setting() -> Json<ServerSetting> {
    Json(ServerSetting {
        disable_client_side_telemetry: true,
    })
}

/// `GET /v1beta/models`: the served model, for completion and for chat.
pub async fn models(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<ModelInfo>, ApiError> {
    Ok(Json(model_info(&state.model.id)))
}

/// Tabby's model list for a server that serves `id` for both tasks.
fn model_info(id: &str) -> ModelInfo {
    ModelInfo {
        completion: vec![id.to_string()],
        chat: vec![id.to_string()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn server_setting_disables_client_side_telemetry() {
        let Json(setting) = server_setting().await;
        assert_eq!(
            serde_json::to_value(setting).expect("json"),
            json!({"disable_client_side_telemetry": true})
        );
    }

    #[test]
    fn models_have_tabbys_shape() {
        assert_eq!(
            serde_json::to_value(model_info("m")).expect("json"),
            json!({"completion": ["m"], "chat": ["m"]})
        );
    }
}

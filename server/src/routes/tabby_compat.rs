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

use crate::config::ModelRole;
use crate::error::ApiError;
use crate::state::{AppState, Caller};

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

/// `GET /v1beta/models`: the models serving completion and chat, each role's default first.
pub async fn models(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> Result<Json<ModelInfo>, ApiError> {
    let set = state.model_set();
    let ids = |role: ModelRole| {
        let default = set.default_for(role).map(|m| m.id.clone());
        let others: Vec<String> = set
            .entries
            .iter()
            .filter(|e| e.roles.contains(&role) && Some(&e.model.id) != default.as_ref())
            .map(|e| e.model.id.clone())
            .collect();
        default.into_iter().chain(others).collect::<Vec<_>>()
    };
    Ok(Json(ModelInfo {
        completion: ids(ModelRole::Completion),
        chat: ids(ModelRole::Chat),
    }))
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
            serde_json::to_value(ModelInfo {
                completion: vec!["m".into()],
                chat: vec!["m".into()],
            })
            .expect("json"),
            json!({"completion": ["m"], "chat": ["m"]})
        );
    }
}

//! Administration over HTTP: `POST /v1/admin/reload` (what SIGHUP does, with an answer).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::Value;

use crate::error::ApiError;
use crate::state::{AppState, Caller};

/// `POST /v1/admin/reload` (admin tokens only): reads the configuration file again and
/// serves its models — unchanged ones kept, new ones loaded beside the old, requests in
/// flight finishing on the model they started on. Answers what was loaded, kept and
/// removed, which changed sections need a restart, and the models now served; a refused
/// configuration (invalid, over the memory budget, a model that does not load) is a 422
/// naming the reason, and the models served before stay.
pub async fn reload(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    state.require_admin(&caller)?;
    if !body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::unprocessable(
            "`POST /v1/admin/reload` takes no body: it reads the configuration file again",
        ));
    }
    let worker = state.clone();
    let report = tokio::task::spawn_blocking(move || worker.reload())
        .await?
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("reload refused; the models served before stay: {e}"),
            )
        })?;
    Ok(Json(report.to_json(&state.model_set())))
}

//! The HTTP routes, thin: extract the caller and the body, call a service, respond.
//! [`completions`] (Tabby's shape), [`openai`] (legacy completions, chat, models),
//! [`review`], [`tabby_compat`] (Tabby's `/v1beta` endpoints), [`meta`] (health,
//! events, metrics) and [`admin`] (reload).

pub mod admin;
pub mod completions;
pub mod meta;
pub mod openai;
pub mod openai_fields;
pub mod openai_remote;
pub mod openai_tools;
pub mod review;
pub mod tabby_compat;

use crate::error::ApiError;
use crate::models::ServedModel;

/// The speculation a request asks for, or its model's default.
pub(crate) fn request_speculation(
    model: &ServedModel,
    requested: Option<&str>,
) -> Result<engine::Speculation, ApiError> {
    match requested {
        None => Ok(model.speculation),
        Some(s) => match engine::Speculation::parse(s) {
            Some(mode) if mode.uses_draft_model() && !model.has_draft => {
                Err(ApiError::unprocessable(format!(
                    "`speculation: draft` needs a draft model; model `{}` has none (`draft` in its configuration)",
                    model.id
                )))
            }
            Some(mode) => Ok(mode),
            None => Err(ApiError::unprocessable(format!(
                "`speculation` must be `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft`, not `{s}`"
            ))),
        },
    }
}

/// Refuses a temperature outside OpenAI's range, the same way on every route.
pub(crate) fn check_temperature(temperature: f32) -> Result<(), ApiError> {
    if (0.0..=2.0).contains(&temperature) {
        Ok(())
    } else {
        Err(ApiError::unprocessable(format!(
            "`temperature` must be between 0 and 2, not {temperature}"
        )))
    }
}

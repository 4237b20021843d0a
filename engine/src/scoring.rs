//! How likely a model finds a given text: the log-probability of each token of a
//! continuation after a prompt, and of a fill-in-the-middle (the code between a prefix
//! and a suffix). Review uses it to ask a code model whether a change looks like code
//! it would write, or like a slip.
//!
//! Scoring runs the model directly on the calling thread (a fresh key/value cache,
//! prefill in chunks), not through the [`Engine`](crate::Engine)'s scheduler: it asks
//! for every position's logits, which generation never needs.

use candle_core::DType;

use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::model::transformer::{LogitsWanted, StepInput};

/// Rows fed to the model per forward pass while scoring.
const CHUNK: usize = 256;

/// The natural-log probability of each token of `continuation` after `prompt`, in order.
/// `prompt` must not be empty (the first token has no prediction of its own).
pub fn continuation_logprobs(
    model: &Model,
    prompt: &[u32],
    continuation: &[u32],
) -> Result<Vec<f32>> {
    continuation_logprobs_chunked(model, prompt, continuation, CHUNK)
}

/// [`continuation_logprobs`] feeding at most `chunk` tokens per forward pass (smaller
/// chunks: less memory for the logits, more passes; the result is the same up to float
/// rounding).
pub fn continuation_logprobs_chunked(
    model: &Model,
    prompt: &[u32],
    continuation: &[u32],
    chunk: usize,
) -> Result<Vec<f32>> {
    if prompt.is_empty() {
        return Err(EngineError::InvalidRequest(
            "scoring needs a prompt of at least one token".into(),
        ));
    }
    if continuation.is_empty() {
        return Ok(Vec::new());
    }
    let tokens: Vec<u32> = prompt.iter().chain(continuation).copied().collect();
    let transformer = model.transformer();
    let mut cache = transformer.new_cache();
    // Row r of the logits predicts token r + 1; the first wanted row is the prompt's last.
    let first_wanted = prompt.len() - 1;
    let fed = tokens.len() - 1;
    let mut out = Vec::with_capacity(continuation.len());
    let mut start = 0;
    while start < fed {
        let end = (start + chunk.max(1)).min(fed);
        let logits = if end > first_wanted {
            LogitsWanted::All
        } else {
            LogitsWanted::None
        };
        let mut step = [StepInput {
            cache: &mut cache,
            tokens: &tokens[start..end],
            logits,
        }];
        let rows = transformer.forward(&mut step)?.pop().flatten();
        if let Some(rows) = rows {
            let rows = rows.to_dtype(DType::F32)?.to_vec2::<f32>()?;
            for (i, row) in rows.iter().enumerate() {
                let r = start + i;
                if r >= first_wanted {
                    out.push(log_softmax_at(row, tokens[r + 1] as usize));
                }
            }
        }
        start = end;
    }
    Ok(out)
}

/// `log_softmax(row)[index]`, computed stably in f64.
fn log_softmax_at(row: &[f32], index: usize) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
    (row.get(index).copied().unwrap_or(f32::NEG_INFINITY) as f64 - max - sum.ln()) as f32
}

/// How likely a model finds `middle` between `prefix` and `suffix`.
#[derive(Debug, Clone, PartialEq)]
pub struct InfillScore {
    /// Tokens of `middle`.
    pub tokens: usize,
    /// Their mean natural-log probability (0 is certain; lower is less likely).
    pub mean_logprob: f32,
}

/// Scores `middle` as the fill-in-the-middle of `prefix` and `suffix`, with the model's
/// own FIM template (the model must have one: see [`crate::FimStyle`]).
pub fn infill_score(
    model: &Model,
    prefix: &str,
    middle: &str,
    suffix: &str,
) -> Result<InfillScore> {
    if model.fim().style() == crate::FimStyle::PrefixOnly {
        return Err(EngineError::InvalidRequest(format!(
            "model {} has no fill-in-the-middle tokens to score an infill with",
            model.info().name
        )));
    }
    let prompt = model.completion_prompt(prefix, suffix)?;
    let middle = model.tokenizer().encode(middle)?;
    let logprobs = continuation_logprobs(model, &prompt, &middle)?;
    let tokens = logprobs.len();
    let mean_logprob = if tokens == 0 {
        0.0
    } else {
        logprobs.iter().sum::<f32>() / tokens as f32
    };
    Ok(InfillScore {
        tokens,
        mean_logprob,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_is_normalised_and_stable() {
        let row = [1000.0f32, 1000.0, 999.0];
        let total: f64 = (0..3).map(|i| (log_softmax_at(&row, i) as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6, "{total}");
        assert!((log_softmax_at(&row, 0) - log_softmax_at(&row, 1)).abs() < 1e-6);
        assert!(log_softmax_at(&row, 2) < log_softmax_at(&row, 0));
        assert_eq!(log_softmax_at(&row, 7), f32::NEG_INFINITY);
    }
}

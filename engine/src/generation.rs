//! What a caller asks the engine for, and what it hears back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::error::EngineError;
use crate::sampling::SamplingParams;

/// A flag that stops a generation at the next decode step when set.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests cancellation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether cancellation was requested.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// A caller's test on the text generated so far: `true` ends the generation (as a
/// stop sequence does). Completion servers use it to stop where their post-processing
/// would cut anyway, e.g. at the end of the block at the cursor.
#[derive(Clone)]
pub struct StopRule(pub Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for StopRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StopRule(..)")
    }
}

/// One generation job.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    /// Prompt token ids (see `Model::completion_prompt`).
    pub prompt: Vec<u32>,
    /// Upper bound on generated tokens.
    pub max_new_tokens: usize,
    /// Token selection.
    pub sampling: SamplingParams,
    /// Text that ends the generation (not included in the output).
    pub stop: Vec<String>,
    /// Cancels the job.
    pub cancel: CancelToken,
    /// Speculative decoding (never changes greedy output).
    pub speculation: crate::speculation::Speculation,
    /// Ends the generation when it holds for the text so far (checked after each token).
    pub stop_rule: Option<StopRule>,
    /// Tokens the caller expects the generation to start with, e.g. what is left of
    /// the previous keystroke's completion after the characters typed since. While
    /// the output agrees with them, speculation proposes them as drafts (verified
    /// like any draft: the output is the same with or without them); unused when
    /// speculation is off.
    pub hint: Vec<u32>,
    /// A grammar the output must match (see [`crate::Model::constraint`]): only tokens
    /// it allows are chosen, and the generation ends where it is complete.
    pub constraint: Option<crate::constraint::Constraint>,
    /// Report each generated token's log-probability and this many alternatives
    /// (`None`: none computed).
    pub logprobs: Option<usize>,
}

impl GenerationRequest {
    /// A greedy request for `max_new_tokens` tokens after `prompt`.
    pub fn greedy(prompt: Vec<u32>, max_new_tokens: usize) -> Self {
        Self {
            prompt,
            max_new_tokens,
            sampling: SamplingParams::greedy(),
            stop: Vec::new(),
            cancel: CancelToken::new(),
            speculation: crate::speculation::Speculation::default(),
            stop_rule: None,
            hint: Vec::new(),
            constraint: None,
            logprobs: None,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// `max_new_tokens` reached.
    Length,
    /// A stop sequence was generated.
    Stop,
    /// The model produced an end-of-text or other control token.
    EndOfText,
    /// The caller cancelled or went away.
    Cancelled,
}

impl FinishReason {
    /// The OpenAI-style name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Length => "length",
            Self::Stop | Self::EndOfText => "stop",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Counters and timings of a finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationStats {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Prompt tokens served from a cache instead of computed.
    pub cached_prompt_tokens: usize,
    /// Tokens generated.
    pub generated_tokens: usize,
    /// Forward passes this sequence took part in while decoding.
    pub decode_steps: usize,
    /// Tokens proposed by speculative drafting.
    pub drafted_tokens: usize,
    /// Drafted tokens the model confirmed.
    pub accepted_tokens: usize,
    /// From submission to the first generated token.
    pub time_to_first_token: Duration,
    /// From submission to the end.
    pub total_time: Duration,
}

/// A message from the engine about one job.
#[derive(Debug)]
pub enum GenerationEvent {
    /// Newly generated text (never part of a stop sequence).
    Text {
        /// The text.
        text: String,
        /// The ids of the tokens generated since the previous event.
        tokens: Vec<u32>,
        /// Their log-probabilities (empty unless the request asked for them).
        logprobs: Vec<crate::sampling::TokenLogprob>,
    },
    /// The job ended normally.
    Finished(GenerationStats),
    /// The job failed.
    Failed(EngineError),
}

/// Receives events; returning `false` means the receiver is gone and the job is cancelled.
pub type EventSink = Box<dyn FnMut(GenerationEvent) -> bool + Send>;

/// The whole result of a job, for callers that do not stream.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text.
    pub text: String,
    /// The generated token ids (including a final control token, if any).
    pub tokens: Vec<u32>,
    /// Each token's log-probability, when the request asked for them.
    pub logprobs: Vec<crate::sampling::TokenLogprob>,
    /// Counters and timings.
    pub stats: GenerationStats,
}

/// Folds a job's events, in order, into its whole result.
#[derive(Debug, Default)]
pub struct GenerationCollector {
    text: String,
    tokens: Vec<u32>,
    logprobs: Vec<crate::sampling::TokenLogprob>,
}

impl GenerationCollector {
    /// Takes the next event; returns the result once the job has ended.
    pub fn push(&mut self, event: GenerationEvent) -> Option<crate::Result<Generation>> {
        match event {
            GenerationEvent::Text {
                text,
                tokens,
                logprobs,
            } => {
                self.text.push_str(&text);
                self.tokens.extend(tokens);
                self.logprobs.extend(logprobs);
                None
            }
            GenerationEvent::Finished(stats) => Some(Ok(Generation {
                text: std::mem::take(&mut self.text),
                tokens: std::mem::take(&mut self.tokens),
                logprobs: std::mem::take(&mut self.logprobs),
                stats,
            })),
            GenerationEvent::Failed(e) => Some(Err(e)),
        }
    }
}

//! The engine's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or generating text.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A model file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file that failed.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file ends before the data its header announces.
    #[error("model file {path} is truncated: expected at least {expected} bytes, found {actual}")]
    Truncated {
        /// The truncated file.
        path: PathBuf,
        /// Bytes the header requires.
        expected: u64,
        /// Bytes present on disk.
        actual: u64,
    },
    /// A model file is not in a format the engine reads.
    #[error("{path} is not a valid model: {reason}")]
    InvalidModel {
        /// The offending file or directory.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model's architecture is not implemented.
    #[error(
        "unsupported model architecture `{arch}` in {path} (supported: llama, qwen2, starcoder2)"
    )]
    UnsupportedArchitecture {
        /// The model file.
        path: PathBuf,
        /// The architecture named by the model.
        arch: String,
    },
    /// A tensor uses a quantisation type the engine cannot compute with.
    #[error("tensor `{tensor}` in {path} uses unsupported quantisation {dtype}")]
    UnsupportedQuantization {
        /// The model file.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// The type found.
        dtype: String,
    },
    /// A file's checksum differs from the pinned one.
    #[error("checksum mismatch for {path}: expected sha256 {expected}, found {actual}")]
    ChecksumMismatch {
        /// The file checked.
        path: PathBuf,
        /// The pinned SHA-256.
        expected: String,
        /// The SHA-256 computed.
        actual: String,
    },
    /// The tokenizer could not be built or used.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The prompt does not fit the model's context window.
    #[error(
        "prompt of {prompt_tokens} tokens plus {max_new_tokens} new tokens exceeds the context window of {context_length} tokens"
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        prompt_tokens: usize,
        /// Tokens requested for generation.
        max_new_tokens: usize,
        /// The model's context window.
        context_length: usize,
    },
    /// A request parameter is out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The scheduler has shut down and takes no more requests.
    #[error("the inference scheduler has stopped")]
    SchedulerStopped,
    /// A tensor operation failed.
    #[error("tensor computation failed: {0}")]
    Compute(#[from] candle_core::Error),
}

/// Result alias for engine operations.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// An invalid-model error for `path`.
    pub fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Self::InvalidModel {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

//! The Souffleur inference engine.
//!
//! Loads decoder-only code models (GGUF, or safetensors checkpoints), tokenizes
//! prompts, and generates text on a shared [`Engine`] that batches the decode
//! steps of all running requests. The engine knows nothing of HTTP or editors:
//! callers hand it token ids and receive text through an [`EventSink`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use engine::{Engine, GenerationRequest, Model, SchedulerConfig};
//!
//! let model = Arc::new(Model::load("model.gguf".as_ref())?);
//! let prompt = model.completion_prompt("fn add(a: i32, b: i32) -> i32 {\n", "\n}")?;
//! let engine = Engine::start(model, SchedulerConfig::default())?;
//! let out = engine.generate(GenerationRequest::greedy(prompt, 16))?;
//! println!("{}", out.text);
//! # Ok::<(), engine::EngineError>(())
//! ```

#![deny(missing_docs)]

pub mod chat;
pub mod checksum;
pub mod constraint;
pub mod device;
pub mod error;
pub mod fim;
pub mod footprint;
pub mod generation;
pub mod kernel_checks;
pub mod kv_cache;
pub mod model;
mod prefix_cache;
pub mod sampling;
pub mod scheduler;
pub mod scoring;
pub mod speculation;
pub mod stop;
pub mod tokenizer;

pub use chat::{ToolCall, Turn};
pub use constraint::{Constraint, GrammarSpec, json_layout};
pub use error::{EngineError, Result};
pub use fim::{FimStyle, FimTemplate, RepoContext, RepoFile};
pub use generation::{
    CancelToken, EventSink, FinishReason, Generation, GenerationCollector, GenerationEvent,
    GenerationRequest, GenerationStats, StopRule,
};
pub use model::{Model, ModelFormat, ModelInfo};
pub use sampling::{Penalties, SamplingParams};
pub use scheduler::{Engine, EngineCounters, SchedulerConfig};
pub use speculation::Speculation;
pub use tokenizer::Tokenizer;

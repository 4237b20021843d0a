//! `souffleur complete`: one completion from the command line, streamed to stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::{Engine, GenerationEvent, GenerationRequest, SamplingParams, SchedulerConfig};

use crate::home::Home;
use crate::model_store;

/// Arguments of `souffleur complete`.
#[derive(Debug, Args)]
pub struct CompleteArgs {
    /// File with the text before the cursor.
    #[arg(long)]
    pub prefix_file: PathBuf,
    /// File with the text after the cursor.
    #[arg(long)]
    pub suffix_file: Option<PathBuf>,
    /// Model path or name (default: the built-in model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Keep only the k most likely tokens when sampling (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Random seed for sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Print timing and token counts to stderr.
    #[arg(long)]
    pub stats: bool,
    /// Speculative decoding: `off`, `ngram`, `ngram:K` (K = most drafted tokens per
    /// step) or `draft:<model path>` (a smaller model with the same tokenizer, e.g.
    /// from `souffleur model make-draft`). Greedy output is identical with and without it.
    #[arg(long, default_value = "ngram", value_parser = parse_speculation)]
    pub speculate: SpeculateArg,
}

fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => bail!(
            "{} is not valid UTF-8 (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ),
    }
}

/// Runs the completion and streams the generated text to stdout.
pub fn run(home: &Home, args: CompleteArgs) -> Result<()> {
    let prefix = read_text(&args.prefix_file)?;
    let suffix = match &args.suffix_file {
        Some(p) => read_text(p)?,
        None => String::new(),
    };
    let path = model_store::resolve(home, args.model.as_deref())?;
    let model = Arc::new(model_store::load_verified(home, &path, None, "")?.0);
    let prompt = model.completion_prompt(&prefix, &suffix)?;
    let (engine, speculation) = match args.speculate {
        SpeculateArg::Mode(mode) => (Engine::start(model, SchedulerConfig::default())?, mode),
        SpeculateArg::DraftModel(draft) => {
            let draft = model_store::resolve(home, Some(&draft))?;
            let draft = Arc::new(model_store::load_verified(home, &draft, None, "")?.0);
            let engine = Engine::start_with_draft(model, draft, SchedulerConfig::default())?;
            (engine, engine::Speculation::DRAFT)
        }
    };
    let request = GenerationRequest {
        prompt,
        max_new_tokens: args.max_tokens,
        sampling: SamplingParams {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            seed: args.seed,
            penalties: engine::Penalties::NONE,
        },
        stop: args.stop,
        cancel: Default::default(),
        speculation,
        stop_rule: None,
        hint: Vec::new(),
        constraint: None,
        logprobs: None,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    engine.submit(request, Box::new(move |e| tx.send(e).is_ok()))?;
    let mut out = std::io::stdout().lock();
    for event in rx {
        match event {
            GenerationEvent::Text { text, .. } => {
                out.write_all(text.as_bytes())?;
                out.flush()?;
            }
            GenerationEvent::Finished(stats) => {
                if args.stats {
                    let decode = stats.total_time.saturating_sub(stats.time_to_first_token);
                    eprintln!(
                        "\n[{} prompt tokens, {} generated, first token {:.0} ms, {:.1} tok/s decode, {} decode passes, {}/{} drafted tokens accepted, finish: {}]",
                        stats.prompt_tokens,
                        stats.generated_tokens,
                        stats.time_to_first_token.as_secs_f64() * 1e3,
                        stats.generated_tokens.saturating_sub(1) as f64
                            / decode.as_secs_f64().max(1e-9),
                        stats.decode_steps,
                        stats.accepted_tokens,
                        stats.drafted_tokens,
                        stats.finish_reason.as_str()
                    );
                }
                return Ok(());
            }
            GenerationEvent::Failed(e) => return Err(e.into()),
        }
    }
    bail!("the engine stopped before finishing")
}

/// What `--speculate` asks for.
#[derive(Debug, Clone)]
pub enum SpeculateArg {
    /// A mode that needs no extra model.
    Mode(engine::Speculation),
    /// Draft-model speculation with the model at this path.
    DraftModel(PathBuf),
}

/// Parses `--speculate`.
fn parse_speculation(s: &str) -> Result<SpeculateArg, String> {
    if let Some(path) = s.strip_prefix("draft:") {
        if path.is_empty() {
            return Err("`draft:` needs a model path, e.g. `draft:draft.gguf`".into());
        }
        return Ok(SpeculateArg::DraftModel(PathBuf::from(path)));
    }
    match engine::Speculation::parse(s) {
        Some(mode) if !mode.uses_draft_model() => Ok(SpeculateArg::Mode(mode)),
        _ => Err(format!(
            "`{s}` is not `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft:<model path>`"
        )),
    }
}

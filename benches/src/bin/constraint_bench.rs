//! What constrained decoding costs: decode speed of the same chat prompts with and
//! without a JSON Schema constraint, and the grammar engine's own time per token (a
//! mask over the whole vocabulary and the step past the chosen token), measured by
//! replaying the constrained outputs. Prints one JSON object.
//!
//! Usage: constraint_bench MODEL

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine::{Engine, GenerationRequest, GrammarSpec, Model, SchedulerConfig, Speculation, Turn};
use serde_json::json;

const NEW_TOKENS: usize = 64;
const ROUNDS: usize = 3;

const QUESTIONS: [&str; 4] = [
    "Describe a fictional software engineer as JSON: name, age, city, languages and a short biography.",
    "Describe the Rust programming language as JSON: name, year, creators, features and a summary.",
    "Describe a bug report as JSON: title, severity, steps to reproduce and the expected result.",
    "Describe a city as JSON: name, country, population, landmarks and a short history.",
];

/// A schema whose outputs run long enough to time 64 tokens.
fn schema() -> serde_json::Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string"}, "details": {"type": "object", "additionalProperties": {"type": "string"}},
        "items": {"type": "array", "items": {"type": "string"}}, "text": {"type": "string"}},
        "required": ["name", "details", "items", "text"], "additionalProperties": false})
}

/// Seconds per decoded token (after the first) of one generation.
fn decode_secs(stats: &engine::GenerationStats) -> f64 {
    let decode = stats.total_time.saturating_sub(stats.time_to_first_token);
    decode.as_secs_f64() / (stats.generated_tokens.saturating_sub(1)).max(1) as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<()> {
    let path = PathBuf::from(
        std::env::args()
            .nth(1)
            .context("usage: constraint_bench MODEL")?,
    );
    let model = Arc::new(Model::load(&path)?);
    let engine = Engine::start(model.clone(), SchedulerConfig::default())?;
    let spec = GrammarSpec::JsonSchema(schema());
    let started = Instant::now();
    let compiled = model.constraint(&spec)?;
    let first_compile = started.elapsed();
    let started = Instant::now();
    let _ = model.constraint(&spec)?;
    let compile = started.elapsed();
    let prompts: Vec<Vec<u32>> = QUESTIONS
        .iter()
        .map(|q| model.chat_prompt(&[Turn::text("user", q)], ""))
        .collect::<engine::Result<_>>()?;
    let run = |prompt: &Vec<u32>, constrained: bool| -> Result<engine::Generation> {
        let mut req = GenerationRequest::greedy(prompt.clone(), NEW_TOKENS);
        req.speculation = Speculation::Off;
        if constrained {
            req.constraint = Some(compiled.clone());
        }
        Ok(engine.generate(req)?)
    };
    // Warm-up (and the prefix cache is the same for both: every prompt runs first).
    for p in &prompts {
        run(p, false)?;
    }
    let (mut free, mut constrained, mut mask) = (Vec::new(), Vec::new(), Vec::new());
    let (mut free_tokens, mut constrained_tokens, mut valid) = (0, 0, 0);
    let vocab = model.info().config.vocab_size;
    for _ in 0..ROUNDS {
        for p in &prompts {
            let out = run(p, false)?;
            free.push(decode_secs(&out.stats));
            free_tokens += out.stats.generated_tokens;
            let out = run(p, true)?;
            constrained.push(decode_secs(&out.stats));
            constrained_tokens += out.stats.generated_tokens;
            valid += usize::from(serde_json::from_str::<serde_json::Value>(&out.text).is_ok());
            // The grammar engine alone: the same tokens replayed through a fresh copy.
            let mut c = compiled.clone();
            let mut logits = vec![0f32; vocab];
            let started = Instant::now();
            for &t in &out.tokens {
                c.restrict(&mut logits)?;
                if c.advance(t).is_err() {
                    break;
                }
            }
            mask.push(started.elapsed().as_secs_f64() / out.tokens.len().max(1) as f64);
        }
    }
    let (f, c) = (median(free), median(constrained));
    let report = json!({
        "model": model.info().name,
        "new_tokens": NEW_TOKENS,
        "generations_each": ROUNDS * prompts.len(),
        "first_compile_ms": ms(first_compile),
        "compile_ms": ms(compile),
        "free_decode_tok_s": 1.0 / f,
        "constrained_decode_tok_s": 1.0 / c,
        "slowdown_pct": (c / f - 1.0) * 100.0,
        "grammar_us_per_token": median(mask) * 1e6,
        "free_tokens": free_tokens,
        "constrained_tokens": constrained_tokens,
        "constrained_complete_json": valid,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

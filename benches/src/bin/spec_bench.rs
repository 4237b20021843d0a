//! Speculative decoding and prefix-cache benchmark on the default model.
//!
//! Requests are cut from real source files (`engine/tests/fixtures/corpus`, code
//! nobody here wrote): *edit-like* ones complete a line whose text already appears
//! earlier in the file, *general* ones complete at line ends sampled through each
//! file. Each set runs with speculation off and in each mode of `SPEC_BENCH_MODES`
//! (1 client and 4 concurrent clients by default), reporting decode tok/s, forward
//! passes per generated token, acceptance and speedup, checks that greedy outputs are
//! identical, measures what a verification pass over n tokens costs against a decode
//! step, and time to first token for a cold prompt against the same prompt extended
//! by a keystroke (warm prefix cache). Prints one JSON object.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use engine::model::transformer::{LogitsWanted, StepInput};
use engine::{Engine, Generation, GenerationRequest, Model, SchedulerConfig, Speculation};

const NEW_TOKENS: usize = 32;

/// A completion request cut from a file.
struct Case {
    prompt: Vec<u32>,
}

fn corpus(dir: &Path) -> Result<Vec<String>> {
    let mut files = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e != "md" && e != "txt"))
        .collect();
    entries.sort();
    for p in entries {
        files.push(std::fs::read_to_string(&p).with_context(|| p.display().to_string())?);
    }
    Ok(files)
}

/// Lines (≥ 16 characters, trimmed) whose exact text occurs earlier in the file: the
/// prompt ends after the line's first three characters.
fn edit_like(model: &Model, files: &[String], per_file: usize) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for text in files {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut offset = 0;
        let mut taken = 0;
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if i > 8
                && taken < per_file
                && t.len() >= 16
                && lines[..i].iter().any(|l| l.trim() == t)
                && offset > 200
            {
                let indent = line.len() - line.trim_start().len();
                let cut = offset + indent + 3;
                let start = cut.saturating_sub(3000);
                let start = (start..cut)
                    .find(|&k| text.is_char_boundary(k))
                    .unwrap_or(cut);
                if text.is_char_boundary(cut) {
                    cases.push(Case {
                        prompt: model.completion_prompt(&text[start..cut], "")?,
                    });
                    taken += 1;
                }
            }
            offset += line.len();
        }
    }
    Ok(cases)
}

/// Line ends at evenly spaced points of each file.
fn general(model: &Model, files: &[String], per_file: usize) -> Result<Vec<Case>> {
    let mut cases = Vec::new();
    for text in files {
        let ends: Vec<usize> = text
            .match_indices('\n')
            .map(|(i, _)| i + 1)
            .filter(|&i| i > 400)
            .collect();
        for k in 0..per_file {
            let Some(&cut) = ends.get((k + 1) * ends.len() / (per_file + 1)) else {
                continue;
            };
            let start = cut.saturating_sub(3000);
            let start = (start..cut)
                .find(|&k| text.is_char_boundary(k))
                .unwrap_or(cut);
            cases.push(Case {
                prompt: model.completion_prompt(&text[start..cut], "")?,
            });
        }
    }
    Ok(cases)
}

#[derive(Default)]
struct Totals {
    generated: usize,
    decode_steps: usize,
    drafted: usize,
    accepted: usize,
    decode_secs: f64,
    outputs: Vec<Vec<u32>>,
}

fn run(engine: &Engine, cases: &[Case], spec: Speculation, clients: usize) -> Result<Totals> {
    let mut totals = Totals::default();
    let started = std::time::Instant::now();
    let mut results: Vec<Option<Generation>> = (0..cases.len()).map(|_| None).collect();
    for chunk in (0..cases.len()).collect::<Vec<_>>().chunks(clients) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|&i| {
                let engine = engine.clone();
                let mut req = GenerationRequest::greedy(cases[i].prompt.clone(), NEW_TOKENS);
                req.speculation = spec;
                std::thread::spawn(move || (i, engine.generate(req)))
            })
            .collect();
        for h in handles {
            let (i, out) = h
                .join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
            results[i] = Some(out?);
        }
    }
    for out in results.into_iter().flatten() {
        let s = &out.stats;
        totals.generated += s.generated_tokens.saturating_sub(1);
        totals.decode_steps += s.decode_steps;
        totals.drafted += s.drafted_tokens;
        totals.accepted += s.accepted_tokens;
        totals.decode_secs += (s.total_time - s.time_to_first_token).as_secs_f64();
        totals.outputs.push(out.tokens);
    }
    if clients > 1 {
        // Concurrent decode times overlap: use the wall time of the whole run.
        totals.decode_secs = started.elapsed().as_secs_f64();
    }
    Ok(totals)
}

/// Plain decoding against each of `modes` on the same requests.
fn compare(
    engine: &Engine,
    name: &str,
    cases: &[Case],
    clients: usize,
    modes: &[(String, Speculation)],
) -> Result<Vec<serde_json::Value>> {
    let plain = run(engine, cases, Speculation::Off, clients)?;
    let rate = |t: &Totals| t.generated as f64 / t.decode_secs.max(1e-9);
    let passes = |t: &Totals| t.decode_steps as f64 / t.generated.max(1) as f64;
    let mut rows = Vec::new();
    for (label, mode) in modes {
        let spec = run(engine, cases, *mode, clients)?;
        let mismatches = plain
            .outputs
            .iter()
            .zip(&spec.outputs)
            .filter(|(a, b)| a != b)
            .count();
        let v = serde_json::json!({
            "set": name,
            "mode": label,
            "clients": clients,
            "rate_basis": if clients == 1 { "decode time" } else { "wall time incl. prefill" },
            "requests": cases.len(),
            "plain_decode_tok_s": rate(&plain),
            "spec_decode_tok_s": rate(&spec),
            "speedup": rate(&spec) / rate(&plain).max(1e-9),
            "plain_passes_per_token": passes(&plain),
            "spec_passes_per_token": passes(&spec),
            "acceptance": spec.accepted as f64 / spec.drafted.max(1) as f64,
            "drafted": spec.drafted,
            "mismatches": mismatches,
        });
        eprintln!("{v}");
        rows.push(v);
    }
    Ok(rows)
}

/// Time to first token of each prompt cold, then of the prompt extended by one
/// keystroke with the prefix cache warm.
fn warm_prefix(model: &Arc<Model>, files: &[String]) -> Result<serde_json::Value> {
    let engine = Engine::start(model.clone(), SchedulerConfig::default())?;
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for (k, text) in files.iter().enumerate() {
        let cut = text.len().min(1500 + 100 * k);
        let cut = (0..=cut)
            .rev()
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(0);
        let first = model.completion_prompt(&text[..cut], "")?;
        let next_cut = (cut + 1..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(cut);
        let second = model.completion_prompt(&text[..next_cut], "")?;
        let ttft = |p: Vec<u32>| -> Result<Duration> {
            let mut req = GenerationRequest::greedy(p, 1);
            req.speculation = Speculation::Off;
            Ok(engine.generate(req)?.stats.time_to_first_token)
        };
        cold.push(ttft(first)?.as_secs_f64() * 1e3);
        warm.push(ttft(second)?.as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, w) = (median(&mut cold), median(&mut warm));
    let v = serde_json::json!({
        "prompts": files.len(),
        "cold_ttft_ms_p50": c,
        "warm_ttft_ms_p50": w,
        "ttft_speedup": c / w.max(1e-9),
    });
    eprintln!("{v}");
    Ok(v)
}

/// Time of one forward pass over `n` new tokens on a sequence with ~`CONTEXT` cached
/// positions, relative to a one-token decode step: what a verification pass costs.
fn verify_cost(model: &Model, files: &[String]) -> Result<serde_json::Value> {
    const CONTEXT: usize = 600;
    const REPS: usize = 15;
    let t = model.transformer();
    let text = files
        .iter()
        .max_by_key(|f| f.len())
        .context("empty corpus")?;
    let ids = model.tokenizer().encode(text)?;
    let ids = &ids[..ids.len().min(CONTEXT + 32)];
    let context = ids.len().saturating_sub(32);
    let mut cache = t.new_cache();
    for chunk in ids[..context].chunks(64) {
        t.forward(&mut [StepInput {
            cache: &mut cache,
            tokens: chunk,
            logits: LogitsWanted::None,
        }])?;
    }
    let mut rows = Vec::new();
    let mut one = f64::NAN;
    for n in [1usize, 2, 3, 5, 9, 17] {
        let mut times = Vec::with_capacity(REPS);
        for _ in 0..REPS {
            let start = Instant::now();
            t.forward(&mut [StepInput {
                cache: &mut cache,
                tokens: &ids[context..context + n],
                logits: LogitsWanted::All,
            }])?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
            cache.truncate(context);
        }
        times.sort_by(f64::total_cmp);
        let ms = times[REPS / 2];
        if n == 1 {
            one = ms;
        }
        rows.push(serde_json::json!({"tokens": n, "ms_p50": ms, "relative_to_decode": ms / one}));
    }
    let v = serde_json::json!({"context": context, "passes": rows});
    eprintln!("{v}");
    Ok(v)
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model_path = PathBuf::from(args.next().context("usage: spec_bench MODEL CORPUS_DIR")?);
    let corpus_dir = PathBuf::from(args.next().context("missing CORPUS_DIR")?);
    let model = Arc::new(Model::load(&model_path)?);
    let files = corpus(&corpus_dir)?;
    let cost = verify_cost(&model, &files)?;
    if std::env::var_os("SPEC_BENCH_COST_ONLY").is_some() {
        println!("{}", serde_json::to_string_pretty(&cost)?);
        return Ok(());
    }
    let edits = edit_like(&model, &files, 4)?;
    let traces = general(&model, &files, 4)?;
    // Modes to compare with plain decoding (SPEC_BENCH_MODES, comma-separated
    // `Speculation::parse` spellings) and an optional draft model (SPEC_BENCH_DRAFT).
    let spellings = std::env::var("SPEC_BENCH_MODES").unwrap_or_else(|_| "ngram".into());
    let mut modes = Vec::new();
    for s in spellings.split(',').filter(|s| !s.is_empty()) {
        let mode = Speculation::parse(s).with_context(|| format!("unknown mode {s}"))?;
        modes.push((s.to_string(), mode));
    }
    // No prefix cache while comparing decoding, so both modes prefill alike.
    let config = SchedulerConfig {
        prefix_cache_bytes: 0,
        ..SchedulerConfig::default()
    };
    let engine = match std::env::var_os("SPEC_BENCH_DRAFT") {
        Some(draft) => {
            let draft = Arc::new(Model::load(Path::new(&draft))?);
            Engine::start_with_draft(model.clone(), draft, config)?
        }
        None => Engine::start(model.clone(), config)?,
    };
    let client_levels: Vec<usize> = std::env::var("SPEC_BENCH_CLIENTS")
        .unwrap_or_else(|_| "1,4".into())
        .split(',')
        .filter_map(|c| c.parse().ok())
        .collect();
    let mut runs = Vec::new();
    for &clients in &client_levels {
        runs.extend(compare(&engine, "edit-like", &edits, clients, &modes)?);
        runs.extend(compare(&engine, "general", &traces, clients, &modes)?);
    }
    let warm = warm_prefix(&model, &files)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "model": model_path,
            "new_tokens": NEW_TOKENS,
            "runs": runs,
            "prefix_cache": warm,
            "verification_cost": cost,
        }))?
    );
    Ok(())
}

//! How well drafts made from block subsets of a model predict the full model.
//!
//! For each block list (e.g. `0-3,26-29`) the bench writes a draft model with
//! `write_layer_subset`, runs it and the full model over the same real source
//! files (teacher forcing), and reports how often the draft's top-1 token equals
//! the full model's, with the draft's size and its speed relative to the full
//! model. Prints one JSON object.
//!
//! Usage: draft_agreement MODEL.gguf CORPUS_DIR OUT_DIR LAYERS [LAYERS …]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use engine::Model;
use engine::model::layer_subset::{parse_layers, write_layer_subset};
use engine::model::transformer::{LogitsWanted, StepInput, argmax_rows};

/// Tokens per file scored.
const TOKENS: usize = 384;
/// Files scored.
const FILES: usize = 6;

/// Top-1 predictions of `model` after each position of `ids`, and seconds taken.
fn predictions(model: &Model, ids: &[u32]) -> Result<(Vec<u32>, f64)> {
    let t = model.transformer();
    let mut cache = t.new_cache();
    let start = Instant::now();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(64) {
        let logits = t.forward(&mut [StepInput {
            cache: &mut cache,
            tokens: chunk,
            logits: LogitsWanted::All,
        }])?;
        let logits = logits.into_iter().next().flatten().context("no logits")?;
        out.extend(argmax_rows(&logits)?);
    }
    Ok((out, start.elapsed().as_secs_f64()))
}

fn corpus(dir: &Path, model: &Model) -> Result<Vec<Vec<u32>>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e != "md" && e != "txt"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths.into_iter().take(FILES) {
        let text = std::fs::read_to_string(&p).with_context(|| p.display().to_string())?;
        let mut ids = model.tokenizer().encode(&text)?;
        ids.truncate(TOKENS);
        out.push(ids);
    }
    Ok(out)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model_path, corpus_dir, out_dir, subsets @ ..] = args.as_slice() else {
        anyhow::bail!("usage: draft_agreement MODEL.gguf CORPUS_DIR OUT_DIR LAYERS [LAYERS …]");
    };
    let full = Model::load(Path::new(model_path))?;
    let files = corpus(Path::new(corpus_dir), &full)?;
    let mut reference = Vec::new();
    let mut full_secs = 0.0;
    for ids in &files {
        let (p, s) = predictions(&full, ids)?;
        reference.push(p);
        full_secs += s;
    }
    let mut rows = Vec::new();
    for spec in subsets {
        let blocks = parse_layers(spec, full.info().config.num_layers)?;
        let path = Path::new(out_dir).join(format!("draft-{}.gguf", spec.replace(',', "_")));
        write_layer_subset(Path::new(model_path), &blocks, &path)?;
        let draft = Model::load(&path)?;
        let (mut same, mut total, mut secs) = (0usize, 0usize, 0.0);
        for (ids, want) in files.iter().zip(&reference) {
            let (got, s) = predictions(&draft, ids)?;
            same += got.iter().zip(want).filter(|(a, b)| a == b).count();
            total += want.len();
            secs += s;
        }
        let row = serde_json::json!({
            "blocks": spec,
            "kept": blocks.len(),
            "parameters_m": draft.info().parameters as f64 / 1e6,
            "top1_agreement": same as f64 / total.max(1) as f64,
            "time_relative_to_full": secs / full_secs.max(1e-9),
        });
        eprintln!("{row}");
        rows.push(row);
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "model": model_path,
            "tokens_scored": reference.iter().map(Vec::len).sum::<usize>(),
            "drafts": rows,
        }))?
    );
    Ok(())
}

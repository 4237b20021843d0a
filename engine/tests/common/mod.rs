//! Helpers shared by the engine's reference tests.

#![allow(dead_code)]

use std::path::PathBuf;

use engine::Model;
use engine::model::transformer::{LogitsWanted, StepInput};

/// Directory of committed fixtures.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Reads a JSON fixture.
pub fn json(rel: &str) -> serde_json::Value {
    let path = fixtures().join(rel);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).expect("fixture is JSON")
}

/// Token ids from a JSON array.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("array of ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// The tiny model file (SmolLM2-135M): `SOUFFLEUR_TEST_MODEL`, else `$SOUFFLEUR_HOME/models/…`, else `~/.souffleur/models/…`.
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SOUFFLEUR_TEST_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("SOUFFLEUR_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".souffleur")
        });
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.is_file(),
        "tiny model missing at {}: run `souffleur model fetch smollm2-135m` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Logits `[positions][vocab]` of a whole prompt in one forward pass.
pub fn prompt_logits(model: &Model, prompt: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = model.transformer().new_cache();
    let out = model
        .transformer()
        .forward(&mut [StepInput {
            cache: &mut cache,
            tokens: prompt,
            logits: LogitsWanted::All,
        }])
        .expect("forward");
    out.into_iter()
        .next()
        .flatten()
        .expect("logits")
        .to_vec2::<f32>()
        .expect("f32 logits")
}

/// Greedy continuation computed with the plain step-by-step loop.
pub fn greedy(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut cache = model.transformer().new_cache();
    let mut next: Vec<u32> = prompt.to_vec();
    let mut out = Vec::new();
    for _ in 0..n {
        let logits = model
            .transformer()
            .forward(&mut [StepInput {
                cache: &mut cache,
                tokens: &next,
                logits: LogitsWanted::Last,
            }])
            .expect("forward");
        let row = logits.into_iter().next().flatten().expect("logits");
        let row = row.squeeze(0).expect("row").to_vec1::<f32>().expect("f32");
        let t = engine::sampling::argmax(&row);
        out.push(t);
        next = vec![t];
    }
    out
}

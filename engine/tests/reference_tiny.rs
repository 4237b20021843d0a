//! Tiny random-weight llama, qwen2 and starcoder2 checkpoints (safetensors) against
//! Hugging Face transformers, and a tiny qwen2 GGUF against llama.cpp.

mod common;

use common::{fixtures, greedy, ids, json, prompt_logits};
use engine::Model;

/// Encodes `text` the way prompt templates do: control-token markers by id,
/// the text between them as plain text (user text never yields control tokens).
fn encode_with_markers(model: &Model, text: &str) -> Vec<u32> {
    let tok = model.tokenizer();
    let mut out = Vec::new();
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for (i, _) in rest.char_indices() {
            if rest[i..].starts_with('<')
                && let Some(end) = rest[i..].find('>')
            {
                let candidate = &rest[i..i + end + 1];
                if let Some(id) = tok.token_id(candidate).filter(|&id| tok.is_control(id)) {
                    out.extend(tok.encode(&rest[..i]).expect("encode"));
                    out.push(id);
                    rest = &rest[i + end + 1..];
                    continue 'outer;
                }
            }
        }
        out.extend(tok.encode(rest).expect("encode"));
        break;
    }
    out
}

fn check(dir: &str, tolerance: f32) {
    let path = fixtures().join("tiny").join(dir);
    let model_path = if path.join("model.gguf").is_file() {
        path.join("model.gguf")
    } else {
        path.clone()
    };
    let model = Model::load(&model_path).expect("tiny model loads");
    let fx = json(&format!("tiny/{dir}/reference.json"));
    for p in fx["prompts"].as_array().expect("prompts") {
        let text = p["prompt"].as_str().expect("prompt");
        let expected_ids = ids(&p["ids"]);
        assert_eq!(
            encode_with_markers(&model, text),
            expected_ids,
            "{dir}: ids of {text:?}"
        );
        let logits = prompt_logits(&model, &expected_ids);
        let reference = p["logits"].as_array().expect("logits");
        assert_eq!(logits.len(), reference.len());
        let mut max_diff = 0f32;
        for (row, r) in logits.iter().zip(reference) {
            let r = r.as_array().expect("row");
            assert_eq!(row.len(), r.len(), "{dir}: vocab size");
            for (a, b) in row.iter().zip(r) {
                max_diff = max_diff.max((a - b.as_f64().expect("float") as f32).abs());
            }
        }
        eprintln!("{dir}: max |Δlogit| = {max_diff:.2e}");
        assert!(
            max_diff < tolerance,
            "{dir}: max logit difference {max_diff} ≥ {tolerance}"
        );
        let expected = ids(&p["greedy_ids"]);
        assert_eq!(
            greedy(&model, &expected_ids, expected.len()),
            expected,
            "{dir}: greedy continuation"
        );
    }
}

#[test]
fn tiny_llama_safetensors_matches_transformers() {
    check("llama", 1e-3);
}

#[test]
fn tiny_qwen2_safetensors_matches_transformers() {
    check("qwen2", 1e-3);
}

#[test]
fn tiny_starcoder2_safetensors_matches_transformers() {
    check("starcoder2", 1e-3);
}

#[test]
fn tiny_qwen2_gguf_matches_llama_cpp() {
    check("qwen2-gguf", 2e-2);
}

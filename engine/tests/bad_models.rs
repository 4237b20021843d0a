//! Broken or unsupported model files give errors that name the file and the problem.

mod common;

use common::fixtures;
use engine::{EngineError, Model};

fn tiny_gguf() -> Vec<u8> {
    std::fs::read(fixtures().join("tiny/qwen2-gguf/model.gguf")).expect("fixture")
}

#[test]
fn truncated_gguf_is_reported_as_truncated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cut.gguf");
    let bytes = tiny_gguf();
    std::fs::write(&path, &bytes[..bytes.len() - 1000]).expect("write");
    match Model::load(&path) {
        Err(e @ EngineError::Truncated { .. }) => assert!(e.to_string().contains("cut.gguf")),
        other => panic!("expected Truncated, got {other:?}"),
    }
    std::fs::write(&path, &bytes[..100]).expect("write");
    let err = Model::load(&path).expect_err("header cut");
    assert!(err.to_string().contains("cut.gguf"), "{err}");
}

#[test]
fn missing_and_garbage_files_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.gguf");
    assert!(matches!(Model::load(&missing), Err(EngineError::Io { .. })));
    let garbage = dir.path().join("garbage.gguf");
    std::fs::write(
        &garbage,
        b"this is not a model file at all, just text padding the header out",
    )
    .expect("write");
    let err = Model::load(&garbage).expect_err("garbage");
    assert!(err.to_string().contains("garbage.gguf"), "{err}");
}

#[test]
fn unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixtures().join("tiny/llama").join(f), dir.path().join(f)).expect("copy");
    }
    let cfg = std::fs::read_to_string(dir.path().join("config.json")).expect("read");
    let cfg = cfg.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt_neox\"");
    assert!(cfg.contains("gpt_neox"));
    std::fs::write(dir.path().join("config.json"), cfg).expect("write");
    match Model::load(dir.path()) {
        Err(EngineError::UnsupportedArchitecture { arch, .. }) => assert_eq!(arch, "gpt_neox"),
        other => panic!("expected UnsupportedArchitecture, got {other:?}"),
    }
}

#[test]
fn checksum_mismatch_names_both_hashes() {
    let path = fixtures().join("tiny/qwen2-gguf/model.gguf");
    let wrong = "0".repeat(64);
    match engine::checksum::verify_sha256(&path, &wrong) {
        Err(e @ EngineError::ChecksumMismatch { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&wrong) && msg.contains("model.gguf"), "{msg}");
        }
        other => panic!("expected ChecksumMismatch, got {other:?}"),
    }
    let right = engine::checksum::sha256_file(&path).expect("hash");
    engine::checksum::verify_sha256(&path, &right).expect("matches itself");
}

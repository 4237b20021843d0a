//! A remote model's prompt budgets counted with its own tokenizer (`backend.tokenizer`):
//! the tokenizer is read from a GGUF file's metadata alone, and the prefix and suffix
//! are cut to exactly the budget in its tokens (whole lines for the prefix), where the
//! character estimate would be off.

use std::path::PathBuf;
use std::sync::Arc;

use server::completion::remote::{TokenCount, estimate_tokens};

/// The tiny model: `SOUFFLEUR_TEST_MODEL`, else in the models directory.
fn tiny_model_path() -> PathBuf {
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
        "{} missing: run `souffleur model fetch smollm2-135m`",
        path.display()
    );
    path
}

fn code() -> String {
    (0..200)
        .map(|i| format!("    total_{i} = compute(values[{i}], weights[{i}]) * 0.5  # step {i}\n"))
        .collect()
}

#[test]
fn budgets_are_cut_in_the_models_own_tokens() {
    let tokenizer =
        Arc::new(engine::Tokenizer::load(&tiny_model_path()).expect("tokenizer from GGUF"));
    let count = TokenCount::Tokenizer(tokenizer.clone());
    let text = code();
    assert_eq!(count.count(&text), tokenizer.count(&text));
    assert_ne!(
        count.count(&text),
        estimate_tokens(&text),
        "the estimate would do as well"
    );

    for budget in [1, 37, 250, 1000] {
        let tail = count.tail(&text, budget);
        assert!(text.ends_with(&tail));
        assert!(
            count.count(&tail) <= budget,
            "{budget}: {}",
            count.count(&tail)
        );
        assert!(tail.is_empty() || text[..text.len() - tail.len()].ends_with('\n'));
        // One more line would not fit.
        let before = &text[..text.len() - tail.len()];
        if let Some(line) = before.trim_end_matches('\n').rsplit('\n').next() {
            let longer = format!("{line}\n{tail}");
            assert!(count.count(&longer) > budget, "{budget}: a line more fits");
        }

        let head = count.head(&text, budget);
        assert!(text.starts_with(&head));
        assert!(count.count(&head) <= budget);
        assert!(
            count.count(&head) + 2 >= budget,
            "{budget}: {}",
            count.count(&head)
        );
    }
    // Text within the budget is kept whole.
    assert_eq!(count.tail("x = 1\n", 100), "x = 1\n");
    assert_eq!(count.head("x = 1\n", 100), "x = 1\n");
    // Without a tokenizer, the documented estimate.
    assert_eq!(TokenCount::Estimate.tail("one\ntwo\nthree", 3), "three");
    assert_eq!(TokenCount::Estimate.head("abcdefgh", 2), "abcdef");
}

#[test]
fn a_tokenizer_that_is_not_a_model_file_is_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let bad = dir.path().join("model.gguf");
    std::fs::write(&bad, b"not a gguf").expect("write");
    assert!(engine::Tokenizer::load(&bad).is_err());
    assert!(engine::Tokenizer::load(&dir.path().join("tokenizer.json")).is_err());
}

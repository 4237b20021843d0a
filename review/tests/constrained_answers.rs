//! The review's answers come out of the engine in their shape, whatever the model:
//! SmolLM2-135M (the tiny model; not a code model, and left to itself it writes
//! prose or broken JSON) answers with a findings list every finding of which is valid
//! against the finding schema, and with one word to the self-check.

use std::path::PathBuf;
use std::sync::Arc;

use engine::{CancelToken, Engine, Model, SchedulerConfig, Speculation};
use review::model::{
    AnswerShape, EngineModel, ReviewModel, finding_schema, system_prompt, user_prompt,
};
use review::{Limits, NoFiles, context, diff};
use serde_json::Value;

const CHANGE: &str = "--- a/app.py\n+++ b/app.py\n@@ -1,1 +1,4 @@\n def run(db, q):\n+    rows = db.execute(\"SELECT * FROM t WHERE id = \" + q)\n+    for i in range(len(rows) + 1):\n+        print(rows[i])\n";

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
        "model missing at {}: run `souffleur model fetch smollm2-135m` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn tiny() -> Arc<Model> {
    Arc::new(Model::load(&tiny_model_path()).expect("tiny model"))
}

/// Whether the grammar of `shape` lets the model write exactly `text` after the
/// shape's prefix: every token of it allowed in turn.
fn allows(model: &Model, shape: AnswerShape, text: &str) -> bool {
    let mut constraint = model.constraint(&shape.grammar()).expect("grammar");
    let vocab = model.tokenizer().vocab_size();
    for id in model.tokenizer().encode(text).expect("encode") {
        let mut logits = vec![0.0f32; vocab];
        if constraint.restrict(&mut logits).is_err() || logits[id as usize] == f32::NEG_INFINITY {
            return false;
        }
        constraint.advance(id).expect("advance");
    }
    true
}

#[test]
fn the_grammar_allows_the_findings_shape_and_nothing_else() {
    let model = tiny();
    let f = r#"{"line": 2, "code": "return items[len(items)]", "severity": "error", "category": "bug", "message": "Index out of range."}"#;
    for good in [
        "]}".to_string(),
        format!("{f}]}}"),
        format!("{f}, {f}]}}"),
        format!(
            "{}]}}",
            f.replace("error", "warning").replace("bug", "security")
        ),
    ] {
        assert!(allows(&model, AnswerShape::Findings, &good), "{good}");
    }
    for bad in [
        "No defects found.".to_string(),
        "]} Also, line 2 looks odd.".to_string(),
        format!("\n{f}]}}"),
        format!("{}]}}", f.replace("2,", "\"+2\",")),
        format!("{}]}}", f.replace("error", "critical")),
        format!("{}]}}", f.replace("bug", "style")),
        format!(
            "{}]}}",
            f.replace(r#", "message": "Index out of range.""#, "")
        ),
        format!("{}]}}", f.replace("}", r#", "fix": "items[-1]"}"#)),
    ] {
        assert!(!allows(&model, AnswerShape::Findings, &bad), "{bad}");
    }
    for (text, ok) in [
        ("Yes", true),
        ("no", true),
        ("True.", false),
        ("Yes, it is.", false),
    ] {
        assert_eq!(allows(&model, AnswerShape::YesNo, text), ok, "{text}");
    }
}

fn reviewer() -> EngineModel {
    let model = tiny();
    let engine = Engine::start(model, SchedulerConfig::default()).expect("engine");
    EngineModel::new(engine, "tiny", CancelToken::new(), 8192, Speculation::Off)
}

fn user_turn(model: &EngineModel) -> String {
    let parsed = diff::parse(CHANGE).expect("diff");
    let view = context::FileView::new(&parsed.files[0], &NoFiles);
    let chunks = context::chunks(&view, None, &|t| model.count_tokens(t), &Limits::default());
    // Instructions that pull away from the shape (left to itself, the model then
    // answers the self-check with "True.").
    user_prompt(
        &chunks[0],
        Some(
            "Write your findings as a numbered list in plain English, one per line, with the line number first. Do not use JSON.",
        ),
    )
}

#[test]
fn a_small_chat_model_answers_in_the_findings_shape() {
    let model = reviewer();
    let user = user_turn(&model);
    let validator = jsonschema::validator_for(&finding_schema()).expect("schema");
    let answer = model
        .complete(&system_prompt(), &user, AnswerShape::Findings, 1500)
        .expect("answer");
    eprintln!("ANSWER {:?}", answer.text);
    assert!(
        answer.text.starts_with(r#"{"findings": ["#),
        "{}",
        answer.text
    );
    // One line, as the grammar writes JSON (left to itself, the model breaks lines).
    assert!(!answer.text.contains('\n'), "{}", answer.text);
    let value: Value = serde_json::from_str(&answer.text)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", answer.text));
    let findings = value["findings"].as_array().expect("a findings list");
    for f in findings {
        assert!(validator.is_valid(f), "{f}");
    }
    assert_eq!(
        value.as_object().map(|o| o.len()),
        Some(1),
        "{}",
        answer.text
    );
    // The tolerant reader agrees with the strict one.
    assert_eq!(
        review::answer::parse(&answer.text).len(),
        findings.len(),
        "{}",
        answer.text
    );
}

#[test]
fn a_small_chat_model_answers_the_self_check_with_one_word() {
    let model = reviewer();
    let user = format!(
        "{}\n\nA reviewer reported this about added line 3. Is that a real defect? Answer yes or no.",
        user_turn(&model)
    );
    let answer = model
        .complete(&system_prompt(), &user, AnswerShape::YesNo, 3)
        .expect("answer");
    eprintln!("ANSWER {:?}", answer.text);
    assert!(
        ["Yes", "No", "yes", "no"].contains(&answer.text.as_str()),
        "{:?}",
        answer.text
    );
}

//! Constrained decoding: whatever the model's preferences, the output matches the
//! grammar, ends where the grammar ends, is unchanged by speculation, and schemas the
//! engine cannot enforce are refused by name.

mod common;

use std::sync::Arc;

use common::fixtures;
use engine::{
    Engine, EngineError, FinishReason, GenerationRequest, GrammarSpec, Model, SchedulerConfig,
    Speculation,
};
use serde_json::{Value, json};

fn tiny() -> Arc<Model> {
    Arc::new(Model::load(&fixtures().join("tiny/qwen2")).expect("tiny model"))
}

/// A schema whose every valid output is short, so a generation must end by the grammar.
fn bounded_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 0, "maximum": 99},
            "tag": {"enum": ["alpha", "beta"]}
        },
        "required": ["ok", "n", "tag"],
        "additionalProperties": false
    })
}

fn check_bounded(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert!(v["ok"].is_boolean(), "{text}");
    let n = v["n"].as_i64().unwrap_or(-1);
    assert!((0..=99).contains(&n), "{text}");
    assert!(
        ["alpha", "beta"].contains(&v["tag"].as_str().unwrap_or("")),
        "{text}"
    );
    assert_eq!(v.as_object().map(|o| o.len()), Some(3), "{text}");
}

#[test]
fn constrained_output_matches_the_schema_and_ends_with_it() {
    let model = tiny();
    let engine = Engine::start(model.clone(), SchedulerConfig::default()).expect("engine");
    let spec = GrammarSpec::JsonSchema(bounded_schema());
    let prompts = [
        "def add(a, b):\n    return",
        "SELECT * FROM",
        "{\"ok\": maybe",
    ];
    for p in prompts {
        let prompt = model.tokenizer().encode(p).expect("encode");
        // Unconstrained, the tiny random model writes no JSON.
        let free = engine
            .generate(GenerationRequest::greedy(prompt.clone(), 40))
            .expect("generate");
        assert!(
            serde_json::from_str::<Value>(&free.text).is_err(),
            "{}",
            free.text
        );
        let mut req = GenerationRequest::greedy(prompt.clone(), 80);
        req.constraint = Some(model.constraint(&spec).expect("compile"));
        let out = engine.generate(req).expect("generate");
        check_bounded(&out.text);
        assert_eq!(out.stats.finish_reason, FinishReason::Stop, "{}", out.text);
        // Drafting proposes tokens the grammar may forbid; the output must not change.
        let mut req = GenerationRequest::greedy(prompt.clone(), 80);
        req.constraint = Some(model.constraint(&spec).expect("compile"));
        req.speculation = Speculation::NgramFixed { draft: 4 };
        let drafted = engine.generate(req).expect("generate");
        assert_eq!(drafted.tokens, out.tokens);
    }
}

#[test]
fn a_compiled_constraint_can_serve_several_requests() {
    let model = tiny();
    let engine = Engine::start(model.clone(), SchedulerConfig::default()).expect("engine");
    let constraint = model
        .constraint(&GrammarSpec::Lark(r#"start: "yes" | "no""#.into()))
        .expect("compile");
    let prompt = model.tokenizer().encode("Is it?").expect("encode");
    let outs: Vec<String> = (0..3)
        .map(|_| {
            let mut req = GenerationRequest::greedy(prompt.clone(), 8);
            req.constraint = Some(constraint.clone());
            engine.generate(req).expect("generate").text
        })
        .collect();
    assert!(outs[0] == "yes" || outs[0] == "no", "{outs:?}");
    assert!(outs.iter().all(|o| o == &outs[0]), "{outs:?}");
}

#[test]
fn any_json_object_is_an_object() {
    let model = tiny();
    let engine = Engine::start(model.clone(), SchedulerConfig::default()).expect("engine");
    let prompt = model.tokenizer().encode("Answer:").expect("encode");
    let mut req = GenerationRequest::greedy(prompt, 48);
    req.constraint = Some(model.constraint(&GrammarSpec::JsonObject).expect("compile"));
    let out = engine.generate(req).expect("generate");
    assert!(out.text.starts_with('{'), "{}", out.text);
    if out.stats.finish_reason == FinishReason::Stop {
        let v: Value = serde_json::from_str(&out.text).expect("complete JSON");
        assert!(v.is_object());
    }
}

#[test]
fn schemas_that_cannot_be_enforced_are_refused_by_name() {
    let model = tiny();
    let unsupported = json!({"type": "array", "items": {"type": "integer"}, "uniqueItems": true});
    match model.constraint(&GrammarSpec::JsonSchema(unsupported)) {
        Err(EngineError::InvalidRequest(m)) => assert!(m.contains("uniqueItems"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match model.constraint(&GrammarSpec::Lark("start: (".into())) {
        Err(EngineError::InvalidRequest(m)) => assert!(m.contains("grammar"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

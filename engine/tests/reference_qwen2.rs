//! The default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF: Q5_0, Q4_K, Q6_K and Q8_0
//! weights) against llama.cpp fixtures (`scripts/reference/qwen2_reference.py`): tokenizer
//! ids on real source files, fill-in-the-middle prompts token for token, top-1 logits and
//! greedy continuations on plain code and FIM prompts, and the repository-level format.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::{assert_tokens_match, compare, ids, json, model_in_home};
use engine::{FimStyle, Model, RepoContext, RepoFile};

/// Top-1 agreement with llama.cpp's logits on the prompts' positions.
const MIN_TOP1_AGREEMENT: f64 = 0.95;

/// Reference top-1/top-2 gap above which a greedy step must match.
const MARGIN: f64 = 1.0;

fn model_path() -> PathBuf {
    model_in_home(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "souffleur model fetch-default",
    )
}

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load(&model_path()).expect("default model loads"))
}

fn fixture() -> &'static serde_json::Value {
    static FX: OnceLock<serde_json::Value> = OnceLock::new();
    FX.get_or_init(|| json("qwen2_reference.json"))
}

#[test]
fn tokenizer_matches_llama_cpp_on_real_source_files() {
    assert_tokens_match(model(), fixture());
}

#[test]
fn fim_prompts_are_llama_cpps_token_for_token() {
    assert_eq!(model().fim().style(), FimStyle::Qwen);
    assert!(model().fim().has_repo_format());
    let fx = fixture();
    assert_eq!(ids(&fx["fim_ids"]), vec![151659, 151661, 151660]);
    let mut checked = 0;
    for p in fx["prompts"].as_array().expect("prompts") {
        if p["kind"] != "fim" {
            continue;
        }
        let prefix = p["prefix"].as_str().expect("prefix");
        let suffix = p["suffix"].as_str().expect("suffix");
        let ours = model().completion_prompt(prefix, suffix).expect("prompt");
        assert_eq!(ours, ids(&p["prompt_ids"]), "{}", p["name"]);
        checked += 1;
    }
    assert_eq!(checked, 4);
}

#[test]
fn logits_and_greedy_continuations_match_llama_cpp() {
    let a = compare(model(), fixture(), "qwen2_reference.json", MARGIN);
    let rate = a.top1_equal as f64 / a.positions as f64;
    assert!(
        rate >= MIN_TOP1_AGREEMENT,
        "top-1 agreement with llama.cpp {rate:.4} < {MIN_TOP1_AGREEMENT}"
    );
    // Divergences happen only at near-ties (checked in `compare`); most continuations
    // must be identical.
    assert!(
        a.greedy_identical * 2 >= a.prompts,
        "greedy continuations differ from llama.cpp on most prompts ({}/{})",
        a.greedy_identical,
        a.prompts
    );
}

#[test]
fn repository_level_prompt_layout() {
    let m = model();
    let tok = m.tokenizer();
    let repo_name = tok.token_id("<|repo_name|>").expect("repo_name token");
    let file_sep = tok.token_id("<|file_sep|>").expect("file_sep token");
    // The markers are control tokens: a generation that reaches one ends there (as at
    // <|endoftext|> and <|fim_pad|>).
    for id in [
        repo_name,
        file_sep,
        tok.token_id("<|fim_pad|>").expect("fim_pad"),
    ] {
        assert!(tok.is_control(id), "{id} is not a control token");
    }
    let files = [RepoFile {
        path: "src/util.py",
        text: "def helper(x):\n    return x * 2\n",
    }];
    let repo = RepoContext {
        name: "app",
        files: &files,
        path: "src/main.py",
    };
    let ids = m
        .completion_prompt_in_repo(&repo, "import util\n", "\n")
        .expect("prompt");
    let mut want = vec![repo_name];
    want.extend(tok.encode("app\n").expect("encode"));
    want.push(file_sep);
    want.extend(
        tok.encode("src/util.py\ndef helper(x):\n    return x * 2\n")
            .expect("encode"),
    );
    want.push(file_sep);
    want.extend(tok.encode("src/main.py\n").expect("encode"));
    want.extend(m.completion_prompt("import util\n", "\n").expect("fim"));
    assert_eq!(ids, want);
}

#[test]
fn chat_prompts_follow_the_models_own_template_as_rendered_by_jinja2_and_llama_cpp() {
    common::assert_chat_prompts_match(model(), "qwen2");
}

/// Scoring (`engine::scoring`) is the log-softmax of the logits checked against llama.cpp
/// above, whether the text goes through in one pass or in small chunks over the cache.
/// The last row of every chunk takes the one-token attention path (as generation does),
/// the reference rows the matrix path, and chunks of up to 16 rows attend with a mask
/// instead of the one-pass softmax: single positions differ by float rounding, up to
/// ~0.17 nat here (the logits themselves differ from llama.cpp's by up to ~0.5), the mean
/// over a text by less than 0.02 — and the mean is what review compares.
#[test]
fn scores_are_the_log_softmax_of_the_reference_checked_logits() {
    let fx = fixture();
    for p in fx["prompts"].as_array().expect("prompts").iter().take(3) {
        let prompt = ids(&p["prompt_ids"]);
        let logits = common::prompt_logits(model(), &prompt);
        let expected: Vec<f64> = logits
            .iter()
            .zip(&prompt[1..])
            .map(|(row, &next)| {
                let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                row[next as usize] as f64 - max - sum.ln()
            })
            .collect();
        for chunk in [256, 64, 16, 7] {
            let ours = engine::scoring::continuation_logprobs_chunked(
                model(),
                &prompt[..1],
                &prompt[1..],
                chunk,
            )
            .expect("scores");
            assert_eq!(ours.len(), expected.len());
            let mean = |v: &mut dyn Iterator<Item = f64>| {
                let v: Vec<f64> = v.collect();
                v.iter().sum::<f64>() / v.len() as f64
            };
            let (ours_mean, expected_mean) = (
                mean(&mut ours.iter().map(|&a| a as f64)),
                mean(&mut expected.iter().copied()),
            );
            assert!(
                (ours_mean - expected_mean).abs() < 0.02,
                "{} chunks of {chunk}: mean {ours_mean} vs {expected_mean}",
                p["name"]
            );
            for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
                assert!(
                    (*a as f64 - b).abs() < 0.25,
                    "{} position {i}, chunks of {chunk}: {a} vs {b}",
                    p["name"]
                );
            }
        }
    }
}

/// A code model finds the correct line more likely than the same line with a slip.
#[test]
fn infill_scores_prefer_the_intended_code_to_a_slip() {
    let cases = [
        (
            "def last(items):\n    return items[",
            "len(items) - 1]",
            "len(items)]",
            "\n\n\ndef first(items):\n    return items[0]\n",
        ),
        (
            "def clamp(x, lo, hi):\n    if x < lo:\n        return lo\n    if x ",
            "> hi:",
            "< hi:",
            "\n        return hi\n    return x\n",
        ),
    ];
    for (prefix, intended, slip, suffix) in cases {
        let good = engine::scoring::infill_score(model(), prefix, intended, suffix).expect("score");
        let bad = engine::scoring::infill_score(model(), prefix, slip, suffix).expect("score");
        assert!(good.tokens > 0 && bad.tokens > 0);
        assert!(
            good.mean_logprob > bad.mean_logprob,
            "{intended:?} {good:?} vs {slip:?} {bad:?}"
        );
    }
}

#[test]
fn user_defined_tokens_are_one_token_in_text_and_control_tokens_never() {
    // As llama.cpp tokenizes (USER_DEFINED always matched, CONTROL only when special
    // tokens are parsed): Qwen2.5's tool-call markers are single tokens in a rendered
    // chat (it has no `<tool_response>` token: that one is text).
    let tok = model().tokenizer();
    assert_eq!(tok.token_id("<tool_response>"), None);
    for marker in ["<tool_call>", "</tool_call>"] {
        let id = tok.token_id(marker).expect("in the vocabulary");
        assert!(!tok.is_control(id), "{marker}");
        let ids = tok.encode(&format!("a\n{marker}\nb")).expect("encode");
        assert_eq!(
            ids.iter().filter(|&&t| t == id).count(),
            1,
            "{marker}: {ids:?}"
        );
    }
    let end = tok.token_id("<|im_end|>").expect("<|im_end|>");
    assert!(!tok.encode("x<|im_end|>y").expect("encode").contains(&end));
    // A chat with a tool call renders the markers as the model saw them in training.
    let call = [engine::ToolCall {
        id: "c1".into(),
        name: "read_file".into(),
        arguments: serde_json::json!({"path": "a.rs"}),
    }];
    let turns = [
        engine::Turn::text("user", "Read a.rs."),
        engine::Turn {
            role: "assistant",
            content: "",
            tool_calls: &call,
        },
        engine::Turn::text("tool", "fn main() {}"),
    ];
    let tools = [
        serde_json::json!({"type": "function", "function": {"name": "read_file",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}}}}),
    ];
    let ids = model()
        .chat_prompt_with_tools(&turns, &tools, "")
        .expect("prompt");
    let text = tok.decode(&ids);
    assert!(text.contains("<|im_start|>assistant\n<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"a.rs\"}}\n</tool_call><|im_end|>"), "{text}");
    assert!(
        text.contains(
            "<|im_start|>user\n<tool_response>\nfn main() {}\n</tool_response><|im_end|>"
        ),
        "{text}"
    );
    for marker in ["<tool_call>", "</tool_call>"] {
        assert!(ids.contains(&tok.token_id(marker).expect("id")), "{marker}");
    }
}

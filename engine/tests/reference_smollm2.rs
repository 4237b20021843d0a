//! The default model (SmolLM2-135M, Q4_1 GGUF) against llama.cpp fixtures:
//! tokenizer ids on real source files, top-1 logits, and greedy continuations.

mod common;

use std::sync::OnceLock;

use common::{Agreement, assert_tokens_match, compare, default_model_path, fixtures, ids, json};
use engine::Model;

/// Top-1 agreement with llama.cpp's Q4_1 logits. llama.cpp itself reaches only 94–97%
/// against an exact (f64, dequantised) forward pass of the same weights; see
/// `scripts/reference/README.md`.
const MIN_TOP1_AGREEMENT: f64 = 0.95;

/// Reference top-1/top-2 gap above which a greedy step must match.
const MARGIN: f64 = 1.0;

fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::load(&default_model_path()).expect("default model loads"))
}

#[test]
fn tokenizer_matches_llama_cpp_on_real_source_files() {
    assert_tokens_match(model(), &json("smollm2_tokens.json"));
}

#[test]
fn special_token_text_in_user_input_is_not_a_control_token() {
    let tok = model().tokenizer();
    let ids = tok.encode("<|endoftext|>").expect("encode");
    assert!(
        ids.len() > 1,
        "literal text must not become the control token: {ids:?}"
    );
    assert!(ids.iter().all(|&i| !tok.is_control(i)));
}

/// Compares prompt logits and greedy continuations with a fixture.
fn compare_with(fixture: &str) -> Agreement {
    compare(model(), &json(fixture), fixture, MARGIN)
}

/// The token ids of the llama.cpp fixture's prompts.
fn reference_prompts() -> Vec<Vec<u32>> {
    json("smollm2_logits.json")["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| ids(&p["prompt_ids"]))
        .collect()
}

#[test]
fn logits_match_llama_cpp() {
    let a = compare_with("smollm2_logits.json");
    let rate = a.top1_equal as f64 / a.positions as f64;
    assert!(
        rate >= MIN_TOP1_AGREEMENT,
        "top-1 agreement with llama.cpp {rate:.4} < {MIN_TOP1_AGREEMENT}"
    );
    // Every divergence was checked above to happen at a near-tie of the reference
    // (top-1 lead ≤ MARGIN); which near-ties flip depends on summation order (the
    // AVX2 and AVX-512 kernels give 4/9 and 3/9 identical, and 4/9 and 5/9 against
    // the float64 reference), so only a floor is asserted here.
    assert!(
        a.greedy_identical * 3 >= a.prompts,
        "greedy continuations differ from llama.cpp on most prompts"
    );
}

#[test]
fn logits_match_float64_dequantized_reference() {
    let a = compare_with("smollm2_logits_dequant.json");
    let rate = a.top1_equal as f64 / a.positions as f64;
    assert!(
        rate >= MIN_TOP1_AGREEMENT,
        "top-1 agreement with the float64 reference {rate:.4} < {MIN_TOP1_AGREEMENT}"
    );
}

#[test]
fn speculative_greedy_decoding_is_identical_on_the_default_model() {
    let model = std::sync::Arc::new(Model::load(&default_model_path()).expect("default model"));
    let engine = engine::Engine::start(
        model.clone(),
        engine::SchedulerConfig {
            prefix_cache_bytes: 0,
            ..Default::default()
        },
    )
    .expect("engine");
    let prompts = reference_prompts();
    // Plain decoding, one request at a time.
    let plain: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            let mut req = engine::GenerationRequest::greedy(p.clone(), 32);
            req.speculation = engine::Speculation::Off;
            engine.generate(req).expect("plain").tokens
        })
        .collect();
    let (mut drafted, mut accepted) = (0, 0);
    for max_draft in [3, 8] {
        // All prompts at once, speculating and plain mixed in the same batches.
        let handles: Vec<_> = prompts
            .iter()
            .enumerate()
            .map(|(k, p)| {
                let engine = engine.clone();
                let mut req = engine::GenerationRequest::greedy(p.clone(), 32);
                req.speculation = match k % 4 {
                    3 => engine::Speculation::Off,
                    2 => engine::Speculation::Ngram { max_draft },
                    _ => engine::Speculation::NgramFixed { draft: max_draft },
                };
                std::thread::spawn(move || engine.generate(req).expect("speculative"))
            })
            .collect();
        for (k, h) in handles.into_iter().enumerate() {
            let out = h.join().expect("thread");
            assert_eq!(
                out.tokens, plain[k],
                "prompt {k} (draft {max_draft}, batched)"
            );
            drafted += out.stats.drafted_tokens;
            accepted += out.stats.accepted_tokens;
        }
    }
    eprintln!("speculation: {accepted}/{drafted} drafted tokens accepted");
    assert!(drafted > 0);
}

/// A prompt whose start comes from the prefix cache (its last token fed alone) gets the
/// same output as the same prompt computed in one chunk: the chunk's last row takes the
/// one-token attention path.
#[test]
fn a_prompt_from_the_prefix_cache_gets_the_same_output_as_computed_fresh() {
    let model = std::sync::Arc::new(Model::load(&default_model_path()).expect("default model"));
    let engine = engine::Engine::start(model, engine::SchedulerConfig::default()).expect("engine");
    for (k, prompt) in reference_prompts().iter().enumerate() {
        assert!(
            prompt.len() > 17,
            "prompt {k} fits the one-token path anyway"
        );
        let run = || {
            let mut req = engine::GenerationRequest::greedy(prompt.clone(), 16);
            req.speculation = engine::Speculation::Off;
            engine.generate(req).expect("generate")
        };
        let fresh = run();
        let again = run();
        assert_eq!(
            again.stats.cached_prompt_tokens,
            prompt.len() - 1,
            "prompt {k}"
        );
        assert_eq!(again.tokens, fresh.tokens, "prompt {k}");
    }
}

/// A request's hint (its expected output) is drafted and verified like any draft:
/// the output is plain greedy decoding's whether the hint is right, right only at
/// the start, or wrong, and a right hint saves decode steps.
#[test]
fn hinted_generation_is_identical_to_plain_decoding() {
    let model = std::sync::Arc::new(Model::load(&default_model_path()).expect("default model"));
    let engine = engine::Engine::start(
        model,
        engine::SchedulerConfig {
            prefix_cache_bytes: 0,
            ..Default::default()
        },
    )
    .expect("engine");
    let run = |prompt: &[u32], hint: Vec<u32>| {
        let mut req = engine::GenerationRequest::greedy(prompt.to_vec(), 24);
        // Fixed draft lengths: how much of a hint is worth verifying otherwise depends
        // on measured step times, which other tests running at once disturb.
        req.speculation = engine::Speculation::NgramFixed { draft: 8 };
        req.hint = hint;
        engine.generate(req).expect("generate")
    };
    for (k, prompt) in reference_prompts().iter().enumerate() {
        let mut req = engine::GenerationRequest::greedy(prompt.clone(), 24);
        req.speculation = engine::Speculation::Off;
        let plain = engine.generate(req).expect("plain");
        let right = run(prompt, plain.tokens.clone());
        assert_eq!(right.tokens, plain.tokens, "prompt {k}, right hint");
        assert!(
            right.stats.accepted_tokens >= plain.tokens.len().min(8) - 1,
            "prompt {k}: {} of {} hinted tokens accepted",
            right.stats.accepted_tokens,
            right.stats.drafted_tokens
        );
        assert!(right.stats.decode_steps < plain.stats.decode_steps);
        let mut half = plain.tokens.clone();
        half[4] = half[4].wrapping_add(1) % 1000;
        let half = run(prompt, half);
        assert_eq!(
            half.tokens, plain.tokens,
            "prompt {k}, hint wrong from token 4"
        );
        let wrong = run(prompt, (100..130).collect());
        assert_eq!(wrong.tokens, plain.tokens, "prompt {k}, wrong hint");
    }
}

/// Greedy outputs with a draft model equal plain decoding on the default model, for a
/// draft that agrees often (the model itself) and one that agrees sometimes (a block
/// subset written by `write_layer_subset`), batched with plain and n-gram requests.
#[test]
fn draft_model_speculation_is_identical_on_the_default_model() {
    use engine::model::layer_subset::write_layer_subset;
    use engine::{Engine, GenerationRequest, SchedulerConfig, Speculation};
    use std::sync::Arc;

    let path = default_model_path();
    let model = Arc::new(Model::load(&path).expect("default model"));
    let dir = tempfile::tempdir().expect("tempdir");
    let subset_path = dir.path().join("draft.gguf");
    let blocks: Vec<usize> = (0..30).filter(|&b| b != 15).collect();
    write_layer_subset(&path, &blocks, &subset_path).expect("write draft");
    let subset = Arc::new(Model::load(&subset_path).expect("draft loads"));
    assert_eq!(subset.info().config.num_layers, 29);
    assert_eq!(
        subset.tokenizer().vocab_size(),
        model.tokenizer().vocab_size()
    );
    let config = || SchedulerConfig {
        prefix_cache_bytes: 0,
        ..Default::default()
    };
    let mut prompts = reference_prompts();
    prompts.truncate(6);
    let plain_engine = Engine::start(model.clone(), config()).expect("engine");
    let plain: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            plain_engine
                .generate(GenerationRequest::greedy(p.clone(), 24))
                .expect("plain")
                .tokens
        })
        .collect();
    for (name, draft) in [("itself", model.clone()), ("29 blocks", subset)] {
        let engine = Engine::start_with_draft(model.clone(), draft, config()).expect("engine");
        let (mut drafted, mut accepted) = (0, 0);
        for k in [2, 5] {
            let handles: Vec<_> = prompts
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let engine = engine.clone();
                    let mut req = GenerationRequest::greedy(p.clone(), 24);
                    req.speculation = match i % 4 {
                        0 => Speculation::Off,
                        1 => Speculation::NgramFixed { draft: k },
                        2 => Speculation::Draft { max_draft: k },
                        _ => Speculation::DraftFixed { draft: k },
                    };
                    std::thread::spawn(move || engine.generate(req).expect("speculative"))
                })
                .collect();
            for (i, h) in handles.into_iter().enumerate() {
                let out = h.join().expect("thread");
                assert_eq!(out.tokens, plain[i], "draft {name}, prompt {i}, k {k}");
                if i % 4 == 3 {
                    drafted += out.stats.drafted_tokens;
                    accepted += out.stats.accepted_tokens;
                }
            }
        }
        eprintln!("draft {name}: {accepted}/{drafted} drafted tokens accepted");
        assert!(drafted > 0, "draft {name} never drafted");
        if name == "itself" {
            assert_eq!(accepted, drafted, "a model agrees with itself");
        } else {
            assert!(accepted < drafted, "rejections were exercised");
        }
    }
}

/// A draft must share the tokenizer; requests for a draft model need one loaded.
#[test]
fn draft_models_are_checked() {
    use engine::{Engine, GenerationRequest, SchedulerConfig, Speculation};
    use std::sync::Arc;

    let model = Arc::new(Model::load(&default_model_path()).expect("default model"));
    let tiny = Arc::new(Model::load(&fixtures().join("tiny/llama")).expect("tiny model"));
    let err = Engine::start_with_draft(model.clone(), tiny, SchedulerConfig::default())
        .expect_err("different tokenizer");
    assert!(err.to_string().contains("tokenizer"), "{err}");
    let engine = Engine::start(model.clone(), SchedulerConfig::default()).expect("engine");
    let mut req = GenerationRequest::greedy(vec![1, 2, 3], 4);
    req.speculation = Speculation::DRAFT;
    let err = engine.generate(req).expect_err("no draft model");
    assert!(err.to_string().contains("draft model"), "{err}");
}

#[test]
fn chat_prompts_follow_the_models_own_template_as_rendered_by_jinja2_and_llama_cpp() {
    common::assert_chat_prompts_match(model(), "smollm2");
}

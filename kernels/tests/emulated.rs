//! The CUDA kernels, run on the CPU by the grid emulator, against the engine's CPU
//! implementations (`engine::kernel_checks`, which `scripts/gpu-check.sh` runs on a
//! GPU): bit-exact activation quantisation and integer block sums, products and float
//! kernels to a tight tolerance, on random inputs and on the default model's real
//! weights and embeddings.

use std::path::PathBuf;

use engine::kernel_checks::{self, Outcome, random_weight};
use kernels::{AttentionShape, Emulator, Format, GemvShape, KernelError, emulated};

/// The default model (Qwen2.5-Coder-0.5B, Q4_K_M: Q4_K, Q5_0, Q6_K and Q8_0 weights).
fn default_model() -> PathBuf {
    let home = std::env::var_os("SOUFFLEUR_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".souffleur")
        });
    let path = home
        .join("models")
        .join("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
    assert!(
        path.is_file(),
        "model missing at {}: run `souffleur model fetch-default` (scripts/test.sh does)",
        path.display()
    );
    path
}

fn passes(name: &str, outcome: Outcome) {
    match outcome {
        Ok(summary) => eprintln!("{name}: {summary}"),
        Err(e) => panic!("{name}: {e}"),
    }
}

#[test]
fn quantisation_matches_the_engine_bit_for_bit() {
    passes("random", kernel_checks::quantisation(&Emulator));
    passes(
        "model",
        kernel_checks::quantisation_model(&Emulator, &default_model()),
    );
}

#[test]
fn integer_block_sums_match_the_engine_exactly_on_random_weights() {
    passes("random", kernel_checks::block_sums_random(&Emulator));
}

#[test]
fn integer_block_sums_match_the_engine_exactly_on_the_default_model() {
    passes(
        "model",
        kernel_checks::block_sums_model(&Emulator, &default_model()),
    );
}

#[test]
fn products_match_the_engine_for_one_to_eight_rows() {
    passes("random", kernel_checks::products_random(&Emulator));
}

#[test]
fn products_match_the_engine_on_the_default_model() {
    passes(
        "model",
        kernel_checks::products_model(&Emulator, &default_model()),
    );
}

#[test]
fn each_row_of_a_product_equals_its_one_row_product_bit_for_bit() {
    passes("rows", kernel_checks::products_row_invariant(&Emulator));
}

#[test]
fn each_verification_row_of_attention_equals_its_decode_step_bit_for_bit() {
    passes("rows", kernel_checks::attention_row_invariant(&Emulator));
}

#[test]
fn decode_attention_matches_the_engine() {
    passes("attention", kernel_checks::decode_attention(&Emulator));
}

#[test]
fn rms_norm_matches_candle() {
    passes("rms_norm", kernel_checks::rms_norm(&Emulator));
}

#[test]
fn fused_rope_matches_candle_and_fills_the_cache() {
    passes("rope", kernel_checks::rope(&Emulator));
}

#[test]
fn copy_kernel_copies_with_a_grid_stride() {
    passes("copy", kernel_checks::copy(&Emulator));
}

#[test]
fn the_emulator_reports_broken_barriers_and_exchanges_warp_values() {
    let x: [f32; 64] = std::array::from_fn(|i| i as f32);
    let (broken, sums) = emulated::self_test(&x);
    assert!(
        matches!(broken, Err(KernelError::Emulator(ref m)) if m.contains("__syncthreads")),
        "{broken:?}"
    );
    let sums = sums.expect("warp sums");
    for (i, s) in sums.iter().enumerate() {
        let warp = i / 32;
        let total: f32 = (warp * 32..warp * 32 + 32).map(|j| j as f32).sum();
        let lane = i % 32;
        let down = if lane + 3 < 32 { i + 3 } else { i };
        assert_eq!(*s, total + down as f32, "lane {i}");
    }
}

#[test]
fn bad_shapes_are_refused_by_name() {
    let w = random_weight(Format::Q4K, 2, 256, 1).expect("weight");
    let shape = GemvShape {
        format: Format::Q4K,
        out_features: 2,
        in_features: 256,
        rows: 9,
    };
    let err = emulated::gemv(shape, &w, &vec![0.0; 9 * 256]).expect_err("9 rows");
    assert!(err.to_string().contains("9 rows"), "{err}");
    let err =
        emulated::gemv(GemvShape { rows: 1, ..shape }, &w[1..], &[0.0; 256]).expect_err("bytes");
    assert!(err.to_string().contains("bytes"), "{err}");
    let att = AttentionShape {
        heads: 3,
        kv_heads: 2,
        head_dim: 64,
        capacity: 4,
        pos: 0,
        rows: 1,
    };
    let err =
        emulated::decode_attention(att, &[0.0; 192], &[0.0; 512], &[0.0; 512]).expect_err("heads");
    assert!(err.to_string().contains("heads"), "{err}");
}

//! The CUDA kernels, run on the CPU by the grid emulator, against the engine's CPU
//! implementations: bit-exact activation quantisation and integer block sums, products
//! and float kernels to a tight tolerance, on random inputs and on the default model's
//! real weights and embeddings.

mod common;

use candle_core::{Device, Tensor};
use common::{Rng, assert_close, cpu_product, dtype, random_weight, real_activations, real_weight};
use engine::model::attention::{self, AttentionShape as CpuShape};
use engine::model::quant_matmul::reference;
use kernels::emulated::{self, RopeInputs};
use kernels::{AttentionShape, Format, GemvShape, KernelError, RopeShape};

/// Relative tolerance of float results (sums in another order than the CPU's).
const REL: f32 = 2e-5;

#[test]
fn quantisation_matches_the_engine_bit_for_bit() {
    let mut x = Rng::new(1).values(32 * 40, 3.0);
    x[32..64].fill(0.0); // a block of zeros: d = 0
    x[70] = 1e-30; // a tiny value beside ordinary ones
    x.extend(real_activations(2, 896));
    let got = emulated::quantize(&x).expect("kernel");
    let want = reference::quantize_activations(&x).expect("reference");
    assert_eq!(got.q, want.q);
    assert_eq!(
        got.d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.d.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    assert_eq!(
        got.s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        want.s.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
}

fn check_sums(what: &str, f: Format, weight: &[u8], out: usize, inp: usize, x: &[f32]) {
    let acts = reference::quantize_activations(&x[..inp]).expect("quantize");
    let shape = GemvShape {
        format: f,
        out_features: out,
        in_features: inp,
        rows: 1,
    };
    let got = emulated::block_sums(shape, weight, &acts.q).expect("kernel");
    let want = reference::block_sums(dtype(f), weight, out, inp, &acts.q).expect("reference");
    assert_eq!(got.len(), out * inp / 32, "{what}");
    assert!(
        got == want,
        "{what}: integer block sums differ from the engine's"
    );
}

#[test]
fn integer_block_sums_match_the_engine_exactly_on_random_weights() {
    for (i, f) in Format::ALL.into_iter().enumerate() {
        let (out, inp) = (12, 512);
        let w = random_weight(f, out, inp, 10 + i as u64);
        let x = Rng::new(20 + i as u64).values(inp, 1.0);
        check_sums(&format!("{f:?} random"), f, &w, out, inp, &x);
    }
}

#[test]
fn integer_block_sums_match_the_engine_exactly_on_the_default_model() {
    for f in Format::ALL {
        let (name, w, out, inp) = real_weight(f, 8);
        let x = real_activations(1, inp);
        check_sums(&format!("{f:?} {name}"), f, &w, out, inp, &x);
    }
}

fn check_product(what: &str, f: Format, w: &[u8], out: usize, inp: usize, x: &[f32], rows: usize) {
    let shape = GemvShape {
        format: f,
        out_features: out,
        in_features: inp,
        rows,
    };
    let got = emulated::gemv(shape, w, x).expect("kernel");
    let want = cpu_product(f, w, out, inp, x, rows);
    assert_close(&format!("{what}, {rows} rows"), &got, &want, REL);
}

#[test]
fn products_match_the_engine_for_one_to_eight_rows() {
    for (i, f) in Format::ALL.into_iter().enumerate() {
        // 37 outputs: the last block of four warps is partly empty.
        let (out, inp) = (37, 768);
        let w = random_weight(f, out, inp, 30 + i as u64);
        for rows in 1..=8 {
            let x = Rng::new(40 + rows as u64).values(rows * inp, 0.7);
            check_product(&format!("{f:?} random"), f, &w, out, inp, &x, rows);
        }
    }
}

#[test]
fn products_match_the_engine_on_the_default_model() {
    for f in Format::ALL {
        let (name, w, out, inp) = real_weight(f, 24);
        for rows in [1, 4] {
            let x = real_activations(rows, inp);
            check_product(&format!("{f:?} {name}"), f, &w, out, inp, &x, rows);
        }
    }
}

#[test]
fn decode_attention_matches_the_engine() {
    // (heads, kv_heads, head_dim, pos, rows): Qwen2.5-0.5B's and 1.5B's heads, odd
    // lengths, a first position, speculative verification rows.
    let cases = [
        (14, 2, 64, 0, 1),
        (14, 2, 64, 37, 1),
        (12, 2, 128, 130, 3),
        (4, 4, 32, 5, 5),
        (2, 1, 256, 9, 2),
    ];
    for (n, (heads, kv_heads, hd, pos, rows)) in cases.into_iter().enumerate() {
        let capacity = pos + rows + 3;
        let mut rng = Rng::new(100 + n as u64);
        let q = rng.values(heads * rows * hd, 1.0);
        let keys = rng.values(kv_heads * capacity * hd, 1.0);
        let values = rng.values(kv_heads * capacity * hd, 1.0);
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
            capacity,
            pos,
            rows,
        };
        let got = emulated::decode_attention(shape, &q, &keys, &values).expect("kernel");
        let want = attention::attend(
            &q,
            &keys,
            &values,
            CpuShape {
                heads,
                kv_heads,
                head_dim: hd,
                capacity,
                pos,
                rows,
            },
        );
        assert_close(&format!("attention case {n}"), &got, &want, 1e-5);
    }
}

#[test]
fn rms_norm_matches_candle() {
    let (rows, cols) = (3, 896);
    let mut rng = Rng::new(7);
    let x = rng.values(rows * cols, 2.0);
    let w = rng.values(cols, 1.0);
    let got = emulated::rms_norm(&x, &w, 1e-6).expect("kernel");
    let xt = Tensor::from_vec(x, (rows, cols), &Device::Cpu).expect("x");
    let wt = Tensor::from_vec(w, cols, &Device::Cpu).expect("w");
    let want = candle_nn::ops::rms_norm(&xt, &wt, 1e-6)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1::<f32>())
        .expect("candle");
    assert_close("rms_norm", &got, &want, 1e-6);
}

/// Candle's rotation of `x` `[t, heads · hd]` at positions `rows`, laid out `[heads, t, hd]`,
/// after an optional per-head RMSNorm.
fn candle_rope(
    x: &[f32],
    heads: usize,
    hd: usize,
    rows: std::ops::Range<usize>,
    tables: (&Tensor, &Tensor),
    interleaved: bool,
    norm: Option<(&[f32], f32)>,
) -> Vec<f32> {
    let (pos, t) = (rows.start, rows.len());
    let mut xt = Tensor::from_vec(x.to_vec(), (t, heads, hd), &Device::Cpu).expect("x");
    if let Some((w, eps)) = norm {
        let wt = Tensor::from_vec(w.to_vec(), hd, &Device::Cpu).expect("w");
        xt = candle_nn::ops::rms_norm(&xt, &wt, eps).expect("norm");
    }
    let xt = xt
        .transpose(0, 1)
        .and_then(|t| t.unsqueeze(0))
        .and_then(|t| t.contiguous())
        .expect("layout");
    let cos = tables.0.narrow(0, pos, t).expect("cos");
    let sin = tables.1.narrow(0, pos, t).expect("sin");
    let y = if interleaved {
        candle_nn::rotary_emb::rope_i(&xt, &cos, &sin)
    } else {
        candle_nn::rotary_emb::rope(&xt, &cos, &sin)
    };
    y.and_then(|y| y.flatten_all())
        .and_then(|y| y.to_vec1())
        .expect("rope")
}

#[test]
fn fused_rope_matches_candle_and_fills_the_cache() {
    let (heads, kv_heads, hd, positions) = (6, 2, 64, 40);
    let half = hd / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / 1e6f32.powf(2.0 * i as f32 / hd as f32))
        .collect();
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..positions {
        for f in &inv {
            cos.push((p as f32 * f).cos());
            sin.push((p as f32 * f).sin());
        }
    }
    let cos_t = Tensor::from_vec(cos.clone(), (positions, half), &Device::Cpu).expect("cos");
    let sin_t = Tensor::from_vec(sin.clone(), (positions, half), &Device::Cpu).expect("sin");
    for (n, (interleaved, with_norm)) in [(false, false), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let (pos, t, capacity) = (11, 3, 20);
        let mut rng = Rng::new(200 + n as u64);
        let q = rng.values(t * heads * hd, 1.0);
        let k = rng.values(t * kv_heads * hd, 1.0);
        let v = rng.values(t * kv_heads * hd, 1.0);
        let qn = rng.values(hd, 1.0);
        let kn = rng.values(hd, 1.0);
        let eps = 1e-6;
        let mut keys = vec![f32::NAN; kv_heads * capacity * hd];
        let mut values = vec![f32::NAN; kv_heads * capacity * hd];
        let shape = RopeShape {
            heads,
            kv_heads,
            head_dim: hd,
            capacity,
            pos,
            rows: t,
            interleaved,
        };
        let inputs = RopeInputs {
            q: &q,
            k: &k,
            v: &v,
            cos: &cos,
            sin: &sin,
            qk_norm: with_norm.then_some((qn.as_slice(), kn.as_slice(), eps)),
        };
        let q_out = emulated::rope_qk(shape, inputs, &mut keys, &mut values).expect("kernel");
        let tables = (&cos_t, &sin_t);
        let want_q = candle_rope(
            &q,
            heads,
            hd,
            pos..pos + t,
            tables,
            interleaved,
            with_norm.then_some((qn.as_slice(), eps)),
        );
        assert_close(&format!("rope q, case {n}"), &q_out, &want_q, 1e-5);
        let want_k = candle_rope(
            &k,
            kv_heads,
            hd,
            pos..pos + t,
            tables,
            interleaved,
            with_norm.then_some((kn.as_slice(), eps)),
        );
        for h in 0..kv_heads {
            for r in 0..capacity {
                let at = (h * capacity + r) * hd;
                let (kc, vc) = (&keys[at..at + hd], &values[at..at + hd]);
                if (pos..pos + t).contains(&r) {
                    let i = r - pos;
                    assert_close(
                        &format!("cached key, case {n}"),
                        kc,
                        &want_k[(h * t + i) * hd..][..hd],
                        1e-5,
                    );
                    assert_eq!(
                        vc,
                        &v[(i * kv_heads + h) * hd..][..hd],
                        "cached value, case {n}"
                    );
                } else {
                    assert!(
                        kc.iter().chain(vc).all(|x| x.is_nan()),
                        "row {r} touched, case {n}"
                    );
                }
            }
        }
    }
}

#[test]
fn copy_kernel_copies_with_a_grid_stride() {
    let src = Rng::new(9).values(10_000, 1.0);
    assert_eq!(emulated::copy(&src, 3).expect("kernel"), src);
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
    let w = random_weight(Format::Q4K, 2, 256, 1);
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

//! The CUDA kernels (`kernels` crate) checked against the engine's CPU implementations,
//! on whatever runs them: the grid emulator in CI, a GPU in `scripts/gpu-check.sh`.
//!
//! Activation quantisation and the integer block sums must match the CPU bit for bit;
//! products, attention, RMSNorm and RoPE (float sums in another order) to a tight
//! relative tolerance. Inputs are random (a fixed seed) and, given the default model's
//! GGUF, its real weights and token embeddings.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use kernels::{AttentionShape, Format, GemvShape, HostKernels, RopeInputs, RopeShape};

use crate::model::attention;
use crate::model::quant_matmul::{Kernel, QuantWeight, reference};

/// A check's result: a summary on success, what differed on failure.
pub type Outcome = std::result::Result<String, String>;

/// Relative tolerance of the quantised products (float sums in another order).
const PRODUCT_REL: f32 = 2e-5;
/// Relative tolerance of attention and RoPE.
const FLOAT_REL: f32 = 1e-5;

/// One check's name, result and duration.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Its result.
    pub outcome: Outcome,
    /// Seconds it took.
    pub seconds: f64,
}

/// Every check; those on real weights only when `model` (the default model's GGUF) is given.
pub fn run_all(k: &dyn HostKernels, model: Option<&Path>) -> Vec<Check> {
    type Plain = fn(&dyn HostKernels) -> Outcome;
    type WithModel = fn(&dyn HostKernels, &Path) -> Outcome;
    let plain: [(&'static str, Plain); 9] = [
        ("quantisation, random", quantisation),
        ("integer block sums, random weights", block_sums_random),
        ("products of 1-8 rows, random weights", products_random),
        (
            "products: each of 8 rows equals its 1-row product",
            products_row_invariant,
        ),
        ("decode attention", decode_attention),
        (
            "attention: each verification row equals its decode step",
            attention_row_invariant,
        ),
        ("rms_norm", rms_norm),
        ("fused rope + QK-norm + cache write", rope),
        ("copy", copy),
    ];
    let with_model: [(&'static str, WithModel); 3] = [
        ("quantisation, model embeddings", quantisation_model),
        ("integer block sums, model weights", block_sums_model),
        ("products, model weights", products_model),
    ];
    let timed = |name: &'static str, f: &dyn Fn() -> Outcome| {
        let started = Instant::now();
        let outcome = f();
        Check {
            name,
            outcome,
            seconds: started.elapsed().as_secs_f64(),
        }
    };
    let mut out: Vec<Check> = plain.iter().map(|(n, f)| timed(n, &|| f(k))).collect();
    if let Some(m) = model {
        out.extend(with_model.iter().map(|(n, f)| timed(n, &|| f(k, m))));
    }
    out
}

fn kernel_err(e: kernels::KernelError) -> String {
    e.to_string()
}

/// A small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values, roughly Gaussian (a sum of three uniforms) times `scale`.
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next_f32() + self.next_f32() + self.next_f32()) * scale)
            .collect()
    }
}

/// The candle type of a kernel format.
pub fn dtype(f: Format) -> GgmlDType {
    match f {
        Format::Q4K => GgmlDType::Q4K,
        Format::Q5_0 => GgmlDType::Q5_0,
        Format::Q6K => GgmlDType::Q6K,
        Format::Q8_0 => GgmlDType::Q8_0,
    }
}

/// Random weights `[out, inp]` quantised to `f` by candle (GGUF block bytes).
pub fn random_weight(f: Format, out: usize, inp: usize, seed: u64) -> crate::Result<Vec<u8>> {
    let w = Rng::new(seed).values(out * inp, 0.05);
    let t = Tensor::from_vec(w, (out, inp), &Device::Cpu)?;
    let q = QTensor::quantize(&t, dtype(f))?;
    Ok(QuantWeight::from_qtensor(Arc::new(q))?.data()?.into_owned())
}

/// Checks that `got` matches `want` to within `rel` of the largest magnitude of `want`;
/// returns the largest relative difference.
pub fn compare(
    what: &str,
    got: &[f32],
    want: &[f32],
    rel: f32,
) -> std::result::Result<f32, String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} values, expected {}",
            got.len(),
            want.len()
        ));
    }
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    let mut worst = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let d = (g - w).abs() / scale;
        if d.is_nan() || d > rel {
            return Err(format!(
                "{what}: element {i}: {g} vs {w} (scale {scale}, tolerance {rel})"
            ));
        }
        worst = worst.max(d);
    }
    Ok(worst)
}

/// The bit patterns of floats, for comparisons that must be exact.
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Random queries `[heads, rows, head_dim]` and keys and values `[kv_heads, capacity,
/// head_dim]` for `shape`.
fn attention_inputs(shape: AttentionShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let (hd, cache) = (
        shape.head_dim,
        shape.kv_heads * shape.capacity * shape.head_dim,
    );
    let q = rng.values(shape.heads * shape.rows * hd, 1.0);
    let keys = rng.values(cache, 1.0);
    let values = rng.values(cache, 1.0);
    (q, keys, values)
}

fn read_model(path: &Path) -> std::result::Result<(std::fs::File, gguf_file::Content), String> {
    let mut file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| e.to_string())?;
    Ok((file, content))
}

/// A real weight of a GGUF model: the first (by name) of its 2-D tensors in format `f`,
/// cut to its first `rows` output rows. Returns (name, bytes, out, in).
pub fn real_weight(
    path: &Path,
    f: Format,
    rows: usize,
) -> std::result::Result<(String, Vec<u8>, usize, usize), String> {
    let (mut file, content) = read_model(path)?;
    let mut names: Vec<_> = content
        .tensor_infos
        .iter()
        .filter(|(_, i)| i.ggml_dtype == dtype(f) && i.shape.rank() == 2)
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    let name = names
        .first()
        .ok_or_else(|| format!("no {f:?} tensor in the model"))?
        .clone();
    let q = content
        .tensor(&mut file, &name, &Device::Cpu)
        .map_err(|e| e.to_string())?;
    let (out, inp) = q.shape().dims2().map_err(|e| e.to_string())?;
    let bytes = q.data().map_err(|e| e.to_string())?.into_owned();
    let rows = rows.min(out);
    Ok((name, bytes[..rows * f.row_bytes(inp)].to_vec(), rows, inp))
}

/// Real activations: rows of the model's token embedding (dequantised), repeated or
/// cut to `inp` values each.
pub fn real_activations(
    path: &Path,
    rows: usize,
    inp: usize,
) -> std::result::Result<Vec<f32>, String> {
    // The embedding is read and dequantised once per model file.
    static EMBEDDINGS: std::sync::Mutex<Vec<(std::path::PathBuf, Tensor)>> =
        std::sync::Mutex::new(Vec::new());
    let mut cache = EMBEDDINGS.lock().unwrap_or_else(|p| p.into_inner());
    let emb = match cache.iter().find(|(p, _)| p == path) {
        Some((_, t)) => t.clone(),
        None => {
            let (mut file, content) = read_model(path)?;
            let t = content
                .tensor(&mut file, "token_embd.weight", &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| e.to_string())?;
            cache.push((path.to_path_buf(), t.clone()));
            t
        }
    };
    drop(cache);
    let (vocab, hidden) = emb.dims2().map_err(|e| e.to_string())?;
    // Tokens of `def main():` and neighbours in the vocabulary.
    let tokens = [750usize, 1887, 3932, 25, 220, 470, 1140, 13];
    let mut x = Vec::with_capacity(rows * inp);
    for r in 0..rows {
        let row: Vec<f32> = emb
            .get(tokens[r % tokens.len()] % vocab)
            .and_then(|t| t.to_vec1())
            .map_err(|e| e.to_string())?;
        x.extend((0..inp).map(|i| row[i % hidden]));
    }
    Ok(x)
}

fn check_quantisation(k: &dyn HostKernels, x: &[f32]) -> Outcome {
    let got = k.quantize(x).map_err(kernel_err)?;
    let want = reference::quantize_activations(x).map_err(|e| e.to_string())?;
    if got.q != want.q || bits(&got.d) != bits(&want.d) || bits(&got.s) != bits(&want.s) {
        return Err("8-bit blocks differ from the engine's".into());
    }
    Ok(format!("{} blocks bit-identical", want.d.len()))
}

/// Activation quantisation on random values (with a block of zeros and a tiny value).
pub fn quantisation(k: &dyn HostKernels) -> Outcome {
    let mut x = Rng::new(1).values(32 * 40, 3.0);
    x[32..64].fill(0.0);
    x[70] = 1e-30;
    check_quantisation(k, &x)
}

/// Activation quantisation on the model's embeddings.
pub fn quantisation_model(k: &dyn HostKernels, model: &Path) -> Outcome {
    check_quantisation(k, &real_activations(model, 4, 896)?)
}

fn check_sums(
    k: &dyn HostKernels,
    f: Format,
    w: &[u8],
    out: usize,
    inp: usize,
    x: &[f32],
) -> Outcome {
    let acts = reference::quantize_activations(&x[..inp]).map_err(|e| e.to_string())?;
    let shape = GemvShape {
        format: f,
        out_features: out,
        in_features: inp,
        rows: 1,
    };
    let got = k.block_sums(shape, w, &acts.q).map_err(kernel_err)?;
    let want = reference::block_sums(dtype(f), w, out, inp, &acts.q).map_err(|e| e.to_string())?;
    if got != want {
        let first = got.iter().zip(&want).position(|(a, b)| a != b).unwrap_or(0);
        return Err(format!(
            "{f:?}: integer sums differ from the engine's at sub-block {first} ({:?} vs {:?})",
            got.get(first),
            want.get(first)
        ));
    }
    Ok(format!("{f:?}: {} sub-blocks identical", want.len()))
}

/// Integer block sums of every format on random weights.
pub fn block_sums_random(k: &dyn HostKernels) -> Outcome {
    let mut done = Vec::new();
    for (i, f) in Format::ALL.into_iter().enumerate() {
        let (out, inp) = (12, 512);
        let w = random_weight(f, out, inp, 10 + i as u64).map_err(|e| e.to_string())?;
        let x = Rng::new(20 + i as u64).values(inp, 1.0);
        done.push(check_sums(k, f, &w, out, inp, &x)?);
    }
    Ok(done.join("; "))
}

/// Integer block sums of every format on the model's weights.
pub fn block_sums_model(k: &dyn HostKernels, model: &Path) -> Outcome {
    let mut done = Vec::new();
    for f in Format::ALL {
        let (name, w, out, inp) = real_weight(model, f, 8)?;
        let x = real_activations(model, 1, inp)?;
        done.push(format!("{name}: {}", check_sums(k, f, &w, out, inp, &x)?));
    }
    Ok(done.join("; "))
}

fn check_product(
    k: &dyn HostKernels,
    f: Format,
    w: &[u8],
    (out, inp): (usize, usize),
    x: &[f32],
    rows: usize,
) -> std::result::Result<f32, String> {
    let shape = GemvShape {
        format: f,
        out_features: out,
        in_features: inp,
        rows,
    };
    let got = k.gemv(shape, w, x).map_err(kernel_err)?;
    let want = QuantWeight::from_raw(dtype(f), out, inp, w.to_vec())
        .and_then(|q| q.matmul_with(Kernel::Scalar, x, rows))
        .map_err(|e| e.to_string())?;
    compare(
        &format!("{f:?} product, {rows} rows"),
        &got,
        &want,
        PRODUCT_REL,
    )
}

/// Products of one to eight rows for every format on random weights (37 outputs: the
/// last block of warps is partly empty).
pub fn products_random(k: &dyn HostKernels) -> Outcome {
    let mut worst = 0f32;
    for (i, f) in Format::ALL.into_iter().enumerate() {
        let (out, inp) = (37, 768);
        let w = random_weight(f, out, inp, 30 + i as u64).map_err(|e| e.to_string())?;
        for rows in 1..=8 {
            let x = Rng::new(40 + rows as u64).values(rows * inp, 0.7);
            worst = worst.max(check_product(k, f, &w, (out, inp), &x, rows)?);
        }
    }
    Ok(format!("largest relative difference {worst:.2e}"))
}

/// Products on the model's weights and embeddings (1 and 4 rows).
pub fn products_model(k: &dyn HostKernels, model: &Path) -> Outcome {
    let mut worst = 0f32;
    for f in Format::ALL {
        let (_, w, out, inp) = real_weight(model, f, 24)?;
        for rows in [1, 4] {
            let x = real_activations(model, rows, inp)?;
            worst = worst.max(check_product(k, f, &w, (out, inp), &x, rows)?);
        }
    }
    Ok(format!("largest relative difference {worst:.2e}"))
}

/// Batch invariance of the products, bit for bit: row `r` of an 8-row product (a
/// speculative verification pass) equals the 1-row product of that row (a decode step).
pub fn products_row_invariant(k: &dyn HostKernels) -> Outcome {
    for (i, f) in Format::ALL.into_iter().enumerate() {
        let (out, inp, rows) = (21, 512, 8);
        let w = random_weight(f, out, inp, 50 + i as u64).map_err(|e| e.to_string())?;
        let x = Rng::new(60 + i as u64).values(rows * inp, 0.9);
        let shape = GemvShape {
            format: f,
            out_features: out,
            in_features: inp,
            rows,
        };
        let all = k.gemv(shape, &w, &x).map_err(kernel_err)?;
        for r in 0..rows {
            let one = GemvShape { rows: 1, ..shape };
            let alone = k
                .gemv(one, &w, &x[r * inp..(r + 1) * inp])
                .map_err(kernel_err)?;
            if bits(&all[r * out..(r + 1) * out]) != bits(&alone) {
                return Err(format!(
                    "{f:?}: row {r} of 8 differs from its 1-row product"
                ));
            }
        }
    }
    Ok("4 formats × 8 rows bit-identical".into())
}

/// Batch invariance of decode attention, bit for bit: row `i` of a 5-row call at
/// position `pos` equals a 1-row call at `pos + i` over the same cache.
pub fn attention_row_invariant(k: &dyn HostKernels) -> Outcome {
    let (heads, kv_heads, hd, pos, rows) = (14, 2, 64, 61, 5);
    let shape = AttentionShape {
        heads,
        kv_heads,
        head_dim: hd,
        capacity: pos + rows,
        pos,
        rows,
    };
    let (q, keys, values) = attention_inputs(shape, 400);
    let all = k
        .decode_attention(shape, &q, &keys, &values)
        .map_err(kernel_err)?;
    for i in 0..rows {
        // Row i's queries, `[heads, 1, hd]`.
        let qi: Vec<f32> = (0..heads)
            .flat_map(|h| {
                q[(h * rows + i) * hd..(h * rows + i + 1) * hd]
                    .iter()
                    .copied()
            })
            .collect();
        let one = AttentionShape {
            pos: pos + i,
            rows: 1,
            ..shape
        };
        let alone = k
            .decode_attention(one, &qi, &keys, &values)
            .map_err(kernel_err)?;
        let width = heads * hd;
        if bits(&all[i * width..(i + 1) * width]) != bits(&alone) {
            return Err(format!("row {i} of {rows} differs from its decode step"));
        }
    }
    Ok(format!("{rows} rows bit-identical to their decode steps"))
}

/// Decode attention against the engine's CPU attention: Qwen2.5-0.5B's and 1.5B's
/// heads, odd lengths, a first position, speculative verification rows.
pub fn decode_attention(k: &dyn HostKernels) -> Outcome {
    let cases = [
        (14, 2, 64, 0, 1),
        (14, 2, 64, 37, 1),
        (12, 2, 128, 130, 3),
        (4, 4, 32, 5, 5),
        (2, 1, 256, 9, 2),
        (14, 2, 64, 2000, 4),
    ];
    let mut worst = 0f32;
    for (n, (heads, kv_heads, hd, pos, rows)) in cases.into_iter().enumerate() {
        let capacity = pos + rows + 3;
        let shape = AttentionShape {
            heads,
            kv_heads,
            head_dim: hd,
            capacity,
            pos,
            rows,
        };
        let (q, keys, values) = attention_inputs(shape, 100 + n as u64);
        let got = k
            .decode_attention(shape, &q, &keys, &values)
            .map_err(kernel_err)?;
        let want = attention::attend(
            &q,
            &keys,
            &values,
            attention::AttentionShape {
                heads,
                kv_heads,
                head_dim: hd,
                capacity,
                pos,
                rows,
            },
        );
        worst = worst.max(compare(
            &format!("attention case {n}"),
            &got,
            &want,
            FLOAT_REL,
        )?);
    }
    Ok(format!(
        "{} cases, largest relative difference {worst:.2e}",
        cases.len()
    ))
}

/// RMSNorm against candle's.
pub fn rms_norm(k: &dyn HostKernels) -> Outcome {
    let (rows, cols) = (3, 896);
    let mut rng = Rng::new(7);
    let x = rng.values(rows * cols, 2.0);
    let w = rng.values(cols, 1.0);
    let got = k.rms_norm(&x, &w, 1e-6).map_err(kernel_err)?;
    let want = (|| {
        let xt = Tensor::from_vec(x.clone(), (rows, cols), &Device::Cpu)?;
        let wt = Tensor::from_vec(w.clone(), cols, &Device::Cpu)?;
        candle_nn::ops::rms_norm(&xt, &wt, 1e-6)?
            .flatten_all()?
            .to_vec1::<f32>()
    })()
    .map_err(|e| e.to_string())?;
    let worst = compare("rms_norm", &got, &want, 1e-6)?;
    Ok(format!("largest relative difference {worst:.2e}"))
}

/// Candle's rotation of `x` `[t, heads · hd]` at positions `rows`, laid out
/// `[heads, t, hd]`, after an optional per-head RMSNorm.
fn candle_rope(
    x: &[f32],
    (heads, hd): (usize, usize),
    rows: std::ops::Range<usize>,
    tables: (&Tensor, &Tensor),
    interleaved: bool,
    norm: Option<(&[f32], f32)>,
) -> candle_core::Result<Vec<f32>> {
    let (pos, t) = (rows.start, rows.len());
    let mut xt = Tensor::from_vec(x.to_vec(), (t, heads, hd), &Device::Cpu)?;
    if let Some((w, eps)) = norm {
        let wt = Tensor::from_vec(w.to_vec(), hd, &Device::Cpu)?;
        xt = candle_nn::ops::rms_norm(&xt, &wt, eps)?;
    }
    let xt = xt.transpose(0, 1)?.unsqueeze(0)?.contiguous()?;
    let cos = tables.0.narrow(0, pos, t)?;
    let sin = tables.1.narrow(0, pos, t)?;
    let y = if interleaved {
        candle_nn::rotary_emb::rope_i(&xt, &cos, &sin)?
    } else {
        candle_nn::rotary_emb::rope(&xt, &cos, &sin)?
    };
    y.flatten_all()?.to_vec1()
}

/// The fused RoPE against candle's rotation (halves, interleaved, with QK-norm), and
/// the cache: the new rows' keys and values at their positions, nothing else touched.
pub fn rope(k: &dyn HostKernels) -> Outcome {
    let (heads, kv_heads, hd, positions) = (6, 2, 64, 40);
    let half = hd / 2;
    let mut cos = Vec::new();
    let mut sin = Vec::new();
    for p in 0..positions {
        for i in 0..half {
            let f = 1.0 / 1e6f32.powf(2.0 * i as f32 / hd as f32);
            cos.push((p as f32 * f).cos());
            sin.push((p as f32 * f).sin());
        }
    }
    let c = |e: candle_core::Error| e.to_string();
    let cos_t = Tensor::from_vec(cos.clone(), (positions, half), &Device::Cpu).map_err(c)?;
    let sin_t = Tensor::from_vec(sin.clone(), (positions, half), &Device::Cpu).map_err(c)?;
    let mut worst = 0f32;
    for (n, (interleaved, with_norm)) in [(false, false), (true, false), (false, true)]
        .into_iter()
        .enumerate()
    {
        let (pos, t, capacity) = (11, 3, 20);
        let mut rng = Rng::new(200 + n as u64);
        let q = rng.values(t * heads * hd, 1.0);
        let kk = rng.values(t * kv_heads * hd, 1.0);
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
            k: &kk,
            v: &v,
            cos: &cos,
            sin: &sin,
            qk_norm: with_norm.then_some((qn.as_slice(), kn.as_slice(), eps)),
        };
        let q_out = k
            .rope_qk(shape, inputs, &mut keys, &mut values)
            .map_err(kernel_err)?;
        let tables = (&cos_t, &sin_t);
        let norm_q = with_norm.then_some((qn.as_slice(), eps));
        let norm_k = with_norm.then_some((kn.as_slice(), eps));
        let want_q =
            candle_rope(&q, (heads, hd), pos..pos + t, tables, interleaved, norm_q).map_err(c)?;
        worst = worst.max(compare(
            &format!("rope q, case {n}"),
            &q_out,
            &want_q,
            FLOAT_REL,
        )?);
        let want_k = candle_rope(
            &kk,
            (kv_heads, hd),
            pos..pos + t,
            tables,
            interleaved,
            norm_k,
        )
        .map_err(c)?;
        for h in 0..kv_heads {
            for r in 0..capacity {
                let at = (h * capacity + r) * hd;
                let (kc, vc) = (&keys[at..at + hd], &values[at..at + hd]);
                if (pos..pos + t).contains(&r) {
                    let i = r - pos;
                    let want = &want_k[(h * t + i) * hd..][..hd];
                    worst = worst.max(compare(
                        &format!("cached key, case {n}"),
                        kc,
                        want,
                        FLOAT_REL,
                    )?);
                    if vc != &v[(i * kv_heads + h) * hd..][..hd] {
                        return Err(format!("cached value of row {r}, case {n}, differs"));
                    }
                } else if !kc.iter().chain(vc).all(|x| x.is_nan()) {
                    return Err(format!("cache row {r} touched, case {n}"));
                }
            }
        }
    }
    // As the engine calls it on the GPU: tables cut to the rows' positions, position 0,
    // a "cache" of exactly the new rows (keys and values come out `[kv_heads, t, hd]`).
    let (pos, t) = (23, 5);
    let mut rng = Rng::new(300);
    let q = rng.values(t * heads * hd, 1.0);
    let kk = rng.values(t * kv_heads * hd, 1.0);
    let v = rng.values(t * kv_heads * hd, 1.0);
    let mut keys = vec![0.0; kv_heads * t * hd];
    let mut values = vec![0.0; kv_heads * t * hd];
    let shape = RopeShape {
        heads,
        kv_heads,
        head_dim: hd,
        capacity: t,
        pos: 0,
        rows: t,
        interleaved: false,
    };
    let cut = |table: &[f32]| table[pos * half..(pos + t) * half].to_vec();
    let (cos_cut, sin_cut) = (cut(&cos), cut(&sin));
    let inputs = RopeInputs {
        q: &q,
        k: &kk,
        v: &v,
        cos: &cos_cut,
        sin: &sin_cut,
        qk_norm: None,
    };
    let q_out = k
        .rope_qk(shape, inputs, &mut keys, &mut values)
        .map_err(kernel_err)?;
    let tables = (&cos_t, &sin_t);
    let want_q = candle_rope(&q, (heads, hd), pos..pos + t, tables, false, None).map_err(c)?;
    let want_k = candle_rope(&kk, (kv_heads, hd), pos..pos + t, tables, false, None).map_err(c)?;
    worst = worst.max(compare(
        "rope q, engine layout",
        &q_out,
        &want_q,
        FLOAT_REL,
    )?);
    worst = worst.max(compare("rope k, engine layout", &keys, &want_k, FLOAT_REL)?);
    let want_v: Vec<f32> = (0..kv_heads)
        .flat_map(|h| (0..t).flat_map(move |i| (0..hd).map(move |d| (h, i, d))))
        .map(|(h, i, d)| v[(i * kv_heads + h) * hd + d])
        .collect();
    if values != want_v {
        return Err("values in the engine layout differ".into());
    }
    Ok(format!("4 cases, largest relative difference {worst:.2e}"))
}

/// The copy kernel with a grid-stride loop (fewer blocks than the data needs).
pub fn copy(k: &dyn HostKernels) -> Outcome {
    let src = Rng::new(9).values(10_000, 1.0);
    if k.copy(&src, 3).map_err(kernel_err)? != src {
        return Err("the copy differs".into());
    }
    Ok("10000 values".into())
}

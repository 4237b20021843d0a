//! Inputs and CPU references shared by the kernel tests (on the grid emulator here,
//! on a GPU in `tests/device.rs`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use engine::model::quant_matmul::{Kernel, QuantWeight};
use kernels::Format;

/// A small deterministic generator (xorshift), so failures reproduce.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// Uniform in [-1, 1).
    pub fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// `n` values, roughly Gaussian (sum of three uniforms) times `scale`.
    pub fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() + self.next() + self.next()) * scale)
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
pub fn random_weight(f: Format, out: usize, inp: usize, seed: u64) -> Vec<u8> {
    let w = Rng::new(seed).values(out * inp, 0.05);
    let t = Tensor::from_vec(w, (out, inp), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, dtype(f)).expect("quantize");
    let weight = QuantWeight::from_qtensor(Arc::new(q)).expect("weight");
    weight.data().expect("data").into_owned()
}

/// The engine's portable CPU product `x · Wᵀ` for `rows` rows.
pub fn cpu_product(
    f: Format,
    weight: &[u8],
    out: usize,
    inp: usize,
    x: &[f32],
    rows: usize,
) -> Vec<f32> {
    QuantWeight::from_raw(dtype(f), out, inp, weight.to_vec())
        .expect("weight")
        .matmul_with(Kernel::Scalar, x, rows)
        .expect("product")
}

/// Asserts that `got` matches `want` to within `rel` of the largest magnitude of `want`.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= rel * scale,
            "{what}: element {i}: {g} vs {w} (scale {scale}, tolerance {rel})"
        );
    }
}

/// The default model (Qwen2.5-Coder-0.5B, Q4_K_M: Q4_K, Q5_0, Q6_K and Q8_0 weights).
pub fn default_model() -> PathBuf {
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

/// A real weight of the default model: the first of its 2-D tensors in format `f`,
/// cut to its first `rows` output rows. Returns (name, bytes, out, in).
pub fn real_weight(f: Format, rows: usize) -> (String, Vec<u8>, usize, usize) {
    let path = default_model();
    let mut file = std::fs::File::open(&path).expect("open model");
    let content = gguf_file::Content::read(&mut file).expect("gguf");
    let mut names: Vec<_> = content
        .tensor_infos
        .iter()
        .filter(|(_, i)| i.ggml_dtype == dtype(f) && i.shape.rank() == 2)
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    let name = names
        .first()
        .unwrap_or_else(|| panic!("no {f:?} tensor"))
        .clone();
    let q = content
        .tensor(&mut file, &name, &Device::Cpu)
        .expect("tensor");
    let (out, inp) = q.shape().dims2().expect("2-D");
    let bytes = q.data().expect("data").into_owned();
    let rows = rows.min(out);
    let row_bytes = f.row_bytes(inp);
    (name, bytes[..rows * row_bytes].to_vec(), rows, inp)
}

/// Real activations of the default model: rows of its token embedding (dequantised),
/// repeated or cut to `inp` values each.
pub fn real_activations(rows: usize, inp: usize) -> Vec<f32> {
    let path = default_model();
    let mut file = std::fs::File::open(&path).expect("open model");
    let content = gguf_file::Content::read(&mut file).expect("gguf");
    let q = content
        .tensor(&mut file, "token_embd.weight", &Device::Cpu)
        .expect("embedding");
    let emb = q.dequantize(&Device::Cpu).expect("dequantize");
    let hidden = emb.dim(1).expect("dims");
    // Tokens of `def main():` and neighbours in the vocabulary.
    let tokens = [750u32, 1887, 3932, 25, 220, 470, 1140, 13];
    let mut x = Vec::with_capacity(rows * inp);
    for r in 0..rows {
        let row: Vec<f32> = emb
            .get(tokens[r % tokens.len()] as usize)
            .and_then(|t| t.to_vec1())
            .expect("row");
        x.extend((0..inp).map(|i| row[i % hidden]));
    }
    x
}

//! The kernels called on host slices, whichever runs them: the grid emulator
//! ([`Emulator`]) or a GPU (`cuda::CudaKernels` with the `cuda` feature, which uploads the inputs and
//! downloads the results around each call). The checks against the engine's CPU
//! implementations (`engine::kernel_checks`) take any of them, so CI (emulator) and
//! the device check (GPU) run the same comparisons.

use crate::{AttentionShape, GemvShape, QuantizedActs, Result, RopeInputs, RopeShape, emulated};

/// The kernels on host slices (see [`crate::emulated`] for what each computes).
pub trait HostKernels {
    /// What runs them (`grid emulator`, or the GPU's name and PTX).
    fn describe(&self) -> String;
    /// 8-bit activation blocks of `x`.
    fn quantize(&self, x: &[f32]) -> Result<QuantizedActs>;
    /// The quantised product `x · Wᵀ`.
    fn gemv(&self, shape: GemvShape, weight: &[u8], x: &[f32]) -> Result<Vec<f32>>;
    /// Integer sums of every (output feature, sub-block) against activations `q`.
    fn block_sums(&self, shape: GemvShape, weight: &[u8], q: &[i8]) -> Result<Vec<[i32; 2]>>;
    /// Decode attention.
    fn decode_attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
    ) -> Result<Vec<f32>>;
    /// RMSNorm of rows of `weight.len()` values.
    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32) -> Result<Vec<f32>>;
    /// The fused RoPE, writing keys and values into the cache slices.
    fn rope_qk(
        &self,
        shape: RopeShape,
        inputs: RopeInputs<'_>,
        keys: &mut [f32],
        values: &mut [f32],
    ) -> Result<Vec<f32>>;
    /// The copy kernel.
    fn copy(&self, src: &[f32], max_blocks: u32) -> Result<Vec<f32>>;
}

/// The grid emulator as [`HostKernels`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Emulator;

impl HostKernels for Emulator {
    fn describe(&self) -> String {
        "grid emulator (CPU)".into()
    }

    fn quantize(&self, x: &[f32]) -> Result<QuantizedActs> {
        emulated::quantize(x)
    }

    fn gemv(&self, shape: GemvShape, weight: &[u8], x: &[f32]) -> Result<Vec<f32>> {
        emulated::gemv(shape, weight, x)
    }

    fn block_sums(&self, shape: GemvShape, weight: &[u8], q: &[i8]) -> Result<Vec<[i32; 2]>> {
        emulated::block_sums(shape, weight, q)
    }

    fn decode_attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
    ) -> Result<Vec<f32>> {
        emulated::decode_attention(shape, q, keys, values)
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32) -> Result<Vec<f32>> {
        emulated::rms_norm(x, weight, eps)
    }

    fn rope_qk(
        &self,
        shape: RopeShape,
        inputs: RopeInputs<'_>,
        keys: &mut [f32],
        values: &mut [f32],
    ) -> Result<Vec<f32>> {
        emulated::rope_qk(shape, inputs, keys, values)
    }

    fn copy(&self, src: &[f32], max_blocks: u32) -> Result<Vec<f32>> {
        emulated::copy(src, max_blocks)
    }
}

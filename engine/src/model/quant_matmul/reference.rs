//! The CPU's arithmetic in the open, as the reference other implementations of the
//! quantised products (the CUDA kernels of the `kernels` crate) are checked against:
//! the 8-bit activation blocks exactly as the products quantise them, and the integer
//! sums of each 32-weight sub-block the products scale and add up.

use candle_core::quantized::GgmlDType;

use super::{ActBlock, Format, QK, compute_err, kquants, quantize_block_scalar};
use crate::error::Result;

/// Activation rows as 8-bit blocks of 32: `x ≈ d · q`, `s = d · Σq` per block.
#[derive(Debug, Clone, PartialEq)]
pub struct ActRows {
    /// The 8-bit values, 32 per block.
    pub q: Vec<i8>,
    /// Each block's scale.
    pub d: Vec<f32>,
    /// Each block's scaled sum.
    pub s: Vec<f32>,
}

/// Quantises `x` (a whole number of blocks of 32) as the products do.
pub fn quantize_activations(x: &[f32]) -> Result<ActRows> {
    if !x.len().is_multiple_of(QK) {
        return Err(compute_err(format!(
            "quantize: {} values are not whole blocks of {QK}",
            x.len()
        )));
    }
    let mut rows = ActRows {
        q: Vec::with_capacity(x.len()),
        d: Vec::with_capacity(x.len() / QK),
        s: Vec::with_capacity(x.len() / QK),
    };
    for src in x.as_chunks::<QK>().0 {
        let mut b = ActBlock::default();
        quantize_block_scalar(src, &mut b);
        rows.q.extend_from_slice(&b.qs);
        rows.d.push(b.d);
        rows.s.push(b.s);
    }
    Ok(rows)
}

/// For a weight of `out_features` rows of raw GGUF blocks (Q5_0, Q8_0, Q4_K, Q5_K or
/// Q6_K), the integer sums `[S₀, S₁]` over the two halves of every 32-weight sub-block
/// against the activations `q` (`in_features` values): `Σ (u − o) · q` in the form of
/// `kquants` (for Q8_0, `Σ w · q`). Row-major: output feature, then sub-block.
pub fn block_sums(
    dtype: GgmlDType,
    weight: &[u8],
    out_features: usize,
    in_features: usize,
    q: &[i8],
) -> Result<Vec<[i32; 2]>> {
    let format = Format::of(dtype)
        .filter(|f| f.is_sub_form() || *f == Format::Q8_0)
        .ok_or_else(|| compute_err(format!("block sums: no reference for {dtype:?}")))?;
    if !in_features.is_multiple_of(format.block_values())
        || q.len() != in_features
        || weight.len() != out_features * format.row_bytes(in_features)
    {
        return Err(compute_err(format!(
            "block sums: {} weight bytes and {} activations do not fit {out_features} × {in_features} {dtype:?}",
            weight.len(),
            q.len()
        )));
    }
    let subs = format.block_values() / QK;
    let mut out = Vec::with_capacity(out_features * in_features / QK);
    for blk in weight.chunks_exact(format.block_bytes()) {
        for j in 0..subs {
            let sb = out.len() % (in_features / QK);
            let x = &q[sb * QK..(sb + 1) * QK];
            let mut s = [0i32; 2];
            if format == Format::Q8_0 {
                for (l, (&w, &q)) in blk[2..].iter().zip(x).enumerate() {
                    s[l / 16] += i32::from(w as i8) * i32::from(q);
                }
            } else {
                let u = kquants::sub_weights(format, blk, j);
                let off = kquants::int_offset(format);
                for (l, (&u, &q)) in u.iter().zip(x).enumerate() {
                    s[l / 16] += (i32::from(u) - off) * i32::from(q);
                }
            }
            out.push(s);
        }
    }
    Ok(out)
}

//! Q5_0 and Q8_0 products eight weight rows at a time, and the weight layout
//! they read.
//!
//! The row-at-a-time products (`kquants::avx2`) give each output as the sum of
//! a vector of partial sums, so every block of 32 costs a horizontal reduction.
//! Here the eight 32-bit lanes of a register belong to eight weight rows: a
//! sub-block of 32 weights of eight rows is unpacked with register `k` holding
//! weights `4k..4k + 4` of every row, and each activation block meets it with
//! four of its bytes broadcast per register. The lanes' integer sums are scaled
//! by the eight rows' scales at once and added to eight outputs, with no
//! reduction. Each output is a sum over its blocks in order, the same whichever
//! activation rows and weight rows come with it, so results stay bit-identical
//! across batch sizes.
//!
//! Weights the engine owns are regrouped once at load ([`repack`]) so that this
//! unpacking is a few loads, shifts and masks, in the same bytes as GGUF's
//! (8 × 22 per eight Q5_0 blocks, 8 × 34 per eight Q8_0 blocks). Q5_0 weights
//! shared with a tensor someone else still holds (a tied embedding) keep the
//! GGUF layout and are transposed while unpacking, with identical results;
//! shared Q8_0 weights use the row-at-a-time products.

use super::Format;
use super::kquants::{Q5_0_BYTES, Q8_0_BYTES};

/// Weight rows per group: one per 32-bit lane of an AVX2 register.
pub(super) const LANES: usize = 8;

/// Offset of the high-bit words in a regrouped Q5_0 block (after the eight scales).
const HIGH_AT: usize = 2 * LANES;

/// Offset of the four nibble words in a regrouped Q5_0 block.
const NIBBLES_AT: usize = HIGH_AT + 4 * LANES;

/// Offset of the weights in a regrouped Q8_0 block (after the eight scales).
const Q8_AT: usize = 2 * LANES;

/// Whether weights of `fmt` can be regrouped.
pub(super) fn regroupable(fmt: Format) -> bool {
    matches!(fmt, Format::Q5_0 | Format::Q8_0)
}

/// Bytes of one GGUF block of `fmt` (Q5_0 or Q8_0).
fn block_bytes(fmt: Format) -> usize {
    if fmt == Format::Q5_0 {
        Q5_0_BYTES
    } else {
        Q8_0_BYTES
    }
}

/// Bytes of one regrouped block of `fmt`: the same blocks of eight rows.
pub(super) fn group_bytes(fmt: Format) -> usize {
    LANES * block_bytes(fmt)
}

/// Regroups a matrix of `fmt` (Q5_0 or Q8_0) of `out` rows of `nb` GGUF blocks:
/// block `j` of rows `8g..8g + 8` becomes the [`group_bytes`] at
/// `(g · nb + j) · group_bytes` (rows past `out` are zero). Bytes `0..16` hold
/// the eight rows' scales (f16), then:
///
/// * Q5_0: bytes `16..48`: per row `l` a word whose byte `b`, bit `k`, is the
///   high bit of weight `4k + b`; bytes `48..176`: four registers of 32 bytes,
///   register `m`, word `l` holding bytes `4m..4m + 4` of row `l`'s nibbles
///   (weights `4m + b` in the low nibbles, `16 + 4m + b` in the high);
/// * Q8_0: bytes `16..272`: eight registers of 32 bytes, register `k`, word `l`
///   holding weights `4k..4k + 4` of row `l`.
pub(super) fn repack(fmt: Format, raw: &[u8], out: usize, nb: usize) -> Vec<u8> {
    let (bb, gb) = (block_bytes(fmt), group_bytes(fmt));
    let groups = out.div_ceil(LANES);
    let mut packed = vec![0u8; groups * nb * gb];
    for o in 0..out {
        let (g, l) = (o / LANES, o % LANES);
        for j in 0..nb {
            let src = &raw[(o * nb + j) * bb..][..bb];
            let dst = &mut packed[(g * nb + j) * gb..][..gb];
            dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
            if fmt == Format::Q8_0 {
                for k in 0..8 {
                    let at = Q8_AT + 32 * k + 4 * l;
                    dst[at..at + 4].copy_from_slice(&src[2 + 4 * k..6 + 4 * k]);
                }
                continue;
            }
            let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
            for b in 0..4 {
                dst[HIGH_AT + 4 * l + b] = (0..8)
                    .map(|k| (((qh >> (4 * k + b)) & 1) as u8) << k)
                    .fold(0, |a, v| a | v);
            }
            for m in 0..4 {
                let at = NIBBLES_AT + 32 * m + 4 * l;
                dst[at..at + 4].copy_from_slice(&src[6 + 4 * m..10 + 4 * m]);
            }
        }
    }
    packed
}

/// The GGUF bytes of rows `rows` of a matrix of `fmt` regrouped by [`repack`],
/// one row of `nb` blocks after the other.
pub(super) fn unpack_rows(
    fmt: Format,
    packed: &[u8],
    nb: usize,
    rows: std::ops::Range<usize>,
) -> Vec<u8> {
    let (bb, gb) = (block_bytes(fmt), group_bytes(fmt));
    let mut raw = vec![0u8; rows.len() * nb * bb];
    for (i, o) in rows.enumerate() {
        let (g, l) = (o / LANES, o % LANES);
        for j in 0..nb {
            let src = &packed[(g * nb + j) * gb..][..gb];
            let dst = &mut raw[(i * nb + j) * bb..][..bb];
            dst[..2].copy_from_slice(&src[2 * l..2 * l + 2]);
            if fmt == Format::Q8_0 {
                for k in 0..8 {
                    let at = Q8_AT + 32 * k + 4 * l;
                    dst[2 + 4 * k..6 + 4 * k].copy_from_slice(&src[at..at + 4]);
                }
                continue;
            }
            let mut qh = 0u32;
            for b in 0..4 {
                let byte = src[HIGH_AT + 4 * l + b];
                for k in 0..8 {
                    qh |= u32::from((byte >> k) & 1) << (4 * k + b);
                }
            }
            dst[2..6].copy_from_slice(&qh.to_le_bytes());
            for m in 0..4 {
                let at = NIBBLES_AT + 32 * m + 4 * l;
                dst[6 + 4 * m..10 + 4 * m].copy_from_slice(&src[at..at + 4]);
            }
        }
    }
    raw
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    //! The AVX2 products on either layout.

    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;
    use std::ops::Range;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::super::kquants::{Q5_0_BYTES, avx2::unpack};
    use super::super::{ActBlock, Format, ROW_BLOCK};
    use super::{HIGH_AT, LANES, NIBBLES_AT, Q8_AT, group_bytes};

    /// Sub-blocks unpacked at a time (10 KiB on the stack).
    const SEGMENT: usize = 32;

    /// One sub-block of 32 weights of eight rows, unpacked.
    struct SubBlock {
        /// Register `k`, lane `l`: unsigned weights `4k..4k + 4` of row `l`
        /// (Q5_0: 0..32; Q8_0: their magnitudes).
        w: [__m256i; 8],
        /// Q8_0: the signed weights, whose signs go onto the activations (Q5_0: zero).
        s: [__m256i; 8],
        /// The rows' scales `d`.
        d: __m256,
        /// The rows' offsets (Q5_0: `−16 · d`; Q8_0: zero).
        b: __m256,
    }

    /// Where the weights come from.
    #[derive(Clone, Copy)]
    pub(in super::super) enum Layout<'a> {
        /// GGUF blocks, rows of `nb` blocks.
        Gguf(&'a [u8]),
        /// Regrouped by [`repack`](super::repack).
        Regrouped(&'a [u8]),
    }

    /// Computes `y[r · stride + o]` for weight rows `o ∈ outs` (`outs.start` a
    /// multiple of eight) of a matrix of `fmt` (Q5_0 in either layout, Q8_0
    /// regrouped) with `nb` blocks per row and activation rows `r ∈ rows`
    /// (`acts`, `nb` blocks per row).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C.
    ///
    /// # Panics
    /// If `rows` is longer than [`ROW_BLOCK`], a range lies outside the data, or
    /// the format and layout are not one of those above.
    #[target_feature(enable = "avx2,fma,f16c")]
    #[allow(clippy::too_many_arguments)]
    pub(in super::super) unsafe fn compute(
        fmt: Format,
        weights: Layout<'_>,
        nb: usize,
        acts: &[ActBlock],
        outs: Range<usize>,
        rows: Range<usize>,
        stride: usize,
        y: &[AtomicU32],
    ) {
        assert!(rows.len() <= ROW_BLOCK && outs.start.is_multiple_of(LANES));
        let data_ok = match (fmt, weights) {
            (Format::Q5_0, Layout::Gguf(d)) => outs.end * nb * Q5_0_BYTES <= d.len(),
            (Format::Q5_0 | Format::Q8_0, Layout::Regrouped(d)) => {
                outs.end.div_ceil(LANES) * nb * group_bytes(fmt) <= d.len()
            }
            _ => panic!("no eight-row products for {fmt:?} in this layout"),
        };
        assert!(data_ok && rows.end * nb <= acts.len());
        assert!(rows.end.saturating_sub(1) * stride + outs.end <= y.len());
        // SAFETY (every `load` below): rows `o..o + lanes` and blocks `j < nb`
        // lie in the data (asserted above).
        let load = |o: usize, lanes: usize, j: usize| unsafe {
            match weights {
                Layout::Gguf(d) => gguf_block(d, nb * Q5_0_BYTES, o, lanes, j),
                Layout::Regrouped(d) if fmt == Format::Q8_0 => q8_block(d, nb, o / LANES, j),
                Layout::Regrouped(d) => regrouped_block(d, nb, o / LANES, j),
            }
        };
        if fmt == Format::Q8_0 {
            sweep::<true>(load, nb, acts, outs, rows, stride, y);
        } else {
            sweep::<false>(load, nb, acts, outs, rows, stride, y);
        }
    }

    /// The loop of [`compute`]: `load(o, lanes, j)` gives block `j` of rows
    /// `o..o + lanes`; `Q8` selects Q8_0's signed products.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn sweep<const Q8: bool>(
        load: impl Fn(usize, usize, usize) -> SubBlock,
        nb: usize,
        acts: &[ActBlock],
        outs: Range<usize>,
        rows: Range<usize>,
        stride: usize,
        y: &[AtomicU32],
    ) {
        let mut seg = [const { MaybeUninit::<SubBlock>::uninit() }; SEGMENT];
        let mut o = outs.start;
        while o < outs.end {
            let lanes = (outs.end - o).min(LANES);
            let mut acc = [_mm256_setzero_ps(); ROW_BLOCK];
            if rows.len() == 1 {
                // One row (decoding): each sub-block is used once, straight from
                // registers.
                let x = &acts[rows.start * nb..(rows.start + 1) * nb];
                for (j, xb) in x.iter().enumerate() {
                    acc[0] = step::<Q8>(&load(o, lanes, j), xb, acc[0]);
                }
            } else {
                let mut start = 0;
                while start < nb {
                    let n = (nb - start).min(SEGMENT);
                    for (k, sb) in seg[..n].iter_mut().enumerate() {
                        sb.write(load(o, lanes, start + k));
                    }
                    for (i, r) in rows.clone().enumerate() {
                        let x = &acts[r * nb + start..r * nb + start + n];
                        let mut a = acc[i];
                        for (sb, xb) in seg[..n].iter().zip(x) {
                            // SAFETY: `seg[..n]` were written above.
                            a = step::<Q8>(unsafe { sb.assume_init_ref() }, xb, a);
                        }
                        acc[i] = a;
                    }
                    start += n;
                }
            }
            for (i, r) in rows.clone().enumerate() {
                let mut vals = [0f32; LANES];
                // SAFETY: `vals` holds eight floats.
                unsafe { _mm256_storeu_ps(vals.as_mut_ptr(), acc[i]) };
                for (l, v) in vals[..lanes].iter().enumerate() {
                    y[r * stride + o + l].store(v.to_bits(), Ordering::Relaxed);
                }
            }
            o += lanes;
        }
    }

    /// Block `j` of GGUF rows `o..o + lanes` (rows of `row_bytes`; `lanes ≤ 8`,
    /// missing rows are zero), unpacked and transposed.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the blocks must lie in `data`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn gguf_block(
        data: &[u8],
        row_bytes: usize,
        o: usize,
        lanes: usize,
        j: usize,
    ) -> SubBlock {
        let mut u = [_mm256_setzero_si256(); LANES];
        let mut d = [0u16; LANES];
        for (l, (u, d)) in u.iter_mut().zip(d.iter_mut()).enumerate().take(lanes) {
            // SAFETY: the block lies in `data` (caller's contract).
            unsafe {
                let blk = data.as_ptr().add((o + l) * row_bytes + j * Q5_0_BYTES);
                *d = blk.cast::<u16>().read_unaligned();
                *u = unpack(Format::Q5_0, blk, 0);
            }
        }
        // SAFETY: `d` holds eight halves.
        let d = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(d.as_ptr().cast()) });
        SubBlock {
            w: transpose(u),
            s: [_mm256_setzero_si256(); 8],
            d,
            b: _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
        }
    }

    /// Block `j` of row group `g` of a regrouped matrix with `nb` blocks per row.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the block must lie in `data`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn regrouped_block(data: &[u8], nb: usize, g: usize, j: usize) -> SubBlock {
        let nib = _mm256_set1_epi8(0x0f);
        let high = _mm256_set1_epi8(0x10);
        let mut w = [_mm256_setzero_si256(); 8];
        // SAFETY: the 176 bytes of the block lie in `data` (caller's contract).
        unsafe {
            let blk = data.as_ptr().add((g * nb + j) * group_bytes(Format::Q5_0));
            let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
            let h = _mm256_loadu_si256(blk.add(HIGH_AT).cast());
            for m in 0..4 {
                let p = _mm256_loadu_si256(blk.add(NIBBLES_AT + 32 * m).cast());
                // Bit `k` of a high-bit byte moves to bit 4 (shifts stay inside
                // each byte after the mask).
                let hk = _mm256_sll_epi16(h, _mm_cvtsi32_si128(4 - m as i32));
                let hk4 = _mm256_srl_epi16(h, _mm_cvtsi32_si128(m as i32));
                w[m] = _mm256_or_si256(_mm256_and_si256(p, nib), _mm256_and_si256(hk, high));
                w[m + 4] = _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(p), nib),
                    _mm256_and_si256(hk4, high),
                );
            }
            SubBlock {
                w,
                s: [_mm256_setzero_si256(); 8],
                d,
                b: _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
            }
        }
    }

    /// Block `j` of row group `g` of a regrouped Q8_0 matrix with `nb` blocks per row.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the block must lie in `data`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn q8_block(data: &[u8], nb: usize, g: usize, j: usize) -> SubBlock {
        let mut w = [_mm256_setzero_si256(); 8];
        let mut s = [_mm256_setzero_si256(); 8];
        // SAFETY: the 272 bytes of the block lie in `data` (caller's contract).
        unsafe {
            let blk = data.as_ptr().add((g * nb + j) * group_bytes(Format::Q8_0));
            for k in 0..8 {
                s[k] = _mm256_loadu_si256(blk.add(Q8_AT + 32 * k).cast());
                w[k] = _mm256_sign_epi8(s[k], s[k]);
            }
            SubBlock {
                w,
                s,
                d: _mm256_cvtph_ps(_mm_loadu_si128(blk.cast())),
                b: _mm256_setzero_ps(),
            }
        }
    }

    /// Transposes eight rows of eight 32-bit elements: lane `l` of result `k` is
    /// element `k` of `r[l]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn transpose(r: [__m256i; LANES]) -> [__m256i; LANES] {
        let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
        let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
        let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
        let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
        let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        // Per 128-bit half: elements 0/1/2/3 (low half) or 4/5/6/7 of rows 0..4 and 4..8.
        let u0 = _mm256_unpacklo_epi64(t0, t2);
        let u1 = _mm256_unpackhi_epi64(t0, t2);
        let u2 = _mm256_unpacklo_epi64(t1, t3);
        let u3 = _mm256_unpackhi_epi64(t1, t3);
        let u4 = _mm256_unpacklo_epi64(t4, t6);
        let u5 = _mm256_unpackhi_epi64(t4, t6);
        let u6 = _mm256_unpacklo_epi64(t5, t7);
        let u7 = _mm256_unpackhi_epi64(t5, t7);
        [
            _mm256_permute2x128_si256::<0x20>(u0, u4),
            _mm256_permute2x128_si256::<0x20>(u1, u5),
            _mm256_permute2x128_si256::<0x20>(u2, u6),
            _mm256_permute2x128_si256::<0x20>(u3, u7),
            _mm256_permute2x128_si256::<0x31>(u0, u4),
            _mm256_permute2x128_si256::<0x31>(u1, u5),
            _mm256_permute2x128_si256::<0x31>(u2, u6),
            _mm256_permute2x128_si256::<0x31>(u3, u7),
        ]
    }

    /// Adds one activation block's products with a sub-block of eight rows to `acc`.
    ///
    /// Q5_0: the pair sums of `maddubs` are at most `2 · 31 · 128`, so four of
    /// them add up in 16 bits without overflow before the widening to 32 bits.
    /// Q8_0 (`Q8`): the weights' signs go onto the activations, and each pair
    /// sum (up to `2 · 128 · 127`) is widened at once.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn step<const Q8: bool>(sb: &SubBlock, x: &ActBlock, acc: __m256) -> __m256 {
        let q = &x.qs;
        let four = |k: usize| {
            _mm256_set1_epi32(i32::from_le_bytes([
                q[4 * k] as u8,
                q[4 * k + 1] as u8,
                q[4 * k + 2] as u8,
                q[4 * k + 3] as u8,
            ]))
        };
        let ones = _mm256_set1_epi16(1);
        let sums = if Q8 {
            let p = |k: usize| {
                let signed = _mm256_sign_epi8(four(k), sb.s[k]);
                _mm256_madd_epi16(_mm256_maddubs_epi16(sb.w[k], signed), ones)
            };
            let lo = _mm256_add_epi32(_mm256_add_epi32(p(0), p(1)), _mm256_add_epi32(p(2), p(3)));
            let hi = _mm256_add_epi32(_mm256_add_epi32(p(4), p(5)), _mm256_add_epi32(p(6), p(7)));
            _mm256_add_epi32(lo, hi)
        } else {
            let p = |k: usize| _mm256_maddubs_epi16(sb.w[k], four(k));
            let lo = _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)));
            let hi = _mm256_add_epi16(_mm256_add_epi16(p(4), p(5)), _mm256_add_epi16(p(6), p(7)));
            _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones))
        };
        let scale = _mm256_mul_ps(sb.d, _mm256_set1_ps(x.d));
        let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
        if Q8 {
            acc
        } else {
            _mm256_fmadd_ps(sb.b, _mm256_set1_ps(x.s), acc)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrouping_round_trips_every_row() {
        // 13 rows (a partial group of eight) of 3 blocks of arbitrary bytes.
        let (out, nb) = (13, 3);
        let raw: Vec<u8> = (0..out * nb * Q8_0_BYTES)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
            .collect();
        for fmt in [Format::Q5_0, Format::Q8_0] {
            let bb = block_bytes(fmt);
            let raw = &raw[..out * nb * bb];
            let packed = repack(fmt, raw, out, nb);
            assert_eq!(packed.len(), 2 * nb * group_bytes(fmt));
            assert_eq!(unpack_rows(fmt, &packed, nb, 0..out), raw);
            assert_eq!(
                unpack_rows(fmt, &packed, nb, 5..9),
                raw[5 * nb * bb..9 * nb * bb]
            );
        }
    }
}

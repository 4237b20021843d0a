//! AVX2 products of Q5_0 weights eight weight rows at a time.
//!
//! The row-at-a-time products (`kquants::avx2`) give each output as the sum of
//! a vector of partial sums, so every block of 32 costs a horizontal reduction.
//! Here the eight 32-bit lanes of a register belong to eight weight rows: a
//! sub-block of 32 weights of eight rows is unpacked and transposed once
//! (register `k` holds weights `4k..4k + 4` of every row), and each activation
//! block meets it with four of its bytes broadcast per register. The lanes'
//! integer sums are then scaled by the eight rows' scales at once and added to
//! eight outputs, with no reduction at all. Each output is a sum over its
//! blocks in order, the same whichever activation rows and weight rows come
//! with it, so results stay bit-identical across batch sizes.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::kquants::{Q5_0_BYTES, avx2::unpack};
use super::{ActBlock, Format, ROW_BLOCK};

/// Weight rows per register: one per 32-bit lane.
const LANES: usize = 8;

/// Sub-blocks unpacked at a time (10 KiB on the stack).
const SEGMENT: usize = 32;

/// One sub-block of 32 weights of eight rows, unpacked and transposed.
struct SubBlock {
    /// Register `k`, lane `l`: unsigned weights `4k..4k + 4` of row `l` (0..32).
    w: [__m256i; 8],
    /// The rows' scales `d`.
    d: __m256,
    /// The rows' offsets, `−16 · d`.
    b: __m256,
}

/// Computes `y[r · stride + o]` for weight rows `o ∈ outs` of the Q5_0 matrix
/// `data` (rows of `row_bytes`, `nb` blocks each) and activation rows
/// `r ∈ rows` (`acts`, `nb` blocks per row).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
///
/// # Panics
/// If `rows` is longer than [`ROW_BLOCK`] or a range lies outside the data.
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn compute_q5_0(
    data: &[u8],
    row_bytes: usize,
    nb: usize,
    acts: &[ActBlock],
    outs: Range<usize>,
    rows: Range<usize>,
    stride: usize,
    y: &[AtomicU32],
) {
    assert!(rows.len() <= ROW_BLOCK && row_bytes == nb * Q5_0_BYTES);
    assert!(outs.end * row_bytes <= data.len() && rows.end * nb <= acts.len());
    assert!(rows.end.saturating_sub(1) * stride + outs.end <= y.len());
    let mut seg = [const { MaybeUninit::<SubBlock>::uninit() }; SEGMENT];
    let mut o = outs.start;
    while o < outs.end {
        let lanes = (outs.end - o).min(LANES);
        let mut acc = [_mm256_setzero_ps(); ROW_BLOCK];
        let mut start = 0;
        while start < nb {
            let n = (nb - start).min(SEGMENT);
            for (k, sb) in seg[..n].iter_mut().enumerate() {
                // SAFETY: rows `o..o + lanes` are within `data` and block
                // `start + k < nb` within each row (asserted above).
                sb.write(unsafe { unpack8(data, row_bytes, o, lanes, start + k) });
            }
            for (i, r) in rows.clone().enumerate() {
                let x = &acts[r * nb + start..r * nb + start + n];
                let mut a = acc[i];
                for (sb, xb) in seg[..n].iter().zip(x) {
                    // SAFETY: `seg[..n]` were written above.
                    a = step(unsafe { sb.assume_init_ref() }, xb, a);
                }
                acc[i] = a;
            }
            start += n;
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

/// Block `j` of weight rows `o..o + lanes` (`lanes ≤ 8`; missing rows are zero),
/// unpacked and transposed.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the blocks must lie in `data`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unpack8(data: &[u8], row_bytes: usize, o: usize, lanes: usize, j: usize) -> SubBlock {
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
        d,
        b: _mm256_mul_ps(d, _mm256_set1_ps(-16.0)),
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
/// The pair sums of `maddubs` are at most `2 · 31 · 128`, so four of them add
/// up in 16 bits without overflow before the widening to 32 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step(sb: &SubBlock, x: &ActBlock, acc: __m256) -> __m256 {
    let q = &x.qs;
    let p = |k: usize| {
        let four = i32::from_le_bytes([
            q[4 * k] as u8,
            q[4 * k + 1] as u8,
            q[4 * k + 2] as u8,
            q[4 * k + 3] as u8,
        ]);
        _mm256_maddubs_epi16(sb.w[k], _mm256_set1_epi32(four))
    };
    let lo = _mm256_add_epi16(_mm256_add_epi16(p(0), p(1)), _mm256_add_epi16(p(2), p(3)));
    let hi = _mm256_add_epi16(_mm256_add_epi16(p(4), p(5)), _mm256_add_epi16(p(6), p(7)));
    let ones = _mm256_set1_epi16(1);
    let sums = _mm256_add_epi32(_mm256_madd_epi16(lo, ones), _mm256_madd_epi16(hi, ones));
    let scale = _mm256_mul_ps(sb.d, _mm256_set1_ps(x.d));
    let acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, acc);
    _mm256_fmadd_ps(sb.b, _mm256_set1_ps(x.s), acc)
}

//! The AVX2 products eight weight rows at a time.

use std::arch::x86_64::*;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};

use super::super::kquants::{Q5_0_BYTES, avx2::unpack};
use super::super::{ActBlock, Format, ROW_BLOCK};
use super::layout::{
    LANES, Q4K_DMIN_AT, Q4K_MINS_AT, Q4K_NIBBLES_AT, Q4K_SCALES_AT, Q5_HIGH_AT, Q5_NIBBLES_AT,
    Q6K_HIGH_AT, Q6K_NIBBLES_AT, Q6K_SCALES_AT, Q8_AT, blocks_per_row, group_bytes,
};

/// Sub-blocks unpacked at a time (20 KiB on the stack).
const SEGMENT: usize = 32;

/// How a sub-block's integer sums are formed (the const parameter of [`step`]).
/// Unsigned weights with an offset `b · s_x` (Q5_0, Q4_K).
const UNSIGNED: u8 = 0;
/// Signed weights, whose signs go onto the activations (Q8_0).
const SIGNED: u8 = 1;
/// Signed weights with an integer scale per 16 (Q6_K).
const SIGNED_SCALED: u8 = 2;

/// One sub-block of 32 weights of eight rows, unpacked.
struct SubBlock {
    /// Register `k`, lane `l`: unsigned weights `4k..4k + 4` of row `l`
    /// (signed formats: their magnitudes).
    w: [__m256i; 8],
    /// Signed formats: the signed weights (else zero).
    s: [__m256i; 8],
    /// Q6_K: per lane the 16-bit scale of the first and of the second 16 weights,
    /// twice (else zero).
    m: [__m256i; 2],
    /// The rows' scales of the integer sums.
    d: __m256,
    /// The rows' offsets per activation sum (unsigned formats; else zero).
    b: __m256,
}

/// Where the weights come from.
#[derive(Clone, Copy)]
pub(in super::super) enum Layout<'a> {
    /// GGUF blocks (Q5_0 only).
    Gguf(&'a [u8]),
    /// Regrouped by [`repack`](super::repack).
    Regrouped(&'a [u8]),
}

/// Computes `y[r · stride + o]` for weight rows `o ∈ outs` (`outs.start` a
/// multiple of eight) of a matrix of `fmt` (Q5_0 in either layout; Q8_0, Q4_K,
/// Q6_K regrouped) with `nb` blocks of 32 per row and activation rows
/// `r ∈ rows` (`acts`, `nb` blocks per row).
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
        (Format::Q5_0 | Format::Q8_0 | Format::Q4K | Format::Q6K, Layout::Regrouped(d)) => {
            outs.end.div_ceil(LANES) * blocks_per_row(fmt, nb) * group_bytes(fmt) <= d.len()
        }
        _ => panic!("no eight-row products for {fmt:?} in this layout"),
    };
    assert!(data_ok && rows.end * nb <= acts.len());
    assert!(rows.end.saturating_sub(1) * stride + outs.end <= y.len());
    let blocks = blocks_per_row(fmt, nb);
    // The regrouped block holding sub-block `j` of row group `g`, and `j`'s
    // place in it.
    let at = |d: &[u8], g: usize, j: usize| {
        let per = nb / blocks;
        // SAFETY: in bounds (asserted above: `g < outs.end / 8` rounded up, `j < nb`).
        (
            unsafe { d.as_ptr().add((g * blocks + j / per) * group_bytes(fmt)) },
            j % per,
        )
    };
    // The loop for sums of kind `K`, with `load` inlined into it.
    macro_rules! run {
        ($k:expr, $load:expr) => {
            sweep::<{ $k }>($load, nb, acts, outs, rows, stride, y)
        };
    }
    // SAFETY (every `unsafe` load below): rows `o..o + lanes` and sub-blocks
    // `j < nb` lie in the data (asserted above). Each format gets its own loop,
    // so that its unpacking inlines into it.
    match (fmt, weights) {
        (_, Layout::Gguf(d)) => run!(UNSIGNED, |o, lanes, j| unsafe {
            gguf_q5_0(d, nb * Q5_0_BYTES, o, lanes, j)
        }),
        (Format::Q5_0, Layout::Regrouped(d)) => {
            run!(UNSIGNED, |o, _, j| unsafe { q5_0(at(d, o / LANES, j).0) })
        }
        (Format::Q8_0, Layout::Regrouped(d)) => {
            run!(SIGNED, |o, _, j| unsafe { q8_0(at(d, o / LANES, j).0) })
        }
        (Format::Q4K, Layout::Regrouped(d)) => run!(UNSIGNED, |o, _, j| {
            let (blk, jj) = at(d, o / LANES, j);
            unsafe { q4k(blk, jj) }
        }),
        (_, Layout::Regrouped(d)) => run!(SIGNED_SCALED, |o, _, j| {
            let (blk, jj) = at(d, o / LANES, j);
            unsafe { q6k(blk, jj) }
        }),
    }
}

/// The loop of [`compute`]: `load(o, lanes, j)` gives sub-block `j` of rows
/// `o..o + lanes`; `K` says how its sums are formed.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn sweep<const K: u8>(
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
            let mut a = [acc[0]];
            for (j, xb) in x.iter().enumerate() {
                step_rows::<K, 1>(&load(o, lanes, j), [xb], &mut a);
            }
            acc[0] = a[0];
        } else {
            let mut start = 0;
            while start < nb {
                let n = (nb - start).min(SEGMENT);
                for (k, sb) in seg[..n].iter_mut().enumerate() {
                    sb.write(load(o, lanes, start + k));
                }
                // SAFETY: `seg[..n]` were written above.
                let seg = unsafe { std::slice::from_raw_parts(seg.as_ptr().cast::<SubBlock>(), n) };
                let mut i = 0;
                while i < rows.len() {
                    let first = (rows.start + i) * nb + start;
                    let acc = &mut acc[i..];
                    i += match rows.len() - i {
                        1 => group::<K, 1>(seg, acts, first, nb, acc),
                        2 => group::<K, 2>(seg, acts, first, nb, acc),
                        3 => group::<K, 3>(seg, acts, first, nb, acc),
                        _ => group::<K, 4>(seg, acts, first, nb, acc),
                    };
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

/// Adds the products of the sub-blocks `seg` with `N` consecutive activation rows
/// (the first row's first block at `acts[first]`, rows `nb` blocks apart) to
/// `acc[..N]`; returns `N`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group<const K: u8, const N: usize>(
    seg: &[SubBlock],
    acts: &[ActBlock],
    first: usize,
    nb: usize,
    acc: &mut [__m256],
) -> usize {
    let xs: [&[ActBlock]; N] =
        std::array::from_fn(|t| &acts[first + t * nb..first + t * nb + seg.len()]);
    let mut a: [__m256; N] = std::array::from_fn(|t| acc[t]);
    for (j, sb) in seg.iter().enumerate() {
        step_rows::<K, N>(sb, std::array::from_fn(|t| &xs[t][j]), &mut a);
    }
    acc[..N].copy_from_slice(&a);
    N
}

/// A sub-block with only unsigned weights `w`, scales `d` and offsets `b`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn unsigned(w: [__m256i; 8], d: __m256, b: __m256) -> SubBlock {
    SubBlock {
        w,
        s: [_mm256_setzero_si256(); 8],
        m: [_mm256_setzero_si256(); 2],
        d,
        b,
    }
}

/// Block `j` of GGUF Q5_0 rows `o..o + lanes` (rows of `row_bytes`; `lanes ≤ 8`,
/// missing rows are zero), unpacked and transposed.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the blocks must lie in `data`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gguf_q5_0(data: &[u8], row_bytes: usize, o: usize, lanes: usize, j: usize) -> SubBlock {
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
    unsigned(transpose(u), d, _mm256_mul_ps(d, _mm256_set1_ps(-16.0)))
}

/// The regrouped Q5_0 block at `blk`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the block must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q5_0(blk: *const u8) -> SubBlock {
    let nib = _mm256_set1_epi8(0x0f);
    let high = _mm256_set1_epi8(0x10);
    let mut w = [_mm256_setzero_si256(); 8];
    // SAFETY: the block is readable (caller's contract).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
        let h = _mm256_loadu_si256(blk.add(Q5_HIGH_AT).cast());
        for m in 0..4 {
            let p = _mm256_loadu_si256(blk.add(Q5_NIBBLES_AT + 32 * m).cast());
            // Bit `k` of a high-bit byte moves to bit 4 (shifts stay inside each
            // byte after the mask).
            let hk = _mm256_sll_epi16(h, _mm_cvtsi32_si128(4 - m as i32));
            let hk4 = _mm256_srl_epi16(h, _mm_cvtsi32_si128(m as i32));
            w[m] = _mm256_or_si256(_mm256_and_si256(p, nib), _mm256_and_si256(hk, high));
            w[m + 4] = _mm256_or_si256(
                _mm256_and_si256(_mm256_srli_epi16::<4>(p), nib),
                _mm256_and_si256(hk4, high),
            );
        }
        unsigned(w, d, _mm256_mul_ps(d, _mm256_set1_ps(-16.0)))
    }
}

/// The regrouped Q8_0 block at `blk`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the block must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q8_0(blk: *const u8) -> SubBlock {
    let mut w = [_mm256_setzero_si256(); 8];
    let mut s = [_mm256_setzero_si256(); 8];
    // SAFETY: the block is readable (caller's contract).
    unsafe {
        for k in 0..8 {
            s[k] = _mm256_loadu_si256(blk.add(Q8_AT + 32 * k).cast());
            w[k] = _mm256_sign_epi8(s[k], s[k]);
        }
        SubBlock {
            w,
            s,
            m: [_mm256_setzero_si256(); 2],
            d: _mm256_cvtph_ps(_mm_loadu_si128(blk.cast())),
            b: _mm256_setzero_ps(),
        }
    }
}

/// The eight bytes at `p` as floats.
///
/// # Safety
/// The CPU must support AVX2; eight bytes at `p` must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn bytes_as_floats(p: *const u8) -> __m256 {
    // SAFETY: eight readable bytes (caller's contract).
    let v = unsafe { _mm_loadl_epi64(p.cast()) };
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Sub-block `j` (0..8) of the regrouped Q4_K super-block at `blk`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the block must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q4k(blk: *const u8, j: usize) -> SubBlock {
    let nib = _mm256_set1_epi8(0x0f);
    let shift = _mm_cvtsi32_si128(4 * (j % 2) as i32);
    let mut w = [_mm256_setzero_si256(); 8];
    // SAFETY: the block is readable (caller's contract).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(blk.add(Q4K_DMIN_AT).cast()));
        let sc = bytes_as_floats(blk.add(Q4K_SCALES_AT + 8 * j));
        let m = bytes_as_floats(blk.add(Q4K_MINS_AT + 8 * j));
        let regs = blk.add(Q4K_NIBBLES_AT + 32 * 8 * (j / 2));
        for (k, w) in w.iter_mut().enumerate() {
            let p = _mm256_loadu_si256(regs.add(32 * k).cast());
            *w = _mm256_and_si256(_mm256_srl_epi16(p, shift), nib);
        }
        unsigned(
            w,
            _mm256_mul_ps(d, sc),
            _mm256_mul_ps(_mm256_mul_ps(dmin, m), _mm256_set1_ps(-1.0)),
        )
    }
}

/// Sub-block `j` (0..8) of the regrouped Q6_K super-block at `blk`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; the block must be readable.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn q6k(blk: *const u8, j: usize) -> SubBlock {
    let nib = _mm256_set1_epi8(0x0f);
    let top = _mm256_set1_epi8(0x30);
    let shift = _mm_cvtsi32_si128(4 * (j % 2) as i32);
    // Bits 2s, 2s + 1 of a top-bits byte (s = j mod 4) move to bits 4, 5.
    let s = (j % 4) as i32;
    let (left, right) = (
        _mm_cvtsi32_si128((4 - 2 * s).max(0)),
        _mm_cvtsi32_si128((2 * s - 4).max(0)),
    );
    let mut w = [_mm256_setzero_si256(); 8];
    let mut sg = [_mm256_setzero_si256(); 8];
    // SAFETY: the block is readable (caller's contract).
    unsafe {
        let d = _mm256_cvtph_ps(_mm_loadu_si128(blk.cast()));
        let scale = |t: usize| {
            let v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(blk.add(Q6K_SCALES_AT + 8 * t).cast()));
            _mm256_or_si256(
                _mm256_and_si256(v, _mm256_set1_epi32(0xffff)),
                _mm256_slli_epi32::<16>(v),
            )
        };
        let m = [scale(2 * j), scale(2 * j + 1)];
        let lows = blk.add(Q6K_NIBBLES_AT + 32 * 8 * (j / 2));
        let highs = blk.add(Q6K_HIGH_AT + 32 * 8 * (j / 4));
        for k in 0..8 {
            let lo = _mm256_and_si256(
                _mm256_srl_epi16(_mm256_loadu_si256(lows.add(32 * k).cast()), shift),
                nib,
            );
            let h = _mm256_loadu_si256(highs.add(32 * k).cast());
            let hi = _mm256_and_si256(_mm256_srl_epi16(_mm256_sll_epi16(h, left), right), top);
            let signed = _mm256_sub_epi8(_mm256_or_si256(lo, hi), _mm256_set1_epi8(32));
            sg[k] = signed;
            w[k] = _mm256_sign_epi8(signed, signed);
        }
        SubBlock {
            w,
            s: sg,
            m,
            d,
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

/// Adds the products of a sub-block of eight rows with one activation block of
/// each of `N` activation rows to `acc` (one accumulator per activation row):
/// each weight register is loaded once and used for every activation row, so
/// that several rows cost fewer loads than one row `N` times.
///
/// * [`UNSIGNED`] (weights below 32): the pair sums of `maddubs` are at most
///   `2 · 31 · 128`, so four of them add up in 16 bits before widening.
/// * [`SIGNED`] (Q8_0): each pair sum (up to `2 · 128 · 127`) is widened at once.
/// * [`SIGNED_SCALED`] (Q6_K, magnitudes at most 32, activations at most 127):
///   four pair sums, one scale's 16 weights, stay below `2^15` and are widened by
///   multiplying with that scale.
///
/// The integer sums are exact whatever their order, and each row's floating-point
/// steps are the same for every `N`: the result of a row never depends on how
/// many rows it was computed with (batch invariance).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn step_rows<const K: u8, const N: usize>(
    sb: &SubBlock,
    xs: [&ActBlock; N],
    acc: &mut [__m256; N],
) {
    let four = |x: &ActBlock, k: usize| {
        let q = &x.qs;
        _mm256_set1_epi32(i32::from_le_bytes([
            q[4 * k] as u8,
            q[4 * k + 1] as u8,
            q[4 * k + 2] as u8,
            q[4 * k + 3] as u8,
        ]))
    };
    let ones = _mm256_set1_epi16(1);
    let mut sums = [_mm256_setzero_si256(); N];
    for half in 0..2 {
        let mut part = [_mm256_setzero_si256(); N];
        for k in 4 * half..4 * half + 4 {
            let w = sb.w[k];
            for r in 0..N {
                let x = four(xs[r], k);
                part[r] = match K {
                    SIGNED => _mm256_add_epi32(
                        part[r],
                        _mm256_madd_epi16(
                            _mm256_maddubs_epi16(w, _mm256_sign_epi8(x, sb.s[k])),
                            ones,
                        ),
                    ),
                    SIGNED_SCALED => _mm256_add_epi16(
                        part[r],
                        _mm256_maddubs_epi16(w, _mm256_sign_epi8(x, sb.s[k])),
                    ),
                    _ => _mm256_add_epi16(part[r], _mm256_maddubs_epi16(w, x)),
                };
            }
        }
        for r in 0..N {
            let widened = match K {
                SIGNED => part[r],
                SIGNED_SCALED => _mm256_madd_epi16(part[r], sb.m[half]),
                _ => _mm256_madd_epi16(part[r], ones),
            };
            sums[r] = _mm256_add_epi32(sums[r], widened);
        }
    }
    for r in 0..N {
        let scale = _mm256_mul_ps(sb.d, _mm256_set1_ps(xs[r].d));
        let a = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums[r]), scale, acc[r]);
        acc[r] = if K == UNSIGNED {
            _mm256_fmadd_ps(sb.b, _mm256_set1_ps(xs[r].s), a)
        } else {
            a
        };
    }
}

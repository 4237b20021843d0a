//! Block products with AVX-512 VNNI: two blocks of 32 weights per 512-bit register.
//!
//! Every weight format is brought to one form, unsigned bytes `u` with a scale `d`
//! and an offset `m` per block (`w = d · u + m`): Q4_1 as stored, Q4_0 with
//! `m = −8d`, Q8_0 as `u = w + 128` with `m = −128d`. A block product is then
//! `d · d_x · Σ u·q + m · s_x`, where one `vpdpbusd` computes 64 of the `u·q` at once.
//! The activation side of a pair of blocks is laid out in the order the weight
//! bytes unpack to ([`ActPair`]), with its scales and sums already spread over the
//! lanes, so a row costs four instructions per pair.

use std::arch::x86_64::*;

use super::kquants::{self, block_scales, int_offset};
use super::{ActBlock, Format, QK};

/// Two consecutive activation blocks `b0`, `b1` of one row, in the lane order of
/// the unpacked weights.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(super) struct ActPair {
    /// `b0[0..16] b1[0..16] b0[16..32] b1[16..32]`.
    qs: [i8; 2 * QK],
    /// The blocks' scales, one per 32-bit lane of the integer sums:
    /// `d0 ×4, d1 ×4, d0 ×4, d1 ×4`.
    d: [f32; 16],
    /// The blocks' scaled sums divided by the 8 lanes each block spans.
    s: [f32; 16],
}

/// Whether this CPU runs the kernel.
pub(super) fn available() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

/// Regroups rows of `nb` (even) blocks into pairs.
pub(super) fn pair_rows(acts: &[ActBlock], nb: usize) -> Vec<ActPair> {
    let mut out = Vec::with_capacity(acts.len() / 2);
    for row in acts.chunks_exact(nb) {
        for pair in row.chunks_exact(2) {
            let (b0, b1) = (&pair[0], &pair[1]);
            let mut p = ActPair {
                qs: [0; 2 * QK],
                d: [0.0; 16],
                s: [0.0; 16],
            };
            p.qs[..16].copy_from_slice(&b0.qs[..16]);
            p.qs[16..32].copy_from_slice(&b1.qs[..16]);
            p.qs[32..48].copy_from_slice(&b0.qs[16..]);
            p.qs[48..].copy_from_slice(&b1.qs[16..]);
            for lane in 0..16 {
                let b = if (lane / 4) % 2 == 0 { b0 } else { b1 };
                p.d[lane] = b.d;
                // Exact: a division by a power of two.
                p.s[lane] = b.s / 8.0;
            }
            out.push(p);
        }
    }
    out
}

/// Dot products of one weight row (`2 · pairs` blocks of `fmt`) with `R`
/// activation rows.
///
/// # Safety
/// The CPU must pass [`available`]; `w` must hold an even number of blocks and
/// every `a[i]` half as many pairs.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile<const R: usize>(fmt: Format, w: &[u8], a: [&[ActPair]; R]) -> [f32; R] {
    let bb = fmt.block_bytes();
    let pairs = w.len() / bb / 2;
    let spread = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    let d_idx = _mm512_setr_epi32(0, 0, 0, 0, 2, 2, 2, 2, 0, 0, 0, 0, 2, 2, 2, 2);
    let m_idx = _mm512_setr_epi32(1, 1, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 3, 3, 3, 3);
    let nibbles = _mm256_set1_epi8(0x0f);
    let mut acc = [_mm512_setzero_ps(); R];
    for p in 0..pairs {
        let b0 = &w[2 * p * bb..(2 * p + 1) * bb];
        let b1 = &w[(2 * p + 1) * bb..(2 * p + 2) * bb];
        // SAFETY: the loads below read the blocks' headers (2 or 4 bytes) and 16 or
        // 32 quant bytes after them, all inside `b0` / `b1`.
        let (wq, dw, mw) = unsafe {
            let header = |b: &[u8], n: usize| -> i32 {
                if n == 4 {
                    b.as_ptr().cast::<i32>().read_unaligned()
                } else {
                    i32::from(b.as_ptr().cast::<u16>().read_unaligned())
                }
            };
            match fmt {
                Format::Q4_0 | Format::Q4_1 => {
                    let at = if fmt == Format::Q4_1 { 4 } else { 2 };
                    let raw = _mm256_set_m128i(
                        _mm_loadu_si128(b1[at..].as_ptr().cast()),
                        _mm_loadu_si128(b0[at..].as_ptr().cast()),
                    );
                    let lo = _mm256_and_si256(raw, nibbles);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibbles);
                    let wq = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    if fmt == Format::Q4_1 {
                        // [d0, m0, d1, m1]
                        let h = _mm_cvtph_ps(_mm_setr_epi32(header(b0, 4), header(b1, 4), 0, 0));
                        let h = _mm512_castps128_ps512(h);
                        (
                            wq,
                            _mm512_permutexvar_ps(d_idx, h),
                            _mm512_permutexvar_ps(m_idx, h),
                        )
                    } else {
                        // [d0, d1]
                        let h = _mm_cvtph_ps(_mm_setr_epi32(
                            header(b0, 2) | (header(b1, 2) << 16),
                            0,
                            0,
                            0,
                        ));
                        let dw = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h));
                        (wq, dw, _mm512_mul_ps(dw, _mm512_set1_ps(-8.0)))
                    }
                }
                Format::Q5_0 => {
                    // d (f16), 32 high bits, 16 bytes of nibbles.
                    let raw = _mm256_set_m128i(
                        _mm_loadu_si128(b1[6..].as_ptr().cast()),
                        _mm_loadu_si128(b0[6..].as_ptr().cast()),
                    );
                    let lo = _mm256_and_si256(raw, nibbles);
                    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), nibbles);
                    let wq = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    // High bits in the pair's lane order: b0[0..16] b1[0..16] b0[16..32] b1[16..32].
                    let h0 = u64::from(b0[2..].as_ptr().cast::<u32>().read_unaligned());
                    let h1 = u64::from(b1[2..].as_ptr().cast::<u32>().read_unaligned());
                    let bits = (h0 & 0xffff)
                        | ((h1 & 0xffff) << 16)
                        | ((h0 >> 16) << 32)
                        | ((h1 >> 16) << 48);
                    let wq =
                        _mm512_or_si512(wq, _mm512_maskz_mov_epi8(bits, _mm512_set1_epi8(0x10)));
                    let h = _mm_cvtph_ps(_mm_setr_epi32(
                        header(b0, 2) | (header(b1, 2) << 16),
                        0,
                        0,
                        0,
                    ));
                    let dw = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h));
                    (wq, dw, _mm512_mul_ps(dw, _mm512_set1_ps(-16.0)))
                }
                Format::Q4K | Format::Q5K | Format::Q6K => {
                    unreachable!("K-quants go through tile_k")
                }
                Format::Q8_0 => {
                    let x0 = _mm256_loadu_si256(b0[2..].as_ptr().cast());
                    let x1 = _mm256_loadu_si256(b1[2..].as_ptr().cast());
                    let lo = _mm256_permute2x128_si256::<0x20>(x0, x1);
                    let hi = _mm256_permute2x128_si256::<0x31>(x0, x1);
                    let wq = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
                    // Signed → unsigned: u = w + 128.
                    let wq = _mm512_xor_si512(wq, _mm512_set1_epi8(-128));
                    let h = _mm_cvtph_ps(_mm_setr_epi32(
                        header(b0, 2) | (header(b1, 2) << 16),
                        0,
                        0,
                        0,
                    ));
                    let dw = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(h));
                    (wq, dw, _mm512_mul_ps(dw, _mm512_set1_ps(-128.0)))
                }
            }
        };
        for i in 0..R {
            // SAFETY: `a[i]` holds `pairs` pairs (caller's contract); an `ActPair`
            // is 64-byte aligned, as the aligned loads need.
            unsafe {
                let x = a[i].get_unchecked(p);
                let xq = _mm512_load_si512(x.qs.as_ptr().cast());
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq);
                let scale = _mm512_mul_ps(dw, _mm512_load_ps(x.d.as_ptr()));
                acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[i]);
                acc[i] = _mm512_fmadd_ps(mw, _mm512_load_ps(x.s.as_ptr()), acc[i]);
            }
        }
    }
    let mut out = [0f32; R];
    for i in 0..R {
        out[i] = _mm512_reduce_add_ps(acc[i]);
    }
    out
}

/// Dot products of one weight row of K-quant super-blocks (Q4_K, Q5_K, Q6_K) with
/// `R` activation rows: each pair of sub-blocks is unpacked (with the AVX2 code)
/// into the pair's lane order, its scales spread over the lanes, then multiplied
/// as in [`tile`] (Q6_K's offset of 32 is taken off the integer sums).
///
/// # Safety
/// The CPU must pass [`available`]; `w` must hold whole super-blocks of `fmt` and
/// every `a[i]` four pairs per super-block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni,avx2,fma,f16c")]
pub(super) unsafe fn tile_k<const R: usize>(fmt: Format, w: &[u8], a: [&[ActPair]; R]) -> [f32; R] {
    let bb = fmt.block_bytes();
    let offset = int_offset(fmt) != 0;
    let c32 = _mm512_set1_epi8(32);
    // Lanes 0..4 and 8..12 belong to the pair's first block, 4..8 and 12..16 to the
    // second; the first 16 weights of each block sit in lanes 0..8.
    let a_idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    let b_idx = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1);
    let mut acc = [_mm512_setzero_ps(); R];
    for (bi, blk) in w.chunks_exact(bb).enumerate() {
        let scales = block_scales(fmt, blk);
        for p in 0..4 {
            let (j0, j1) = (2 * p, 2 * p + 1);
            // SAFETY: `blk` is a whole super-block of `fmt`.
            let (u0, u1) = unsafe {
                (
                    kquants::avx2::unpack(fmt, blk.as_ptr(), j0),
                    kquants::avx2::unpack(fmt, blk.as_ptr(), j1),
                )
            };
            let lo = _mm256_permute2x128_si256::<0x20>(u0, u1);
            let hi = _mm256_permute2x128_si256::<0x31>(u0, u1);
            let wq = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
            let (s0, s1) = (scales[j0], scales[j1]);
            let ah = _mm512_castps128_ps512(_mm_setr_ps(s0.0[0], s1.0[0], s0.0[1], s1.0[1]));
            let dw = _mm512_permutexvar_ps(a_idx, ah);
            let bh = _mm512_castps128_ps512(_mm_setr_ps(s0.1, s1.1, 0.0, 0.0));
            let mw = _mm512_permutexvar_ps(b_idx, bh);
            for i in 0..R {
                // SAFETY: `a[i]` holds four pairs per super-block (caller's contract);
                // an `ActPair` is 64-byte aligned, as the aligned loads need.
                unsafe {
                    let x = a[i].get_unchecked(4 * bi + p);
                    let xq = _mm512_load_si512(x.qs.as_ptr().cast());
                    let mut dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), wq, xq);
                    if offset {
                        dot = _mm512_sub_epi32(
                            dot,
                            _mm512_dpbusd_epi32(_mm512_setzero_si512(), c32, xq),
                        );
                    }
                    let scale = _mm512_mul_ps(dw, _mm512_load_ps(x.d.as_ptr()));
                    acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[i]);
                    if !offset {
                        acc[i] = _mm512_fmadd_ps(mw, _mm512_load_ps(x.s.as_ptr()), acc[i]);
                    }
                }
            }
        }
    }
    let mut out = [0f32; R];
    for i in 0..R {
        out[i] = _mm512_reduce_add_ps(acc[i]);
    }
    out
}

//! Q5_0 and the K-quants (Q4_K, Q5_K, Q6_K): block layouts, and their block products
//! on the portable scalar path and on AVX2.
//!
//! Every 32 weights of these formats (a Q5_0 block, or a sub-block of a 256-weight
//! K-quant super-block) take one common form: unsigned integers `u`
//! (at most 6 bits), a scale per half of 16 (`a₀`, `a₁`), an offset `b` and an
//! integer offset `o`, with `w = a_h · (u − o) + b`. Against an activation block
//! `x ≈ d_x · q` (sum `s_x = d_x · Σq`) the product is then
//!
//! `d_x · (a₀ · Σ₀ (u − o)·q + a₁ · Σ₁ (u − o)·q) + b · s_x`
//!
//! where both sums are integer sums over one half of the block:
//!
//! * Q5_0: `u` 5 bits, `a₀ = a₁ = d`, `b = −16d`, `o = 0`
//! * Q4_K / Q5_K: `u` 4 / 5 bits, `a₀ = a₁ = d · sc`, `b = −dmin · m` (6-bit `sc`, `m`)
//! * Q6_K: `u` 6 bits, `a_h = d · sc_h` (signed 8-bit scale per 16), `b = 0`, `o = 32`

use super::{ActBlock, Format, QK, read_f16};

/// Bytes of a Q5_0 block: `d` (f16), 32 high bits, 16 bytes of nibbles.
pub(super) const Q5_0_BYTES: usize = 22;
/// Bytes of a Q4_K super-block: `d`, `dmin` (f16), 12 bytes of 6-bit scales and
/// minimums, 128 bytes of nibbles.
pub(super) const Q4K_BYTES: usize = 144;
/// Bytes of a Q5_K super-block: as Q4_K plus 32 bytes of high bits (before the nibbles).
pub(super) const Q5K_BYTES: usize = 176;
/// Bytes of a Q6_K super-block: 128 bytes of low nibbles, 64 of 2-bit highs,
/// 16 signed 8-bit scales, `d` (f16).
pub(super) const Q6K_BYTES: usize = 210;
/// Weights per K-quant super-block.
pub(super) const QK_K: usize = 256;

/// The integer offset `o` of a format (32 for Q6_K, else 0).
#[inline]
pub(super) fn int_offset(fmt: Format) -> i32 {
    if fmt == Format::Q6K { 32 } else { 0 }
}

/// Scale and minimum of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K or
/// Q5_K super-block (6 bits each).
#[inline]
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Scales `(a₀, a₁, b)` of the sub-blocks of one weight block (1 for Q5_0, 8 for a
/// K-quant super-block).
#[inline]
pub(super) fn block_scales(fmt: Format, blk: &[u8]) -> [([f32; 2], f32); 8] {
    let mut out = [([0f32; 2], 0f32); 8];
    match fmt {
        Format::Q5_0 => {
            let d = read_f16(blk, 0);
            out[0] = ([d, d], -16.0 * d);
        }
        Format::Q4K | Format::Q5K => {
            let d = read_f16(blk, 0);
            let dmin = read_f16(blk, 2);
            for (j, o) in out.iter_mut().enumerate() {
                let (sc, m) = scale_min_k4(j, &blk[4..16]);
                let a = d * f32::from(sc);
                *o = ([a, a], -dmin * f32::from(m));
            }
        }
        Format::Q6K => {
            let d = read_f16(blk, 208);
            for (j, o) in out.iter_mut().enumerate() {
                let s0 = blk[192 + 2 * j] as i8;
                let s1 = blk[192 + 2 * j + 1] as i8;
                *o = ([d * f32::from(s0), d * f32::from(s1)], 0.0);
            }
        }
        Format::Q4_0 | Format::Q4_1 | Format::Q8_0 => {
            unreachable!("{fmt:?} is not a K-quant or Q5_0 format")
        }
    }
    out
}

/// The unsigned weights of sub-block `j` of one weight block.
#[inline]
pub(super) fn sub_weights(fmt: Format, blk: &[u8], j: usize) -> [u8; QK] {
    let mut u = [0u8; QK];
    match fmt {
        Format::Q5_0 => {
            let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
            for l in 0..QK / 2 {
                let q = blk[6 + l];
                u[l] = (q & 0x0f) | ((((qh >> l) & 1) as u8) << 4);
                u[l + 16] = (q >> 4) | ((((qh >> (l + 16)) & 1) as u8) << 4);
            }
        }
        Format::Q4K | Format::Q5K => {
            let qs_at = if fmt == Format::Q4K { 16 } else { 48 };
            let qs = &blk[qs_at + 32 * (j / 2)..qs_at + 32 * (j / 2) + 32];
            for (l, v) in u.iter_mut().enumerate() {
                *v = if j.is_multiple_of(2) {
                    qs[l] & 0x0f
                } else {
                    qs[l] >> 4
                };
                if fmt == Format::Q5K {
                    *v |= ((blk[16 + l] >> j) & 1) << 4;
                }
            }
        }
        Format::Q6K => {
            let (n, k) = (j / 4, j % 4);
            let ql = &blk[64 * n + 32 * (k & 1)..];
            let qh = &blk[128 + 32 * n..];
            for (l, v) in u.iter_mut().enumerate() {
                let lo = if k < 2 { ql[l] & 0x0f } else { ql[l] >> 4 };
                *v = lo | (((qh[l] >> (2 * k)) & 3) << 4);
            }
        }
        Format::Q4_0 | Format::Q4_1 | Format::Q8_0 => {
            unreachable!("{fmt:?} is not a K-quant or Q5_0 format")
        }
    }
    u
}

/// Dot products of one weight row (of `fmt`, Q5_0 or a K-quant) with `R`
/// activation rows, portable Rust.
pub(super) fn tile_scalar<const R: usize>(fmt: Format, w: &[u8], a: [&[ActBlock]; R]) -> [f32; R] {
    let subs = fmt.block_values() / QK;
    let off = int_offset(fmt);
    let mut acc = [0f32; R];
    for (bi, blk) in w.chunks_exact(fmt.block_bytes()).enumerate() {
        let scales = block_scales(fmt, blk);
        for (j, &(ah, b)) in scales.iter().enumerate().take(subs) {
            let u = sub_weights(fmt, blk, j);
            for (acc, row) in acc.iter_mut().zip(a.iter()) {
                let x = &row[bi * subs + j];
                let mut s = [0i32; 2];
                for (l, (&u, &q)) in u.iter().zip(&x.qs).enumerate() {
                    s[l / 16] += (i32::from(u) - off) * i32::from(q);
                }
                *acc += x.d * (ah[0] * s[0] as f32 + ah[1] * s[1] as f32) + b * x.s;
            }
        }
    }
    acc
}

#[cfg(target_arch = "x86_64")]
pub(super) mod avx2 {
    //! AVX2 products for Q5_0 and the K-quants: each sub-block's weights are
    //! unpacked to 32 bytes in a register once per tile of rows.

    use std::arch::x86_64::*;

    use super::super::avx2::hsum;
    use super::super::{ActBlock, Format, QK};
    use super::{block_scales, int_offset};

    /// Byte `i` of the result is `0x10` where bit `i` of `bits` is set, else 0.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) fn high_bits(bits: u32) -> __m256i {
        let v = _mm256_set1_epi32(bits as i32);
        let spread = _mm256_shuffle_epi8(
            v,
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let mask = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, mask), mask);
        _mm256_and_si256(set, _mm256_set1_epi8(0x10))
    }

    /// The 32 unsigned weights of sub-block `j` of the block at `blk`, in order.
    ///
    /// # Safety
    /// The CPU must support AVX2; `blk` must point to a whole block of `fmt`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn unpack(fmt: Format, blk: *const u8, j: usize) -> __m256i {
        let nib = _mm256_set1_epi8(0x0f);
        // SAFETY (all arms): every load reads bytes of the one block at `blk`
        // (caller's contract), at offsets within the format's layout.
        unsafe {
            match fmt {
                Format::Q5_0 => {
                    let raw = _mm_loadu_si128(blk.add(6).cast());
                    let u = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), nib);
                    let qh = blk.add(2).cast::<u32>().read_unaligned();
                    _mm256_or_si256(u, high_bits(qh))
                }
                Format::Q4K | Format::Q5K => {
                    let at = if fmt == Format::Q4K { 16 } else { 48 };
                    let raw = _mm256_loadu_si256(blk.add(at + 32 * (j / 2)).cast());
                    let shift = _mm_cvtsi32_si128(4 * (j % 2) as i32);
                    let u = _mm256_and_si256(_mm256_srl_epi16(raw, shift), nib);
                    if fmt == Format::Q5K {
                        let qh = _mm256_loadu_si256(blk.add(16).cast());
                        let hb = _mm256_and_si256(
                            _mm256_srl_epi16(qh, _mm_cvtsi32_si128(j as i32)),
                            _mm256_set1_epi8(1),
                        );
                        _mm256_or_si256(u, _mm256_slli_epi16::<4>(hb))
                    } else {
                        u
                    }
                }
                Format::Q6K => {
                    let (n, k) = (j / 4, j % 4);
                    let raw = _mm256_loadu_si256(blk.add(64 * n + 32 * (k & 1)).cast());
                    let lo = _mm256_and_si256(
                        _mm256_srl_epi16(raw, _mm_cvtsi32_si128(4 * (k / 2) as i32)),
                        nib,
                    );
                    let qh = _mm256_loadu_si256(blk.add(128 + 32 * n).cast());
                    let hb = _mm256_and_si256(
                        _mm256_srl_epi16(qh, _mm_cvtsi32_si128(2 * k as i32)),
                        _mm256_set1_epi8(3),
                    );
                    _mm256_or_si256(lo, _mm256_slli_epi16::<4>(hb))
                }
                Format::Q4_0 | Format::Q4_1 | Format::Q8_0 => {
                    unreachable!("{fmt:?} is not a K-quant or Q5_0 format")
                }
            }
        }
    }

    /// Dot products of one weight row (Q5_0 or a K-quant) with `R` activation rows.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `w` must hold whole blocks of `fmt`
    /// and every `a[i]` one activation block per 32 weights of the row.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn tile<const R: usize>(
        fmt: Format,
        w: &[u8],
        a: [&[ActBlock]; R],
    ) -> [f32; R] {
        let bb = fmt.block_bytes();
        let subs = fmt.block_values() / QK;
        let offset = int_offset(fmt) != 0;
        let ones = _mm256_set1_epi16(1);
        let c32 = _mm256_set1_epi8(32);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut macc = [0f32; R];
        for (bi, blk) in w.chunks_exact(bb).enumerate() {
            let scales = block_scales(fmt, blk);
            for (j, &(ah, b)) in scales.iter().enumerate().take(subs) {
                // SAFETY: `blk` is a whole block of `fmt`.
                let u = unsafe { unpack(fmt, blk.as_ptr(), j) };
                let av = _mm256_setr_m128(_mm_set1_ps(ah[0]), _mm_set1_ps(ah[1]));
                for i in 0..R {
                    // SAFETY: `a[i]` has one block per 32 weights (caller's contract).
                    let x = unsafe { a[i].get_unchecked(bi * subs + j) };
                    // SAFETY: `x.qs` is 32 bytes.
                    let xq = unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) };
                    let mut p = _mm256_maddubs_epi16(u, xq);
                    if offset {
                        p = _mm256_sub_epi16(p, _mm256_maddubs_epi16(c32, xq));
                    }
                    let p = _mm256_madd_epi16(p, ones);
                    let scale = _mm256_mul_ps(av, _mm256_set1_ps(x.d));
                    acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[i]);
                    macc[i] += b * x.s;
                }
            }
        }
        let mut out = [0f32; R];
        for i in 0..R {
            out[i] = hsum(acc[i]) + macc[i];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_min_unpacking_follows_the_packed_layout() {
        // Sub-blocks 0..4 take the low 6 bits of bytes 0..4 (scales) and 4..8 (mins);
        // sub-blocks 4..8 take nibbles of bytes 8..12 and the top 2 bits of bytes 0..8.
        let q = [0xc1, 2, 3, 4, 0x85, 6, 7, 8, 0x9a, 0xbc, 0xde, 0xf1];
        assert_eq!(scale_min_k4(0, &q), (1, 5));
        assert_eq!(scale_min_k4(3, &q), (4, 8));
        assert_eq!(scale_min_k4(4, &q), (0x0a | (3 << 4), 0x09 | (2 << 4)));
        assert_eq!(scale_min_k4(7, &q), (0x01, 0x0f));
    }
}

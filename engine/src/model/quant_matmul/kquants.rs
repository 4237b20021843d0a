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
/// Bytes of a Q8_0 block: `d` (f16), 32 signed bytes.
pub(super) const Q8_0_BYTES: usize = 34;
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

/// Sub-blocks of 32 weights per group of the AVX2 products: a K-quant super-block,
/// or eight Q8_0 blocks.
pub(super) const GROUP: usize = 8;

/// The eight 6-bit scales and the eight 6-bit minimums of a Q4_K / Q5_K super-block
/// (from its 12 packed bytes), each as eight bytes of a little-endian `u64`; the
/// same values as [`scale_min_k4`] for `j = 0..8`, computed with whole-word
/// operations.
#[inline]
pub(super) fn scales_mins_k4(q: &[u8; 12]) -> (u64, u64) {
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (w0, w1, w2) = (w(0), w(1), w(2));
    // Sub-blocks 0..4: low 6 bits of bytes 0..4 (scales) and 4..8 (minimums).
    // Sub-blocks 4..8: nibbles of bytes 8..12 with the top 2 bits of bytes 0..4
    // (scales) and 4..8 (minimums) above them.
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    (
        u64::from(w0 & LOW6) | (u64::from(sc_hi) << 32),
        u64::from(w1 & LOW6) | (u64::from(m_hi) << 32),
    )
}

/// The activations' scales laid out for the AVX2 group products: for each of the
/// `rows` rows, the `d` of its blocks, then their `s`, each padded with zeros to a
/// multiple of [`GROUP`] (one slice of `2 · padded` per row).
pub(super) fn group_scales(acts: &[ActBlock], rows: usize) -> Vec<f32> {
    let per_row = acts.len() / rows.max(1);
    let padded = per_row.next_multiple_of(GROUP);
    let mut out = vec![0f32; rows * 2 * padded];
    for (src, dst) in acts.chunks(per_row.max(1)).zip(out.chunks_mut(2 * padded)) {
        for (k, b) in src.iter().enumerate() {
            dst[k] = b.d;
            dst[padded + k] = b.s;
        }
    }
    out
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
    //! AVX2 products for the K-quants and Q8_0 in the GGUF layout: each
    //! sub-block's weights are unpacked to 32 bytes in a register once per tile
    //! of rows. Q5_0 (and regrouped Q8_0) go through `eight_rows`, which uses
    //! [`unpack`] for Q5_0 blocks in the GGUF layout.

    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::super::avx2::hsum;
    use super::super::{ActBlock, Format};
    use super::{GROUP, Q8_0_BYTES, scales_mins_k4};

    /// Format numbers for the const parameter of [`tile_as`].
    const F_Q4K: u8 = 1;
    const F_Q5K: u8 = 2;
    const F_Q6K: u8 = 3;
    const F_Q8_0: u8 = 4;

    /// Whether format `F` has signed weights (their signs go onto the activations).
    const fn signed(f: u8) -> bool {
        f == F_Q6K || f == F_Q8_0
    }

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

    /// Sums of eight vectors of eight `i32`: lane `j` of the result is the sum of
    /// the lanes of `p[j]`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn reduce8(p: [__m256i; GROUP]) -> __m256i {
        let s01 = _mm256_hadd_epi32(p[0], p[1]);
        let s23 = _mm256_hadd_epi32(p[2], p[3]);
        let s45 = _mm256_hadd_epi32(p[4], p[5]);
        let s67 = _mm256_hadd_epi32(p[6], p[7]);
        // Lanes 0..4: the first halves of p0..p3, lanes 4..8 their second halves.
        let s0123 = _mm256_hadd_epi32(s01, s23);
        let s4567 = _mm256_hadd_epi32(s45, s67);
        _mm256_add_epi32(
            _mm256_permute2x128_si256::<0x20>(s0123, s4567),
            _mm256_permute2x128_si256::<0x31>(s0123, s4567),
        )
    }

    /// Groups unpacked at a time (13 KiB on the stack).
    const SEGMENT: usize = 16;

    /// One group of up to eight sub-blocks of a weight row, unpacked once and used
    /// for every activation row of a tile.
    struct Group {
        /// Unsigned weights (Q6_K, Q8_0: their magnitudes) per sub-block.
        u: [__m256i; GROUP],
        /// Q6_K, Q8_0: the signed weights (Q6_K: `u − 32`), whose signs go onto
        /// the activations.
        signed: [__m256i; GROUP],
        /// Integer multipliers of the 16 pair sums per sub-block: 1, or Q6_K's
        /// scale per 16 weights.
        mul: [__m256i; GROUP],
        /// Scale `a` per sub-block.
        a: __m256,
        /// Offset `b` per sub-block (0 for Q6_K and Q8_0).
        b: __m256,
    }

    /// Unpacks sub-blocks `g..g + n` of weight row `w` (`n ≤ GROUP`; for the
    /// K-quants `g` starts a super-block and `n = GROUP`).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; the sub-blocks must lie in `w`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn group<const F: u8>(w: &[u8], g: usize, n: usize) -> Group {
        let zero = _mm256_setzero_si256();
        let ones = _mm256_set1_epi16(1);
        let mut out = Group {
            u: [zero; GROUP],
            signed: [zero; GROUP],
            mul: [ones; GROUP],
            a: _mm256_setzero_ps(),
            b: _mm256_setzero_ps(),
        };
        // SAFETY (all reads): the blocks lie in `w` (caller's contract); offsets
        // follow each format's layout.
        unsafe {
            if F == F_Q8_0 {
                let mut d = [0u16; GROUP];
                for (j, d) in d.iter_mut().enumerate().take(n) {
                    let blk = w.as_ptr().add((g + j) * Q8_0_BYTES);
                    *d = blk.cast::<u16>().read_unaligned();
                    let q = _mm256_loadu_si256(blk.add(2).cast());
                    out.signed[j] = q;
                    out.u[j] = _mm256_sign_epi8(q, q);
                }
                out.a = _mm256_cvtph_ps(_mm_loadu_si128(d.as_ptr().cast()));
                return out;
            }
            let fmt = match F {
                F_Q4K => Format::Q4K,
                F_Q5K => Format::Q5K,
                _ => Format::Q6K,
            };
            let blk = w.as_ptr().add(g / GROUP * fmt.block_bytes());
            for j in 0..GROUP {
                out.u[j] = unpack(fmt, blk, j);
            }
            if F == F_Q6K {
                let d = f16_at(blk.add(208));
                out.a = _mm256_set1_ps(d);
                let sc = blk.add(192).cast::<i8>();
                for j in 0..GROUP {
                    let signed = _mm256_sub_epi8(out.u[j], _mm256_set1_epi8(32));
                    out.signed[j] = signed;
                    out.u[j] = _mm256_sign_epi8(signed, signed);
                    out.mul[j] = _mm256_set_m128i(
                        _mm_set1_epi16(i16::from(*sc.add(2 * j + 1))),
                        _mm_set1_epi16(i16::from(*sc.add(2 * j))),
                    );
                }
            } else {
                let (sc, m) = scales_mins_k4(&*blk.add(4).cast::<[u8; 12]>());
                let widen =
                    |v: u64| _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_set_epi64x(0, v as i64)));
                out.a = _mm256_mul_ps(widen(sc), _mm256_set1_ps(f16_at(blk)));
                out.b = _mm256_mul_ps(widen(m), _mm256_set1_ps(-f16_at(blk.add(2))));
            }
        }
        out
    }

    /// Reads the IEEE half at `p` as f32 (F16C).
    ///
    /// # Safety
    /// The CPU must support F16C; `p` must point to two readable bytes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn f16_at(p: *const u8) -> f32 {
        // SAFETY: two readable bytes at `p` (caller's contract).
        let h = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))))
    }

    /// The eight integer sums of one activation row's blocks `x[0..n]` with the
    /// group's sub-blocks (zero for `j ≥ n`).
    ///
    /// # Safety
    /// The CPU must support AVX2; `x` must point to `n` activation blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn row_sums<const F: u8>(gw: &Group, x: *const ActBlock, n: usize) -> __m256i {
        let mut p = [_mm256_setzero_si256(); GROUP];
        for (j, p) in p.iter_mut().enumerate().take(n) {
            // SAFETY: block `j < n` is readable (caller's contract); `qs` is 32 bytes.
            let xq = unsafe { _mm256_loadu_si256((*x.add(j)).qs.as_ptr().cast()) };
            let xq = if signed(F) {
                _mm256_sign_epi8(xq, gw.signed[j])
            } else {
                xq
            };
            *p = _mm256_madd_epi16(_mm256_maddubs_epi16(gw.u[j], xq), gw.mul[j]);
        }
        reduce8(p)
    }

    /// Dot products of one weight row (Q8_0 or a K-quant) with `R` activation
    /// rows, eight sub-blocks at a time: their integer sums are reduced together and
    /// scaled in one vector operation, with the activations' scales from `s`
    /// (see [`group_scales`](super::group_scales)).
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `w` must hold whole blocks of `fmt`,
    /// every `a[i]` one activation block per 32 weights of the row and every `s[i]`
    /// its row of [`group_scales`](super::group_scales).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(in super::super) unsafe fn tile<const R: usize>(
        fmt: Format,
        w: &[u8],
        a: [&[ActBlock]; R],
        s: [&[f32]; R],
    ) -> [f32; R] {
        // SAFETY: forwarded from the caller.
        unsafe {
            match fmt {
                Format::Q4K => tile_as::<R, F_Q4K>(w, a, s),
                Format::Q5K => tile_as::<R, F_Q5K>(w, a, s),
                Format::Q6K => tile_as::<R, F_Q6K>(w, a, s),
                Format::Q8_0 => tile_as::<R, F_Q8_0>(w, a, s),
                Format::Q4_0 | Format::Q4_1 | Format::Q5_0 => {
                    unreachable!("{fmt:?} has its own AVX2 products")
                }
            }
        }
    }

    /// [`tile`] for one format `F`.
    ///
    /// # Safety
    /// As for [`tile`].
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_as<const R: usize, const F: u8>(
        w: &[u8],
        a: [&[ActBlock]; R],
        s: [&[f32]; R],
    ) -> [f32; R] {
        let subs = a[0].len();
        let padded = subs.next_multiple_of(GROUP);
        assert!(a.iter().all(|r| r.len() == subs));
        assert!(s.iter().all(|r| r.len() == 2 * padded));
        let mut acc = [_mm256_setzero_ps(); R];
        // The row is taken a segment of groups at a time: the segment's groups are
        // unpacked once, then each activation row runs through all of them with
        // its sum in a register.
        let mut seg = [const { MaybeUninit::<Group>::uninit() }; SEGMENT];
        let mut start = 0;
        while start < subs {
            let mut count = 0;
            let mut end = start;
            while count < SEGMENT && end < subs {
                let n = (subs - end).min(GROUP);
                // SAFETY: sub-blocks `end..end + n` lie in `w` (caller's contract).
                seg[count].write(unsafe { group::<F>(w, end, n) });
                count += 1;
                end += n;
            }
            for i in 0..R {
                let mut sum = acc[i];
                for (k, gw) in seg[..count].iter().enumerate() {
                    let g = start + k * GROUP;
                    let n = (subs - g).min(GROUP);
                    // SAFETY: `seg[..count]` were written above. `a[i]` has
                    // `subs ≥ g + n` blocks; `s[i]` has `padded ≥ g + 8` scales, then as
                    // many sums (asserted above).
                    unsafe {
                        let gw = gw.assume_init_ref();
                        let x = a[i].as_ptr().add(g);
                        // A literal count lets full groups unroll completely.
                        let sums = if n == GROUP {
                            row_sums::<F>(gw, x, GROUP)
                        } else {
                            row_sums::<F>(gw, x, n)
                        };
                        let d = _mm256_loadu_ps(s[i].as_ptr().add(g));
                        let t = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), gw.a);
                        sum = _mm256_fmadd_ps(t, d, sum);
                        if !signed(F) {
                            let sx = _mm256_loadu_ps(s[i].as_ptr().add(padded + g));
                            sum = _mm256_fmadd_ps(gw.b, sx, sum);
                        }
                    }
                }
                acc[i] = sum;
            }
            start = end;
        }
        let mut out = [0f32; R];
        for i in 0..R {
            out[i] = hsum(acc[i]);
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

    #[test]
    fn whole_word_scales_match_the_bytewise_unpacking() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let mut q = [0u8; 12];
            for b in &mut q {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let (sc, m) = scales_mins_k4(&q);
            for j in 0..8 {
                let want = scale_min_k4(j, &q);
                assert_eq!(
                    ((sc >> (8 * j)) as u8, (m >> (8 * j)) as u8),
                    want,
                    "{q:?} j={j}"
                );
            }
        }
    }
}

//! The regrouped weight layout: GGUF blocks of eight rows rearranged so that
//! the AVX2 products load each register's eight lanes (eight rows) at once.
//!
//! Block `J` of rows `8g..8g + 8` (a block of 32 weights for Q5_0 and Q8_0, a
//! super-block of 256 for Q4_K and Q6_K) becomes [`group_bytes`] bytes at
//! `(g · blocks + J) · group_bytes`; rows past the matrix are zero. "Word `l`"
//! below is the four bytes of row `l` at offset `4l` of a 32-byte register.
//!
//! * Q5_0 (176 bytes = 8 × 22): the eight scales (f16); per row a word whose
//!   byte `b`, bit `k`, is the high bit of weight `4k + b`; four registers,
//!   register `m`, word `l` holding bytes `4m..4m + 4` of row `l`'s nibbles.
//! * Q8_0 (272 = 8 × 34): the eight scales; eight registers, register `k`,
//!   word `l` holding weights `4k..4k + 4` of row `l`.
//! * Q4_K (1184 = 8 × 148): the eight `d`, the eight `dmin` (f16); the 6-bit
//!   scales and then minimums unpacked to bytes, sub-block `j` of row `l` at
//!   `8j + l`; then for each pair `p` of sub-blocks and `k` a register whose
//!   word `l` has weights `4k..4k + 4` of sub-block `2p` (low nibbles) and
//!   `2p + 1` (high nibbles) of row `l`.
//! * Q6_K (1680 = 8 × 210): the eight `d`; the sixteen 8-bit scales per row,
//!   scale `t` of row `l` at `8t + l`; nibble registers as for Q4_K with the
//!   low four bits of the 6-bit values; then for each quarter `h` (four
//!   sub-blocks) and `k` a register whose word `l`, byte `b`, bits `2s, 2s + 1`
//!   hold the top two bits of weight `4k + b` of sub-block `4h + s`.

use std::ops::Range;

use super::super::Format;
use super::super::kquants::{Q4K_BYTES, Q5_0_BYTES, Q6K_BYTES, Q8_0_BYTES, QK_K, scale_min_k4};

/// Weight rows per group: one per 32-bit lane of an AVX2 register.
pub(in super::super) const LANES: usize = 8;

/// Q5_0: offset of the high-bit words (after the eight scales).
pub(super) const Q5_HIGH_AT: usize = 2 * LANES;
/// Q5_0: offset of the four nibble registers.
pub(super) const Q5_NIBBLES_AT: usize = Q5_HIGH_AT + 4 * LANES;
/// Q8_0: offset of the weights (after the eight scales).
pub(super) const Q8_AT: usize = 2 * LANES;
/// Q4_K: offset of the eight `dmin`.
pub(super) const Q4K_DMIN_AT: usize = 2 * LANES;
/// Q4_K: offset of the unpacked scales.
pub(super) const Q4K_SCALES_AT: usize = 4 * LANES;
/// Q4_K: offset of the unpacked minimums.
pub(super) const Q4K_MINS_AT: usize = Q4K_SCALES_AT + 8 * LANES;
/// Q4_K: offset of the nibble registers.
pub(super) const Q4K_NIBBLES_AT: usize = Q4K_MINS_AT + 8 * LANES;
/// Q6_K: offset of the scales (after the eight `d`).
pub(super) const Q6K_SCALES_AT: usize = 2 * LANES;
/// Q6_K: offset of the nibble registers.
pub(super) const Q6K_NIBBLES_AT: usize = Q6K_SCALES_AT + 16 * LANES;
/// Q6_K: offset of the registers of top bits.
pub(super) const Q6K_HIGH_AT: usize = Q6K_NIBBLES_AT + 32 * 32;

/// Whether weights of `fmt` can be regrouped.
pub(in super::super) fn regroupable(fmt: Format) -> bool {
    matches!(fmt, Format::Q5_0 | Format::Q8_0 | Format::Q4K | Format::Q6K)
}

/// Bytes of one GGUF block of a regroupable format.
fn block_bytes(fmt: Format) -> usize {
    match fmt {
        Format::Q5_0 => Q5_0_BYTES,
        Format::Q8_0 => Q8_0_BYTES,
        Format::Q4K => Q4K_BYTES,
        Format::Q6K => Q6K_BYTES,
        _ => unreachable!("{fmt:?} is not regrouped"),
    }
}

/// Bytes of one regrouped block of eight rows.
pub(in super::super) fn group_bytes(fmt: Format) -> usize {
    match fmt {
        Format::Q4K => LANES * (Q4K_BYTES + 4),
        _ => LANES * block_bytes(fmt),
    }
}

/// GGUF blocks per row of `in_features / 32` blocks of 32.
pub(in super::super) fn blocks_per_row(fmt: Format, nb: usize) -> usize {
    match fmt {
        Format::Q4K | Format::Q6K => nb / (QK_K / 32),
        _ => nb,
    }
}

/// Offset of word `l` of register `r` in an area starting at `at`.
fn word(at: usize, r: usize, l: usize) -> usize {
    at + 32 * r + 4 * l
}

/// Bytes of a matrix of `fmt` with `out` rows of `nb` blocks of 32 weights once
/// regrouped by [`repack`] (rows padded to a multiple of eight).
pub(in super::super) fn regrouped_len(fmt: Format, out: usize, nb: usize) -> usize {
    out.div_ceil(LANES) * blocks_per_row(fmt, nb) * group_bytes(fmt)
}

/// Regroups a matrix of `fmt` with `out` rows of `nb` blocks of 32 weights.
pub(in super::super) fn repack(fmt: Format, raw: &[u8], out: usize, nb: usize) -> Vec<u8> {
    let (bb, gb, blocks) = (block_bytes(fmt), group_bytes(fmt), blocks_per_row(fmt, nb));
    let mut packed = vec![0u8; regrouped_len(fmt, out, nb)];
    for o in 0..out {
        let (g, l) = (o / LANES, o % LANES);
        for j in 0..blocks {
            let src = &raw[(o * blocks + j) * bb..][..bb];
            let dst = &mut packed[(g * blocks + j) * gb..][..gb];
            match fmt {
                Format::Q5_0 => pack_q5_0(src, dst, l),
                Format::Q8_0 => pack_q8_0(src, dst, l),
                Format::Q4K => pack_q4k(src, dst, l),
                _ => pack_q6k(src, dst, l),
            }
        }
    }
    packed
}

/// The GGUF bytes of rows `rows` of a matrix of `fmt` regrouped by [`repack`]
/// (`nb` blocks of 32 weights per row), one row after the other.
pub(in super::super) fn unpack_rows(
    fmt: Format,
    packed: &[u8],
    nb: usize,
    rows: Range<usize>,
) -> Vec<u8> {
    let (bb, gb, blocks) = (block_bytes(fmt), group_bytes(fmt), blocks_per_row(fmt, nb));
    let mut raw = vec![0u8; rows.len() * blocks * bb];
    for (i, o) in rows.enumerate() {
        let (g, l) = (o / LANES, o % LANES);
        for j in 0..blocks {
            let src = &packed[(g * blocks + j) * gb..][..gb];
            let dst = &mut raw[(i * blocks + j) * bb..][..bb];
            match fmt {
                Format::Q5_0 => unpack_q5_0(src, dst, l),
                Format::Q8_0 => unpack_q8_0(src, dst, l),
                Format::Q4K => unpack_q4k(src, dst, l),
                _ => unpack_q6k(src, dst, l),
            }
        }
    }
    raw
}

fn pack_q5_0(src: &[u8], dst: &mut [u8], l: usize) {
    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
    let qh = u32::from_le_bytes([src[2], src[3], src[4], src[5]]);
    for b in 0..4 {
        dst[Q5_HIGH_AT + 4 * l + b] = (0..8)
            .map(|k| (((qh >> (4 * k + b)) & 1) as u8) << k)
            .fold(0, |a, v| a | v);
    }
    for m in 0..4 {
        let at = word(Q5_NIBBLES_AT, m, l);
        dst[at..at + 4].copy_from_slice(&src[6 + 4 * m..10 + 4 * m]);
    }
}

fn unpack_q5_0(src: &[u8], dst: &mut [u8], l: usize) {
    dst[..2].copy_from_slice(&src[2 * l..2 * l + 2]);
    let mut qh = 0u32;
    for b in 0..4 {
        let byte = src[Q5_HIGH_AT + 4 * l + b];
        for k in 0..8 {
            qh |= u32::from((byte >> k) & 1) << (4 * k + b);
        }
    }
    dst[2..6].copy_from_slice(&qh.to_le_bytes());
    for m in 0..4 {
        let at = word(Q5_NIBBLES_AT, m, l);
        dst[6 + 4 * m..10 + 4 * m].copy_from_slice(&src[at..at + 4]);
    }
}

fn pack_q8_0(src: &[u8], dst: &mut [u8], l: usize) {
    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
    for k in 0..8 {
        let at = word(Q8_AT, k, l);
        dst[at..at + 4].copy_from_slice(&src[2 + 4 * k..6 + 4 * k]);
    }
}

fn unpack_q8_0(src: &[u8], dst: &mut [u8], l: usize) {
    dst[..2].copy_from_slice(&src[2 * l..2 * l + 2]);
    for k in 0..8 {
        let at = word(Q8_AT, k, l);
        dst[2 + 4 * k..6 + 4 * k].copy_from_slice(&src[at..at + 4]);
    }
}

fn pack_q4k(src: &[u8], dst: &mut [u8], l: usize) {
    dst[2 * l..2 * l + 2].copy_from_slice(&src[..2]);
    dst[Q4K_DMIN_AT + 2 * l..Q4K_DMIN_AT + 2 * l + 2].copy_from_slice(&src[2..4]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, &src[4..16]);
        dst[Q4K_SCALES_AT + 8 * j + l] = sc;
        dst[Q4K_MINS_AT + 8 * j + l] = m;
    }
    for p in 0..4 {
        for k in 0..8 {
            let at = word(Q4K_NIBBLES_AT, 8 * p + k, l);
            dst[at..at + 4].copy_from_slice(&src[16 + 32 * p + 4 * k..][..4]);
        }
    }
}

fn unpack_q4k(src: &[u8], dst: &mut [u8], l: usize) {
    dst[..2].copy_from_slice(&src[2 * l..2 * l + 2]);
    dst[2..4].copy_from_slice(&src[Q4K_DMIN_AT + 2 * l..Q4K_DMIN_AT + 2 * l + 2]);
    let sc: [u8; 8] = std::array::from_fn(|j| src[Q4K_SCALES_AT + 8 * j + l]);
    let m: [u8; 8] = std::array::from_fn(|j| src[Q4K_MINS_AT + 8 * j + l]);
    // The inverse of `scale_min_k4`: sub-blocks 0..4 in the low six bits of
    // bytes 0..8, the top two bits of sub-blocks 4..8 above them.
    let q = &mut dst[4..16];
    for j in 0..4 {
        q[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = m[j] | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 0x0f) | ((m[j + 4] & 0x0f) << 4);
    }
    for p in 0..4 {
        for k in 0..8 {
            let at = word(Q4K_NIBBLES_AT, 8 * p + k, l);
            dst[16 + 32 * p + 4 * k..][..4].copy_from_slice(&src[at..at + 4]);
        }
    }
}

/// The 256 six-bit values of a GGUF Q6_K super-block, in order.
fn q6k_values(src: &[u8]) -> [u8; QK_K] {
    let (ql, qh) = (&src[..128], &src[128..192]);
    let mut q = [0u8; QK_K];
    for n in 0..2 {
        for i in 0..32 {
            let (lo, hi, h) = (ql[64 * n + i], ql[64 * n + 32 + i], qh[32 * n + i]);
            q[128 * n + i] = (lo & 0x0f) | ((h & 3) << 4);
            q[128 * n + 32 + i] = (hi & 0x0f) | (((h >> 2) & 3) << 4);
            q[128 * n + 64 + i] = (lo >> 4) | (((h >> 4) & 3) << 4);
            q[128 * n + 96 + i] = (hi >> 4) | (((h >> 6) & 3) << 4);
        }
    }
    q
}

fn pack_q6k(src: &[u8], dst: &mut [u8], l: usize) {
    dst[2 * l..2 * l + 2].copy_from_slice(&src[208..210]);
    for t in 0..16 {
        dst[Q6K_SCALES_AT + 8 * t + l] = src[192 + t];
    }
    let q = q6k_values(src);
    for p in 0..4 {
        for k in 0..8 {
            let at = word(Q6K_NIBBLES_AT, 8 * p + k, l);
            for b in 0..4 {
                let i = 64 * p + 4 * k + b;
                dst[at + b] = (q[i] & 0x0f) | ((q[i + 32] & 0x0f) << 4);
            }
        }
    }
    for h in 0..2 {
        for k in 0..8 {
            let at = word(Q6K_HIGH_AT, 8 * h + k, l);
            for b in 0..4 {
                dst[at + b] = (0..4)
                    .map(|s| (q[32 * (4 * h + s) + 4 * k + b] >> 4) << (2 * s))
                    .fold(0, |a, v| a | v);
            }
        }
    }
}

fn unpack_q6k(src: &[u8], dst: &mut [u8], l: usize) {
    let mut q = [0u8; QK_K];
    for p in 0..4 {
        for k in 0..8 {
            let at = word(Q6K_NIBBLES_AT, 8 * p + k, l);
            for b in 0..4 {
                let i = 64 * p + 4 * k + b;
                q[i] = src[at + b] & 0x0f;
                q[i + 32] = src[at + b] >> 4;
            }
        }
    }
    for h in 0..2 {
        for k in 0..8 {
            let at = word(Q6K_HIGH_AT, 8 * h + k, l);
            for b in 0..4 {
                for s in 0..4 {
                    q[32 * (4 * h + s) + 4 * k + b] |= ((src[at + b] >> (2 * s)) & 3) << 4;
                }
            }
        }
    }
    for n in 0..2 {
        for i in 0..32 {
            let v = |off: usize| q[128 * n + off + i];
            dst[64 * n + i] = (v(0) & 0x0f) | ((v(64) & 0x0f) << 4);
            dst[64 * n + 32 + i] = (v(32) & 0x0f) | ((v(96) & 0x0f) << 4);
            dst[128 + 32 * n + i] =
                (v(0) >> 4) | ((v(32) >> 4) << 2) | ((v(64) >> 4) << 4) | ((v(96) >> 4) << 6);
        }
    }
    for t in 0..16 {
        dst[192 + t] = src[Q6K_SCALES_AT + 8 * t + l];
    }
    dst[208..210].copy_from_slice(&src[2 * l..2 * l + 2]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regrouping_round_trips_every_row() {
        // 13 rows (a partial group of eight) of arbitrary bytes: every bit of
        // these formats means something, so all must survive.
        for (fmt, nb) in [
            (Format::Q5_0, 3),
            (Format::Q8_0, 3),
            (Format::Q4K, 16),
            (Format::Q6K, 16),
        ] {
            let out = 13;
            let (bb, blocks) = (block_bytes(fmt), blocks_per_row(fmt, nb));
            let raw: Vec<u8> = (0..out * blocks * bb)
                .map(|i| (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8)
                .collect();
            let packed = repack(fmt, &raw, out, nb);
            assert_eq!(packed.len(), 2 * blocks * group_bytes(fmt), "{fmt:?}");
            assert_eq!(unpack_rows(fmt, &packed, nb, 0..out), raw, "{fmt:?}");
            assert_eq!(
                unpack_rows(fmt, &packed, nb, 5..9),
                raw[5 * blocks * bb..9 * blocks * bb],
                "{fmt:?}"
            );
        }
    }
}

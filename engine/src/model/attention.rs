//! Causal attention of a few new rows against a sequence's cached keys and values,
//! on the CPU.
//!
//! Every (row, head) pair is computed on its own, in a fixed order of operations
//! that depends only on its position, never on how many rows came with it or on
//! how the work is split between threads. A decode step (one row) and a
//! speculative verification pass (several rows) therefore produce bit-identical
//! outputs for the same position, which makes speculative greedy decoding exact.

use rayon::prelude::*;

/// Below this many multiply-adds a call runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 18;

/// Sizes of one attention call.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (each serves `heads / kv_heads` query heads).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Positions allocated per key/value head in the cache storage.
    pub capacity: usize,
    /// Cached positions before the new rows.
    pub pos: usize,
    /// New rows (their keys and values are already in the cache).
    pub rows: usize,
}

/// Attention output `[rows, heads · head_dim]` for queries `q` laid out
/// `[heads, rows, head_dim]`, with `keys`/`values` laid out
/// `[kv_heads, capacity, head_dim]`. Row `i` attends to positions `0..=pos + i`.
pub fn attend(q: &[f32], keys: &[f32], values: &[f32], s: AttentionShape) -> Vec<f32> {
    let hd = s.head_dim;
    let mut out = vec![0f32; s.rows * s.heads * hd];
    if hd == 0 || s.heads == 0 || s.rows == 0 {
        return out;
    }
    let groups = (s.heads / s.kv_heads.max(1)).max(1);
    let scale = 1.0 / (hd as f32).sqrt();
    let fma = fma_available();
    let task = |index: usize, dst: &mut [f32]| {
        let (row, qh) = (index / s.heads, index % s.heads);
        let kv = (qh / groups).min(s.kv_heads.saturating_sub(1));
        let len = s.pos + row + 1;
        let base = kv * s.capacity * hd;
        let query = &q[(qh * s.rows + row) * hd..][..hd];
        let k = &keys[base..base + len * hd];
        let v = &values[base..base + len * hd];
        if fma {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `fma_available` checked that the CPU has AVX2 and FMA.
            unsafe {
                fused::head(query, k, v, scale, dst)
            }
        } else {
            head(query, k, v, scale, dst)
        }
    };
    let work = s.rows * s.heads * (s.pos + s.rows) * hd;
    if work >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        out.par_chunks_mut(hd)
            .enumerate()
            .for_each(|(i, dst)| task(i, dst));
    } else {
        out.chunks_mut(hd)
            .enumerate()
            .for_each(|(i, dst)| task(i, dst));
    }
    out
}

fn fma_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Softmax of `scores` in place; returns the sum of the exponentials.
#[inline(always)]
fn softmax_unnormalised(scores: &mut [f32]) -> f32 {
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    sum
}

/// One head of one row: softmax(q·Kᵀ · scale) · V into `dst` (portable).
fn head(q: &[f32], k: &[f32], v: &[f32], scale: f32, dst: &mut [f32]) {
    let hd = dst.len();
    let mut scores = Vec::with_capacity(k.len() / hd);
    for kj in k.chunks_exact(hd) {
        let mut acc = [0f32; 8];
        for (i, (a, b)) in q.iter().zip(kj).enumerate() {
            acc[i % 8] += a * b;
        }
        let dot = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        scores.push(dot * scale);
    }
    let sum = softmax_unnormalised(&mut scores);
    dst.fill(0.0);
    for (p, vj) in scores.iter().zip(v.chunks_exact(hd)) {
        for (o, x) in dst.iter_mut().zip(vj) {
            *o += p * x;
        }
    }
    let inv = 1.0 / sum;
    for o in dst.iter_mut() {
        *o *= inv;
    }
}

#[cfg(target_arch = "x86_64")]
mod fused {
    use std::arch::x86_64::*;

    /// [`super::head`] with AVX2 fused multiply-adds (`head_dim` a multiple of 8,
    /// else the portable code).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn head(q: &[f32], k: &[f32], v: &[f32], scale: f32, dst: &mut [f32]) {
        let hd = dst.len();
        if !hd.is_multiple_of(8) {
            return super::head(q, k, v, scale, dst);
        }
        let lanes = hd / 8;
        let len = k.len() / hd;
        let mut scores = vec![0f32; len];
        // SAFETY (all loads and stores below): every offset stays inside `q`, `k`,
        // `v` (each `len · hd` long, `q` and `dst` `hd` long) and `scores` (`len`),
        // as `j + t < len` and `c < lanes`.
        unsafe {
            let qp = q.as_ptr();
            let sv = _mm256_set1_ps(scale);
            // Eight keys at a time: independent accumulators, then one transposing
            // reduction to eight sums. The rest one by one. Which path a key takes
            // depends only on `len`, i.e. on the row's position.
            let mut j = 0;
            while j + 8 <= len {
                let kp = k.as_ptr().add(j * hd);
                let mut acc = [_mm256_setzero_ps(); 8];
                for c in 0..lanes {
                    let a = _mm256_loadu_ps(qp.add(c * 8));
                    for (t, acc) in acc.iter_mut().enumerate() {
                        *acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(kp.add(t * hd + c * 8)), *acc);
                    }
                }
                let s01 = _mm256_hadd_ps(acc[0], acc[1]);
                let s23 = _mm256_hadd_ps(acc[2], acc[3]);
                let s45 = _mm256_hadd_ps(acc[4], acc[5]);
                let s67 = _mm256_hadd_ps(acc[6], acc[7]);
                let s0123 = _mm256_hadd_ps(s01, s23);
                let s4567 = _mm256_hadd_ps(s45, s67);
                let lo = _mm256_permute2f128_ps::<0x20>(s0123, s4567);
                let hi = _mm256_permute2f128_ps::<0x31>(s0123, s4567);
                let sums = _mm256_mul_ps(_mm256_add_ps(lo, hi), sv);
                _mm256_storeu_ps(scores.as_mut_ptr().add(j), sums);
                j += 8;
            }
            for (jj, score) in scores.iter_mut().enumerate().skip(j) {
                let kj = k.as_ptr().add(jj * hd);
                let mut acc = _mm256_setzero_ps();
                for c in 0..lanes {
                    let a = _mm256_loadu_ps(qp.add(c * 8));
                    acc = _mm256_fmadd_ps(a, _mm256_loadu_ps(kj.add(c * 8)), acc);
                }
                let hi = _mm256_extractf128_ps(acc, 1);
                let lo = _mm256_castps256_ps128(acc);
                let s4 = _mm_add_ps(lo, hi);
                let s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
                let s1 = _mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1));
                *score = _mm_cvtss_f32(s1) * scale;
            }
            let sum = super::softmax_unnormalised(&mut scores);
            let inv = _mm256_set1_ps(1.0 / sum);
            // Up to eight output lanes at a time, each summed over the keys in order.
            for c0 in (0..lanes).step_by(8) {
                let n = (lanes - c0).min(8);
                let mut acc = [_mm256_setzero_ps(); 8];
                for (jj, p) in scores.iter().enumerate() {
                    let pv = _mm256_set1_ps(*p);
                    let vp = v.as_ptr().add(jj * hd + c0 * 8);
                    for (c, acc) in acc.iter_mut().enumerate().take(n) {
                        *acc = _mm256_fmadd_ps(pv, _mm256_loadu_ps(vp.add(c * 8)), *acc);
                    }
                }
                for (c, acc) in acc.iter().enumerate().take(n) {
                    _mm256_storeu_ps(dst.as_mut_ptr().add((c0 + c) * 8), _mm256_mul_ps(*acc, inv));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                (x as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Straightforward float64 attention for comparison.
    fn reference(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape) -> Vec<f32> {
        let hd = s.head_dim;
        let groups = s.heads / s.kv_heads;
        let mut out = vec![0f32; s.rows * s.heads * hd];
        for r in 0..s.rows {
            for h in 0..s.heads {
                let g = h / groups;
                let len = s.pos + r + 1;
                let qv = &q[(h * s.rows + r) * hd..][..hd];
                let scores: Vec<f64> = (0..len)
                    .map(|j| {
                        let kj = &k[(g * s.capacity + j) * hd..][..hd];
                        qv.iter()
                            .zip(kj)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for d in 0..hd {
                    let acc: f64 = (0..len)
                        .map(|j| e[j] * v[(g * s.capacity + j) * hd + d] as f64)
                        .sum();
                    out[(r * s.heads + h) * hd + d] = (acc / sum) as f32;
                }
            }
        }
        out
    }

    fn shape(pos: usize, rows: usize, head_dim: usize) -> AttentionShape {
        AttentionShape {
            heads: 6,
            kv_heads: 2,
            head_dim,
            capacity: 64,
            pos,
            rows,
        }
    }

    /// 20: the portable code; 64: the AVX2 code where the CPU has it (keys in
    /// groups of eight plus a tail).
    const HEAD_DIMS: [usize; 2] = [20, 64];

    #[test]
    fn matches_a_float64_reference() {
        for hd in HEAD_DIMS {
            for (pos, rows) in [(0, 1), (37, 5), (5, 11), (55, 9)] {
                let s = shape(pos, rows, hd);
                let q = noise(6 * rows * hd, 1);
                let (k, v) = (noise(2 * 64 * hd, 2), noise(2 * 64 * hd, 3));
                let got = attend(&q, &k, &v, s);
                let want = reference(&q, &k, &v, s);
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(err < 1e-5, "hd {hd} pos {pos} rows {rows}: max error {err}");
            }
        }
    }

    #[test]
    fn a_row_is_bit_identical_whatever_rows_come_with_it() {
        for hd in HEAD_DIMS {
            let (k, v) = (noise(2 * 64 * hd, 4), noise(2 * 64 * hd, 5));
            let rows = 9;
            let q = noise(6 * rows * hd, 6);
            let batch = attend(&q, &k, &v, shape(40, rows, hd));
            for r in 0..rows {
                // The same query alone, at its own position.
                let single: Vec<f32> = (0..6)
                    .flat_map(|h| q[(h * rows + r) * hd..][..hd].to_vec())
                    .collect();
                let alone = attend(&single, &k, &v, shape(40 + r, 1, hd));
                let n = 6 * hd;
                assert_eq!(alone[..], batch[r * n..(r + 1) * n], "hd {hd} row {r}");
            }
        }
    }

    #[test]
    fn large_calls_split_over_threads_give_the_same_bits() {
        let s = AttentionShape {
            heads: 8,
            kv_heads: 8,
            head_dim: 64,
            capacity: 1024,
            pos: 1000,
            rows: 16,
        };
        let (q, k, v) = (
            noise(8 * 16 * 64, 7),
            noise(8 * 1024 * 64, 8),
            noise(8 * 1024 * 64, 9),
        );
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let serial = pool.install(|| attend(&q, &k, &v, s));
        assert_eq!(serial, attend(&q, &k, &v, s));
    }
}

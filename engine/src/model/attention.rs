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

/// Causal softmax in place, for the prompt chunks too long for [`attend`]: `scores`
/// holds rows of `total` scores, in blocks of `rows` rows (one block per head), and
/// row `i` of a block (the query at position `pos + i`) may attend to positions
/// `0..=pos + i`; the later positions get probability zero.
///
/// The exponentials are computed eight at a time where the CPU has AVX2 and FMA
/// (a polynomial within about one unit in the last place of `f32::exp`).
///
/// # Panics
/// If `scores` is not made of whole blocks or a row is shorter than its causal
/// window (`total < pos + rows`).
pub fn causal_softmax(scores: &mut [f32], total: usize, rows: usize, pos: usize) {
    assert!(total >= pos + rows && rows > 0 && scores.len().is_multiple_of(rows * total));
    let fma = fma_available();
    let task = |index: usize, row: &mut [f32]| {
        let (valid, masked) = row.split_at_mut(pos + index % rows + 1);
        masked.fill(0.0);
        let sum = if fma {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `fma_available` checked that the CPU has AVX2 and FMA.
            unsafe {
                let max = valid.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                fused::exp_shifted(valid, max)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!("no AVX2 outside x86_64")
        } else {
            softmax_unnormalised(valid)
        };
        let inv = 1.0 / sum;
        for s in valid.iter_mut() {
            *s *= inv;
        }
    };
    if scores.len() >= PARALLEL_MIN_WORK && rayon::current_num_threads() > 1 {
        scores
            .par_chunks_mut(total)
            .enumerate()
            .for_each(|(i, row)| task(i, row));
    } else {
        scores
            .chunks_mut(total)
            .enumerate()
            .for_each(|(i, row)| task(i, row));
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

    /// Replaces each `x` of `xs` by `exp(x - max)` (every `x ≤ max`) and returns
    /// their sum.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shifted(xs: &mut [f32], max: f32) -> f32 {
        let m = _mm256_set1_ps(max);
        let mut sums = _mm256_setzero_ps();
        let mut chunks = xs.chunks_exact_mut(8);
        for c in &mut chunks {
            // SAFETY: `c` holds eight floats.
            unsafe {
                let e = exp(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), m));
                _mm256_storeu_ps(c.as_mut_ptr(), e);
                sums = _mm256_add_ps(sums, e);
            }
        }
        let mut lanes = [0f32; 8];
        // SAFETY: `lanes` holds eight floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sums) };
        let mut sum = lanes.iter().sum::<f32>();
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mut tail = [f32::NEG_INFINITY; 8];
            tail[..rest.len()].copy_from_slice(rest);
            // SAFETY: `tail` holds eight floats.
            unsafe {
                let e = exp(_mm256_sub_ps(_mm256_loadu_ps(tail.as_ptr()), m));
                _mm256_storeu_ps(tail.as_mut_ptr(), e);
            }
            rest.copy_from_slice(&tail[..rest.len()]);
            sum += rest.iter().sum::<f32>();
        }
        sum
    }

    /// `e^x` for `x ≤ 0` (below −87 it gives about 1.6e−38, which a sum with the
    /// maximum's 1 cannot tell from zero; `−∞` gives zero): `x = n ln 2 + r` with
    /// `|r| ≤ ln 2 / 2`, a degree-6 Taylor polynomial for `e^r` (relative error
    /// about 1.2e−7) and `2^n` put into the exponent bits.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    fn exp(x: __m256) -> __m256 {
        let zero = _mm256_cmp_ps::<_CMP_EQ_OQ>(x, _mm256_set1_ps(f32::NEG_INFINITY));
        let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        // ln 2 in two parts, so that `n · LN2_HI` is exact.
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6), r);
        let mut p = _mm256_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let scale = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        let e = _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
        _mm256_andnot_ps(zero, e)
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
    fn causal_softmax_matches_a_float64_reference() {
        // Rows of 29 and 203 scores: whole groups of eight and a tail.
        for (blocks, rows, pos, total) in [(3, 5, 24, 29), (2, 20, 183, 203), (1, 17, 0, 17)] {
            let mut got: Vec<f32> = noise(blocks * rows * total, 11)
                .iter()
                .map(|x| x * 30.0)
                .collect();
            let input = got.clone();
            causal_softmax(&mut got, total, rows, pos);
            for (r, (row, input)) in got.chunks(total).zip(input.chunks(total)).enumerate() {
                let len = pos + r % rows + 1;
                let max = input[..len]
                    .iter()
                    .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
                let e: Vec<f64> = input[..len]
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .collect();
                let sum: f64 = e.iter().sum();
                for (j, &p) in row.iter().enumerate() {
                    let want = if j < len { e[j] / sum } else { 0.0 };
                    assert!(
                        (p as f64 - want).abs() <= 1e-6 * want.max(1e-3),
                        "row {r} position {j}: {p}, want {want}"
                    );
                }
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

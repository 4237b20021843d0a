//! Choosing the next token from logits: greedy, or seeded temperature/top-k/top-p sampling.

use std::collections::{HashMap, HashSet};

use crate::error::{EngineError, Result};

/// How to pick tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax); otherwise logits are divided by it.
    pub temperature: f32,
    /// Keep only the k most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = all).
    pub top_p: f32,
    /// Seed of the random generator; the same seed gives the same tokens.
    pub seed: u64,
    /// Penalties on tokens already seen (neutral by default).
    pub penalties: Penalties,
}

/// Penalties on repeating tokens, applied to the logits before anything else (also
/// when decoding greedily), as OpenAI and vLLM define them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Penalties {
    /// Subtracted once from the logit of every token generated so far (OpenAI's
    /// `presence_penalty`, -2..2).
    pub presence: f32,
    /// Subtracted from a token's logit once per time it was generated so far
    /// (OpenAI's `frequency_penalty`, -2..2).
    pub frequency: f32,
    /// Logits of tokens in the prompt or generated so far are divided by it when
    /// positive and multiplied by it when negative (`repetition_penalty`, > 0; 1 is
    /// off), as in the CTRL paper, transformers and vLLM.
    pub repetition: f32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self::NONE
    }
}

impl Penalties {
    /// No penalty.
    pub const NONE: Penalties = Penalties {
        presence: 0.0,
        frequency: 0.0,
        repetition: 1.0,
    };

    /// Whether any penalty changes logits.
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            penalties: Penalties::NONE,
        }
    }

    /// Whether decoding is argmax.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }

    /// Rejects values outside their ranges.
    pub fn validate(&self) -> Result<()> {
        if !self.temperature.is_finite() || self.temperature < 0.0 || self.temperature > 100.0 {
            return Err(EngineError::InvalidRequest(format!(
                "temperature must be between 0 and 100, got {}",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::InvalidRequest(format!(
                "top_p must be in (0, 1], got {}",
                self.top_p
            )));
        }
        let p = &self.penalties;
        for (name, v) in [("presence", p.presence), ("frequency", p.frequency)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(EngineError::InvalidRequest(format!(
                    "the {name} penalty must be between -2 and 2, got {v}"
                )));
            }
        }
        if !(p.repetition.is_finite() && p.repetition > 0.0 && p.repetition <= 10.0) {
            return Err(EngineError::InvalidRequest(format!(
                "the repetition penalty must be in (0, 10], got {}",
                p.repetition
            )));
        }
        Ok(())
    }
}

/// A small, fast, reproducible random generator (xoshiro256**, seeded by splitmix64).
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose stream is fully determined by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Self {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// A uniform float in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A generated token's log-probability under the model, with the most likely tokens
/// at that step (OpenAI's `logprobs` / `top_logprobs`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token chosen.
    pub token: u32,
    /// Its natural-log probability.
    pub logprob: f32,
    /// The most likely tokens at that step with theirs, most likely first.
    pub top: Vec<(u32, f32)>,
}

/// The log-probability of `token` and of the `top` most likely tokens in the model's
/// distribution `logits` (the softmax of the raw logits: before temperature,
/// penalties, top-k/top-p and any grammar, as vLLM reports them by default).
pub fn logprobs_of(logits: &[f32], token: u32, top: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let norm = max + sum.ln();
    let lp = |i: u32| {
        (logits.get(i as usize).copied().unwrap_or(f32::NEG_INFINITY) as f64 - norm) as f32
    };
    let mut best: Vec<u32> = (0..logits.len() as u32).collect();
    let by_desc = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    let k = top.min(best.len());
    if k > 0 && k < best.len() {
        best.select_nth_unstable_by(k - 1, by_desc);
    }
    best.truncate(k);
    best.sort_unstable_by(by_desc);
    TokenLogprob {
        token,
        logprob: lp(token),
        top: best.into_iter().map(|i| (i, lp(i))).collect(),
    }
}

/// Index of the largest value (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best as u32
}

/// The distribution sampling draws from after temperature, top-k and top-p:
/// `(token, probability)` pairs, most likely first, summing to 1.
pub fn filtered_distribution(logits: &[f32], params: &SamplingParams) -> Vec<(u32, f64)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let by_logit_desc = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    if params.top_k > 0 && params.top_k < idx.len() {
        idx.select_nth_unstable_by(params.top_k - 1, by_logit_desc);
        idx.truncate(params.top_k);
    }
    idx.sort_unstable_by(by_logit_desc);
    let t = params.temperature.max(1e-6) as f64;
    let max = idx
        .first()
        .map(|&i| logits[i as usize] as f64)
        .unwrap_or(0.0);
    let mut probs: Vec<(u32, f64)> = idx
        .iter()
        .map(|&i| (i, ((logits[i as usize] as f64 - max) / t).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut cumulative = 0.0;
    let len = probs.len();
    let mut keep = len;
    for (n, p) in probs.iter_mut().enumerate() {
        p.1 /= total;
        cumulative += p.1;
        if cumulative >= params.top_p as f64 && keep == len {
            keep = n + 1;
        }
    }
    probs.truncate(keep.max(1));
    let kept: f64 = probs.iter().map(|p| p.1).sum();
    for p in probs.iter_mut() {
        p.1 /= kept;
    }
    probs
}

/// Picks tokens for one sequence.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// Times each token was generated (penalties only).
    generated: HashMap<u32, u32>,
    /// Tokens of the prompt (repetition penalty only).
    prompt: HashSet<u32>,
    /// Logits after penalties (reused).
    scratch: Vec<f32>,
}

impl Sampler {
    /// A sampler seeded from `params.seed`, for a sequence that starts with `prompt`.
    pub fn new(params: SamplingParams, prompt: &[u32]) -> Self {
        let rng = Rng::new(params.seed);
        let prompt = if params.penalties.repetition == 1.0 {
            HashSet::new()
        } else {
            prompt.iter().copied().collect()
        };
        Self {
            params,
            rng,
            generated: HashMap::new(),
            prompt,
            scratch: Vec::new(),
        }
    }

    /// The parameters in use.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// `logits` with the penalties applied (in `scratch`), or `logits` itself.
    fn penalized<'a>(
        penalties: &Penalties,
        generated: &HashMap<u32, u32>,
        prompt: &HashSet<u32>,
        logits: &'a [f32],
        scratch: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        if penalties.is_none() || (generated.is_empty() && prompt.is_empty()) {
            return logits;
        }
        scratch.clear();
        scratch.extend_from_slice(logits);
        if penalties.repetition != 1.0 {
            // Each token seen once or more is penalised once.
            let more = generated.keys().filter(|t| !prompt.contains(t));
            for &t in prompt.iter().chain(more) {
                if let Some(l) = scratch.get_mut(t as usize) {
                    *l = if *l > 0.0 {
                        *l / penalties.repetition
                    } else {
                        *l * penalties.repetition
                    };
                }
            }
        }
        for (&t, &n) in generated {
            if let Some(l) = scratch.get_mut(t as usize) {
                *l -= penalties.presence + penalties.frequency * n as f32;
            }
        }
        scratch
    }

    /// Records `token` as generated (for the penalties) and returns it.
    fn taken(&mut self, token: u32) -> u32 {
        if !self.params.penalties.is_none() {
            *self.generated.entry(token).or_insert(0) += 1;
        }
        token
    }

    /// Draws a token from `logits`.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let logits = Self::penalized(
            &self.params.penalties,
            &self.generated,
            &self.prompt,
            logits,
            &mut self.scratch,
        );
        if self.params.is_greedy() {
            let t = argmax(logits);
            return self.taken(t);
        }
        let dist = filtered_distribution(logits, &self.params);
        let r = self.rng.uniform();
        let mut acc = 0.0;
        let mut pick = None;
        for &(id, p) in &dist {
            acc += p;
            if r < acc {
                pick = Some(id);
                break;
            }
        }
        let t = pick
            .or_else(|| dist.last().map(|d| d.0))
            .unwrap_or_else(|| argmax(logits));
        self.taken(t)
    }
}

impl Sampler {
    /// Checks a drafted token against `logits`: returns the token to emit and whether
    /// it is the draft. Greedy: the draft is kept iff it is the argmax. Sampling: the
    /// draft is kept with its probability, else a token is drawn from the distribution
    /// without it, which leaves the output distribution exactly that of plain sampling.
    pub fn verify(&mut self, logits: &[f32], draft: u32) -> (u32, bool) {
        let (token, is_draft) = self.verify_penalized(logits, draft);
        (self.taken(token), is_draft)
    }

    fn verify_penalized(&mut self, logits: &[f32], draft: u32) -> (u32, bool) {
        let logits = Self::penalized(
            &self.params.penalties,
            &self.generated,
            &self.prompt,
            logits,
            &mut self.scratch,
        );
        if self.params.is_greedy() {
            let t = argmax(logits);
            return (t, t == draft);
        }
        let dist = filtered_distribution(logits, &self.params);
        let p_draft = dist
            .iter()
            .find(|(id, _)| *id == draft)
            .map(|d| d.1)
            .unwrap_or(0.0);
        if self.rng.uniform() < p_draft {
            return (draft, true);
        }
        let rest = 1.0 - p_draft;
        let r = self.rng.uniform() * rest;
        let mut acc = 0.0;
        let mut last = None;
        for &(id, p) in dist.iter().filter(|(id, _)| *id != draft) {
            acc += p;
            last = Some(id);
            if r < acc {
                return (id, false);
            }
        }
        (last.unwrap_or(draft), last.is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 3.0, 3.0, -1.0]), 1);
        let mut s = Sampler::new(SamplingParams::greedy(), &[]);
        assert_eq!(s.sample(&[0.0, 0.5, 0.2]), 1);
    }

    #[test]
    fn same_seed_same_tokens() {
        let logits: Vec<f32> = (0..100).map(|i| ((i * 37) % 11) as f32 * 0.3).collect();
        let params = SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 42,
            penalties: Penalties::NONE,
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone(), &[]);
            (0..50).map(|_| s.sample(&logits)).collect()
        };
        let mut s = Sampler::new(params, &[]);
        let b: Vec<u32> = (0..50).map(|_| s.sample(&logits)).collect();
        assert_eq!(a, b);
        assert!(a.iter().collect::<std::collections::HashSet<_>>().len() > 3);
    }

    #[test]
    fn top_k_and_top_p_restrict_support() {
        let logits = [5.0f32, 4.0, 3.0, 2.0, 1.0];
        let k2 = SamplingParams {
            temperature: 1.0,
            top_k: 2,
            top_p: 1.0,
            seed: 1,
            penalties: Penalties::NONE,
        };
        let d = filtered_distribution(&logits, &k2);
        assert_eq!(d.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1]);
        let p = SamplingParams {
            top_k: 0,
            top_p: 0.5,
            ..k2
        };
        let d = filtered_distribution(&logits, &p);
        assert_eq!(d.len(), 1, "the top token alone has p > 0.5");
        assert!((d.iter().map(|p| p.1).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn sampling_frequencies_follow_softmax() {
        let logits = [0.0f32, (2.0f32).ln(), (7.0f32).ln()];
        let mut s = Sampler::new(
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed: 7,
                penalties: Penalties::NONE,
            },
            &[],
        );
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            counts[s.sample(&logits) as usize] += 1;
        }
        let expected = [0.1, 0.2, 0.7];
        for i in 0..3 {
            let f = counts[i] as f64 / n as f64;
            assert!(
                (f - expected[i]).abs() < 0.015,
                "token {i}: {f} vs {}",
                expected[i]
            );
        }
    }

    #[test]
    fn penalties_follow_openai_and_vllm() {
        let greedy = |penalties| SamplingParams {
            penalties,
            ..SamplingParams::greedy()
        };
        // Token 0 leads by 0.5 until it has been generated: a presence penalty of 1
        // hands the lead to token 1, and a frequency penalty of 0.3 does so after
        // token 0 came twice.
        let logits = [2.0f32, 1.5, -1.0];
        let mut s = Sampler::new(
            greedy(Penalties {
                presence: 1.0,
                ..Penalties::NONE
            }),
            &[],
        );
        assert_eq!([s.sample(&logits), s.sample(&logits)], [0, 1]);
        let mut s = Sampler::new(
            greedy(Penalties {
                frequency: 0.3,
                ..Penalties::NONE
            }),
            &[],
        );
        let picks: Vec<u32> = (0..4).map(|_| s.sample(&logits)).collect();
        assert_eq!(
            picks,
            [0, 0, 1, 0],
            "2.0 - 0.6 = 1.4 < 1.5; then 1.5 - 0.3 < 1.4"
        );
        // Repetition: positive logits divided, negative multiplied; prompt tokens count.
        let rep = Penalties {
            repetition: 2.0,
            ..Penalties::NONE
        };
        let mut s = Sampler::new(greedy(rep), &[0, 2]);
        assert_eq!(s.sample(&[2.0, 1.5, -1.0]), 1, "2.0 / 2 = 1.0 < 1.5");
        let penalized = Sampler::penalized(
            &rep,
            &s.generated,
            &s.prompt,
            &[2.0, 1.5, -1.0],
            &mut Vec::new(),
        )
        .to_vec();
        assert_eq!(
            penalized,
            [1.0, 0.75, -2.0],
            "each seen token penalised once"
        );
        // Verification of drafts sees the same penalised logits and counts.
        let mut a = Sampler::new(
            greedy(Penalties {
                presence: 1.0,
                ..Penalties::NONE
            }),
            &[],
        );
        assert_eq!(a.verify(&logits, 0), (0, true));
        assert_eq!(a.verify(&logits, 0), (1, false));
        let mut p = SamplingParams::greedy();
        p.penalties.frequency = 2.5;
        assert!(p.validate().is_err());
        p.penalties = Penalties {
            repetition: 0.0,
            ..Penalties::NONE
        };
        assert!(p.validate().is_err());
    }

    #[test]
    fn invalid_params_are_rejected() {
        let mut p = SamplingParams::greedy();
        p.temperature = -1.0;
        assert!(p.validate().is_err());
        p.temperature = 0.5;
        p.top_p = 0.0;
        assert!(p.validate().is_err());
    }

    #[test]
    fn logprobs_are_the_log_softmax_with_the_best_first() {
        let logits = [1.0f32, 3.0, 2.0, f32::NEG_INFINITY];
        let lp = logprobs_of(&logits, 2, 2);
        let norm = (1f64.exp() + 3f64.exp() + 2f64.exp()).ln();
        assert!((lp.logprob as f64 - (2.0 - norm)).abs() < 1e-6);
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 2]);
        assert!((lp.top[0].1 as f64 - (3.0 - norm)).abs() < 1e-6);
        assert_eq!(logprobs_of(&logits, 3, 0).logprob, f32::NEG_INFINITY);
        assert!(logprobs_of(&logits, 0, 9).top.len() == 4);
    }
}

//! The forward pass over a ragged batch of sequences.
//!
//! Every sequence in a step contributes a run of new tokens (a prefill chunk,
//! one decode token, or several drafted tokens to verify). All projections run
//! once over the concatenated rows; attention runs per sequence against its
//! own [`KvCache`].

use candle_core::{D, DType, Device, Tensor};

use super::attention::{self, AttentionShape};
use super::config::{ModelConfig, RopeStyle};
use super::weights::Weights;
use crate::error::{EngineError, Result};
use crate::kv_cache::KvCache;

/// Which positions of a sequence's new tokens need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// None (an intermediate prefill chunk).
    None,
    /// Only the last new position.
    Last,
    /// Every new position (speculative verification, reference tests).
    All,
}

/// One sequence's share of a forward step.
pub struct StepInput<'a> {
    /// The sequence's cache; its length is the position of the first new token.
    pub cache: &'a mut KvCache,
    /// The new tokens.
    pub tokens: &'a [u32],
    /// Which logits to return.
    pub logits: LogitsWanted,
}

/// A loaded decoder-only transformer ready to run.
pub struct Transformer {
    cfg: ModelConfig,
    weights: Weights,
    cos: Tensor,
    sin: Tensor,
    device: Device,
}

impl Transformer {
    /// Combines configuration and weights, precomputing rotary tables.
    pub fn new(cfg: ModelConfig, weights: Weights, device: &Device) -> Result<Self> {
        let half = cfg.head_dim / 2;
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| 1.0 / cfg.rope_theta.powf(2.0 * i as f32 / cfg.head_dim as f32))
            .collect();
        let positions = cfg.context_length;
        let mut angles = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv_freq {
                angles.push(p as f32 * f);
            }
        }
        let angles = Tensor::from_vec(angles, (positions, half), device)?;
        Ok(Self {
            cos: angles.cos()?,
            sin: angles.sin()?,
            cfg,
            weights,
            device: device.clone(),
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// Bytes the weights and the rotary tables hold in memory.
    pub fn resident_bytes(&self) -> u64 {
        let mut held = crate::footprint::HeldBytes::default();
        self.weights.count_bytes(&mut held);
        held.tensor(&self.cos);
        held.tensor(&self.sin);
        held.total()
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache {
        KvCache::new(
            self.cfg.num_layers,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            &self.device,
        )
    }

    fn rope(&self, x: &Tensor, pos: usize) -> Result<Tensor> {
        // x: [heads, t, head_dim]
        let t = x.dim(1)?;
        let cos = self.cos.narrow(0, pos, t)?;
        let sin = self.sin.narrow(0, pos, t)?;
        let x = x.unsqueeze(0)?.contiguous()?;
        let y = match self.cfg.rope_style {
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, &cos, &sin)?,
            RopeStyle::Halves => candle_nn::rotary_emb::rope(&x, &cos, &sin)?,
        };
        Ok(y.squeeze(0)?)
    }

    /// Queries `[heads, t, head_dim]` and keys rotated to their positions from `pos`,
    /// and values `[kv_heads, t, head_dim]`, from the projections `[t, heads · head_dim]`.
    fn rotate(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        pos: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let cfg = &self.cfg;
        let (t, _) = q.dims2()?;
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        #[cfg(feature = "cuda")]
        if self.device.is_cuda() && hd.is_multiple_of(32) && hd <= kernels::shape::MAX_HEAD_DIM {
            // One launch instead of two rotations and three transposed copies.
            let shape = kernels::RopeShape {
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                capacity: t,
                pos: 0,
                rows: t,
                interleaved: matches!(cfg.rope_style, RopeStyle::Interleaved),
            };
            let tables = (self.cos.narrow(0, pos, t)?, self.sin.narrow(0, pos, t)?);
            return super::cuda::rope_qkv(q, k, v, (&tables.0, &tables.1), shape);
        }
        let q = self.rope(&q.reshape((t, nh, hd))?.transpose(0, 1)?, pos)?;
        let k = self.rope(&k.reshape((t, nkv, hd))?.transpose(0, 1)?, pos)?;
        let v = v.reshape((t, nkv, hd))?.transpose(0, 1)?;
        Ok((q, k, v))
    }

    fn attention(
        &self,
        layer: usize,
        cache: &mut KvCache,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
    ) -> Result<Tensor> {
        let cfg = &self.cfg;
        let (t, _) = q.dims2()?;
        let pos = cache.len();
        let (nh, nkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let groups = nh / nkv;
        let (q, k, v) = self.rotate(q, k, v, pos)?;
        let (keys, values) = cache.append(layer, &k, &v)?;
        let total = pos + t;
        // Rows `first..t` exactly as a one-token decode step at their positions
        // computes them (`None` off the CPU).
        let exact = |first: usize| -> Result<Option<Vec<f32>>> {
            if !self.device.is_cpu() {
                // No copy of the queries off the device for nothing.
                return Ok(None);
            }
            let rows = t - first;
            let qv = q
                .narrow(1, first, rows)?
                .contiguous()?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let shape = AttentionShape {
                heads: nh,
                kv_heads: nkv,
                head_dim: hd,
                capacity: 0,
                pos: pos + first,
                rows,
            };
            Ok(cache.with_cpu_layer(layer, |keys, values, capacity| {
                attention::attend(&qv, keys, values, AttentionShape { capacity, ..shape })
            }))
        };
        if t <= EXACT_ROWS {
            // Speculative verification then reproduces plain decoding bit for bit.
            if let Some(out) = exact(0)? {
                return Ok(Tensor::from_vec(out, (t, nh * hd), &self.device)?);
            }
            #[cfg(feature = "cuda")]
            if self.device.is_cuda()
                && hd.is_multiple_of(32)
                && hd <= kernels::shape::MAX_HEAD_DIM
                && let Some((ck, cv, capacity)) = cache.layer_storage(layer)
            {
                // Souffleur's decode attention: each row in the same order of operations
                // whatever the number of rows, like the CPU's.
                let shape = kernels::AttentionShape {
                    heads: nh,
                    kv_heads: nkv,
                    head_dim: hd,
                    capacity,
                    pos,
                    rows: t,
                };
                return super::cuda::attention(&q, ck, cv, shape);
            }
            if t > 1 {
                // Not on the CPU: one row at a time through the one-row path below.
                let mut rows = Vec::with_capacity(t);
                for i in 0..t {
                    let qi = (q
                        .narrow(1, i, 1)?
                        .contiguous()?
                        .reshape((nkv, groups, hd))?
                        * (1.0 / (hd as f64).sqrt()))?;
                    let len = pos + i + 1;
                    let scores = qi.matmul(&keys.narrow(1, 0, len)?.t()?)?;
                    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
                    let out = probs.matmul(&values.narrow(1, 0, len)?.contiguous()?)?;
                    rows.push(out.reshape((1, nh * hd))?);
                }
                return Ok(Tensor::cat(&rows, 0)?);
            }
        }
        let q = (q.contiguous()?.reshape((nkv, groups * t, hd))? * (1.0 / (hd as f64).sqrt()))?;
        let scores = q.matmul(&keys.t()?)?;
        let probs = if self.device.is_cpu() {
            // The causal mask and the softmax in one pass over the scores.
            let mut s = scores.flatten_all()?.to_vec1::<f32>()?;
            attention::causal_softmax(&mut s, total, t, pos);
            Tensor::from_vec(s, (nkv, groups * t, total), &self.device)?
        } else {
            let scores = if t > 1 {
                let mut mask = vec![0f32; t * total];
                for i in 0..t {
                    for j in (pos + i + 1)..total {
                        mask[i * total + j] = f32::NEG_INFINITY;
                    }
                }
                let mask = Tensor::from_vec(mask, (t, total), &self.device)?;
                scores
                    .reshape((nkv, groups, t, total))?
                    .broadcast_add(&mask)?
                    .reshape((nkv, groups * t, total))?
            } else {
                scores
            };
            candle_nn::ops::softmax_last_dim(&scores)?
        };
        let out = probs
            .matmul(&values.contiguous()?)?
            .reshape((nh, t, hd))?
            .transpose(0, 1)?
            .contiguous()?
            .reshape((t, nh * hd))?;
        // The chunk's last row exactly as a one-token step computes it: a prompt whose
        // earlier positions come from the prefix cache feeds its last token alone, and
        // must get the same first token as the same prompt computed in one chunk.
        match exact(t - 1)? {
            Some(last) => {
                let last = Tensor::from_vec(last, (1, nh * hd), &self.device)?;
                Ok(Tensor::cat(&[out.narrow(0, 0, t - 1)?, last], 0)?)
            }
            None => Ok(out),
        }
    }

    /// Runs one step over `inputs` and returns, per input, logits `[rows, vocab]`
    /// for the positions it asked for (`None` when it asked for none).
    pub fn forward(&self, inputs: &mut [StepInput<'_>]) -> Result<Vec<Option<Tensor>>> {
        let mut ids = Vec::new();
        for input in inputs.iter_mut() {
            if input.tokens.is_empty() {
                return Err(EngineError::InvalidRequest("empty step input".into()));
            }
            if input.cache.len() + input.tokens.len() > self.cfg.context_length {
                return Err(EngineError::PromptTooLong {
                    prompt_tokens: input.cache.len() + input.tokens.len(),
                    max_new_tokens: 0,
                    context_length: self.cfg.context_length,
                });
            }
            if let Some(&bad) = input
                .tokens
                .iter()
                .find(|&&id| id as usize >= self.cfg.vocab_size)
            {
                return Err(EngineError::InvalidRequest(format!(
                    "token id {bad} out of vocabulary"
                )));
            }
            input.cache.reserve(input.tokens.len())?;
            ids.extend_from_slice(input.tokens);
        }
        let n = ids.len();
        let ids = Tensor::from_vec(ids, n, &self.device)?;
        let mut x = self.weights.embedding.forward(&ids)?;
        for (layer, block) in self.weights.blocks.iter().enumerate() {
            let h = block.attn_norm.forward(&x)?;
            let q = block.q.forward(&h)?;
            let k = block.k.forward(&h)?;
            let v = block.v.forward(&h)?;
            let mut outs = Vec::with_capacity(inputs.len());
            let mut offset = 0;
            for input in inputs.iter_mut() {
                let t = input.tokens.len();
                outs.push(self.attention(
                    layer,
                    input.cache,
                    &q.narrow(0, offset, t)?,
                    &k.narrow(0, offset, t)?,
                    &v.narrow(0, offset, t)?,
                )?);
                offset += t;
            }
            let attn = if outs.len() == 1 {
                outs.pop().unwrap_or(h)
            } else {
                Tensor::cat(&outs, 0)?
            };
            x = (x + block.o.forward(&attn)?)?;
            let h = block.mlp_norm.forward(&x)?;
            x = (&x + block.mlp.forward(&h)?)?;
        }
        // Gather the rows that need logits and project only those.
        let mut rows: Vec<u32> = Vec::new();
        let mut spans = Vec::with_capacity(inputs.len());
        let mut offset = 0u32;
        for input in inputs.iter_mut() {
            let t = input.tokens.len() as u32;
            let span = match input.logits {
                LogitsWanted::None => None,
                LogitsWanted::Last => Some((rows.len(), 1)),
                LogitsWanted::All => Some((rows.len(), t as usize)),
            };
            match input.logits {
                LogitsWanted::None => {}
                LogitsWanted::Last => rows.push(offset + t - 1),
                LogitsWanted::All => rows.extend(offset..offset + t),
            }
            spans.push(span);
            offset += t;
            input.cache.advance(t as usize);
        }
        if rows.is_empty() {
            return Ok(spans.into_iter().map(|_| None).collect());
        }
        let nrows = rows.len();
        let picked = x.index_select(&Tensor::from_vec(rows, nrows, &self.device)?, 0)?;
        let logits = self
            .weights
            .lm_head
            .forward(&self.weights.final_norm.forward(&picked)?)?
            .to_dtype(DType::F32)?;
        spans
            .into_iter()
            .map(|s| match s {
                Some((start, len)) => Ok(Some(logits.narrow(0, start, len)?)),
                None => Ok(None),
            })
            .collect()
    }
}

/// Inputs of at most this many tokens get attention computed row by row (see `attention`).
pub(crate) const EXACT_ROWS: usize = 16;

/// Index of the largest value in each row of `logits` (`[rows, vocab]`).
pub fn argmax_rows(logits: &Tensor) -> Result<Vec<u32>> {
    Ok(logits.argmax(D::Minus1)?.to_vec1::<u32>()?)
}

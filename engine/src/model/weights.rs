//! The weights of a loaded model, organised by block.

use candle_core::quantized::QTensor;
use candle_core::{DType, Tensor};
use std::sync::Arc;

use super::layers::{Linear, Norm};
use crate::error::Result;
use crate::footprint::HeldBytes;

/// Token embedding table, kept quantised when the file is.
#[derive(Debug, Clone)]
pub enum Embedding {
    /// A quantised table (GGUF); rows are dequantised on lookup.
    Quantized(Arc<QTensor>),
    /// A dense `[vocab, hidden]` table.
    Dense(Tensor),
}

impl Embedding {
    /// Looks up the rows for `ids` (a `[n]` u32 tensor), giving `[n, hidden]` f32.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Self::Quantized(q) => q.embedding(ids)?.to_dtype(DType::F32)?,
            Self::Dense(t) => t.embedding(ids)?,
        })
    }
}

/// The feed-forward part of a block.
#[derive(Debug, Clone)]
pub enum Mlp {
    /// `down(silu(gate(x)) * up(x))`.
    GatedSilu {
        /// Gate projection.
        gate: Linear,
        /// Up projection.
        up: Linear,
        /// Down projection.
        down: Linear,
    },
    /// `proj(gelu(fc(x)))`.
    Gelu {
        /// Input projection.
        fc: Linear,
        /// Output projection.
        proj: Linear,
    },
}

impl Mlp {
    /// Applies the feed-forward block to rows `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GatedSilu { gate, up, down } => {
                let g = candle_nn::ops::silu(&gate.forward(x)?)?;
                let u = up.forward(x)?;
                down.forward(&(g * u)?)
            }
            Self::Gelu { fc, proj } => {
                let h = fc.forward(x)?.gelu()?;
                proj.forward(&h)
            }
        }
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Block {
    /// Normalisation before attention.
    pub attn_norm: Norm,
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Attention output projection.
    pub o: Linear,
    /// Normalisation before the feed-forward block.
    pub mlp_norm: Norm,
    /// Feed-forward block.
    pub mlp: Mlp,
}

/// All weights of a model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embeddings.
    pub embedding: Embedding,
    /// Transformer blocks, in order.
    pub blocks: Vec<Block>,
    /// Final normalisation.
    pub final_norm: Norm,
    /// Projection to vocabulary logits.
    pub lm_head: Linear,
}

impl Weights {
    /// Adds the memory every weight holds to `held` (shared tensors once).
    pub(crate) fn count_bytes(&self, held: &mut HeldBytes) {
        match &self.embedding {
            Embedding::Quantized(q) => held.qtensor(q),
            Embedding::Dense(t) => held.tensor(t),
        }
        for b in &self.blocks {
            b.attn_norm.count_bytes(held);
            b.mlp_norm.count_bytes(held);
            for l in [&b.q, &b.k, &b.v, &b.o] {
                l.count_bytes(held);
            }
            match &b.mlp {
                Mlp::GatedSilu { gate, up, down } => {
                    for l in [gate, up, down] {
                        l.count_bytes(held);
                    }
                }
                Mlp::Gelu { fc, proj } => {
                    fc.count_bytes(held);
                    proj.count_bytes(held);
                }
            }
        }
        self.final_norm.count_bytes(held);
        self.lm_head.count_bytes(held);
    }
}

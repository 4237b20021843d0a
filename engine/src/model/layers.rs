//! The building blocks of a transformer block: linear maps and normalisation.

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Module, Tensor};

use super::config::NormKind;
use super::quant_matmul::QuantWeight;
use crate::error::Result;
use crate::footprint::HeldBytes;

/// How a [`Linear`] multiplies by its weight.
#[derive(Debug, Clone)]
enum LinearWeight {
    /// candle's matmul (dense weights, or quantisations the fast kernel lacks).
    Candle(QMatMul),
    /// The engine's own integer kernel on raw GGUF blocks (CPU).
    Quant(Arc<QuantWeight>),
    /// Souffleur's CUDA product kernels on raw GGUF blocks (GPU).
    #[cfg(feature = "cuda")]
    Cuda(Arc<super::cuda::CudaWeight>),
}

/// A linear map `x · Wᵀ + b` whose weight may be quantised (GGUF) or dense.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: LinearWeight,
    bias: Option<Tensor>,
}

impl Linear {
    /// Wraps a weight and optional bias.
    pub fn new(weight: QMatMul, bias: Option<Tensor>) -> Self {
        Self {
            weight: LinearWeight::Candle(weight),
            bias,
        }
    }

    /// Wraps a (possibly quantised) GGUF weight `[out, in]`: CPU weights in a
    /// format the engine's integer kernel supports use it, others candle's matmul.
    pub fn from_qtensor(weight: Arc<QTensor>, bias: Option<Tensor>) -> Result<Self> {
        #[cfg(feature = "cuda")]
        if let candle_core::Device::Cuda(dev) = weight.device()
            && let Some(w) = super::cuda::CudaWeight::from_qtensor(&weight, &dev)?
        {
            return Ok(Self {
                weight: LinearWeight::Cuda(Arc::new(w)),
                bias,
            });
        }
        let weight = if weight.device().is_cpu() && QuantWeight::supports(weight.dtype()) {
            LinearWeight::Quant(Arc::new(QuantWeight::from_qtensor(weight)?))
        } else {
            LinearWeight::Candle(QMatMul::from_arc(weight)?)
        };
        Ok(Self { weight, bias })
    }

    /// Adds the memory its weight and bias hold to `held`.
    pub(crate) fn count_bytes(&self, held: &mut HeldBytes) {
        match &self.weight {
            LinearWeight::Candle(QMatMul::QTensor(q)) => held.qtensor(q),
            LinearWeight::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => held.tensor(t),
            #[cfg(feature = "cuda")]
            LinearWeight::Cuda(w) => held.once(Arc::as_ptr(w) as usize, w.device_bytes() as u64),
            LinearWeight::Quant(w) => match w.held_bytes() {
                (_, Some(q)) => held.qtensor(q),
                (bytes, None) => held.once(Arc::as_ptr(w) as usize, bytes),
            },
        }
        if let Some(b) = &self.bias {
            held.tensor(b);
        }
    }

    /// Applies the map to rows `x` of shape `[n, in]`, giving `[n, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = match &self.weight {
            LinearWeight::Candle(w) => w.forward(x)?,
            LinearWeight::Quant(w) => w.forward(x)?,
            #[cfg(feature = "cuda")]
            LinearWeight::Cuda(w) => w.forward(x)?,
        };
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// RMSNorm or LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub struct Norm {
    kind: NormKind,
    weight: Tensor,
    bias: Option<Tensor>,
    eps: f32,
}

impl Norm {
    /// Builds a normalisation layer.
    pub fn new(kind: NormKind, weight: Tensor, bias: Option<Tensor>, eps: f64) -> Self {
        Self {
            kind,
            weight,
            bias,
            eps: eps as f32,
        }
    }

    /// Adds the memory its weight and bias hold to `held`.
    pub(crate) fn count_bytes(&self, held: &mut HeldBytes) {
        held.tensor(&self.weight);
        if let Some(b) = &self.bias {
            held.tensor(b);
        }
    }

    /// Normalises each row of `x`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self.kind {
            NormKind::Rms => candle_nn::ops::rms_norm(x, &self.weight, self.eps)?,
            NormKind::Layer => match &self.bias {
                Some(b) => candle_nn::ops::layer_norm(x, &self.weight, b, self.eps)?,
                None => {
                    let zeros = self.weight.zeros_like()?;
                    candle_nn::ops::layer_norm(x, &self.weight, &zeros, self.eps)?
                }
            },
        })
    }
}

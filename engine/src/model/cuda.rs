//! The model's hot paths on an NVIDIA GPU (the `cuda` feature): quantised products and
//! decode attention through Souffleur's own kernels (the `kernels` crate), launched on
//! candle's stream so they order with candle's operations on the same tensors.
//!
//! Weights in a format the kernels read (Q4_K, Q5_0, Q6_K, Q8_0) are uploaded as their
//! raw GGUF blocks and multiplied by the product kernels, eight rows at a time, so a
//! prompt's rows and a decode step's row go through the same arithmetic. Other formats
//! stay with candle's quantised matmul on the device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use candle_core::cuda_backend::{CudaDevice, CudaStorage, DeviceId};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Shape, Tensor};
use kernels::cuda::{CudaKernels, DeviceActs};
use kernels::cudarc::driver::CudaSlice;
use kernels::shape::MAX_ROWS;
use kernels::{AttentionShape, Format, GemvShape, RopeShape};

use crate::device::DeviceReport;
use crate::error::{EngineError, Result};

fn msg(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// The kernels loaded for each device (once per process).
fn kernels_for(dev: &CudaDevice) -> candle_core::Result<Arc<CudaKernels>> {
    static LOADED: OnceLock<Mutex<HashMap<DeviceId, Arc<CudaKernels>>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(k) = loaded.get(&dev.id()) {
        return Ok(k.clone());
    }
    let k = Arc::new(CudaKernels::load(dev.cuda_stream()).map_err(msg)?);
    loaded.insert(dev.id(), k.clone());
    Ok(k)
}

/// Describes a CUDA device and the kernels the engine uses on it.
pub(crate) fn report(dev: &CudaDevice) -> DeviceReport {
    match kernels_for(dev) {
        Ok(k) => DeviceReport {
            device: format!(
                "cuda:{} {} ({} PTX)",
                dev.cuda_stream().context().ordinal(),
                k.device_name(),
                k.arch()
            ),
            kernels: CudaKernels::kernel_names()
                .into_iter()
                .chain(["rms_norm, rope: candle".to_string()])
                .collect(),
        },
        Err(e) => DeviceReport {
            device: format!("cuda (kernels not loaded: {e})"),
            kernels: vec!["candle".into()],
        },
    }
}

/// The kernel format of a GGUF type, if the product kernels read it (the inverse of
/// [`crate::kernel_checks::dtype`]).
fn format_of(dtype: GgmlDType) -> Option<Format> {
    Format::ALL
        .into_iter()
        .find(|&f| crate::kernel_checks::dtype(f) == dtype)
}

/// A quantised weight `[out_features, in_features]` on the GPU as raw GGUF blocks.
#[derive(Debug)]
pub struct CudaWeight {
    kernels: Arc<CudaKernels>,
    bytes: CudaSlice<u8>,
    format: Format,
    out_features: usize,
    in_features: usize,
}

impl CudaWeight {
    /// Uploads `q` (on any device) when the product kernels read its format and its
    /// rows are whole blocks; `None` leaves it to candle.
    pub fn from_qtensor(q: &QTensor, dev: &CudaDevice) -> Result<Option<Self>> {
        let Some(format) = format_of(q.dtype()) else {
            return Ok(None);
        };
        let (out_features, in_features) = q.shape().dims2()?;
        if !in_features.is_multiple_of(format.block_values()) {
            return Ok(None);
        }
        let kernels = kernels_for(dev)?;
        let data = q.data()?;
        let bytes = kernels
            .stream()
            .clone_htod(data.as_ref())
            .map_err(|e| EngineError::Compute(msg(e)))?;
        Ok(Some(Self {
            kernels,
            bytes,
            format,
            out_features,
            in_features,
        }))
    }

    /// Bytes the weight holds on the device.
    pub fn device_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// `x · Wᵀ` for `x` `[.., in_features]` on the same GPU.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(candle_core::DType::F32)?.contiguous()?;
        Ok(x.apply_op1_no_bwd(&Product(self))?)
    }
}

/// The product as a candle operation.
struct Product<'a>(&'a CudaWeight);

impl CustomOp1 for Product<'_> {
    fn name(&self) -> &'static str {
        "souffleur-quantised-product"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(msg("the GPU product got a CPU tensor"))
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        let w = self.0;
        let dims = l.dims();
        let Some((&last, lead)) = dims.split_last() else {
            return Err(msg("quantised product: scalar input"));
        };
        if last != w.in_features {
            return Err(msg(format!(
                "quantised product: input {dims:?} does not end in {}",
                w.in_features
            )));
        }
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| msg("quantised product: input not contiguous"))?;
        let rows: usize = lead.iter().product();
        let x = s.as_cuda_slice::<f32>()?.slice(start..end);
        let stream = w.kernels.stream();
        let mut y = stream
            .alloc_zeros::<f32>(rows * w.out_features)
            .map_err(msg)?;
        let mut acts =
            DeviceActs::new(stream, MAX_ROWS.min(rows.max(1)) * w.in_features / 32).map_err(msg)?;
        let mut r0 = 0;
        while r0 < rows {
            let n = (rows - r0).min(MAX_ROWS);
            let shape = GemvShape {
                format: w.format,
                out_features: w.out_features,
                in_features: w.in_features,
                rows: n,
            };
            let xs = x.slice(r0 * w.in_features..(r0 + n) * w.in_features);
            let mut ys = y.slice_mut(r0 * w.out_features..(r0 + n) * w.out_features);
            w.kernels
                .gemv(shape, &w.bytes.as_view(), &xs, &mut acts, &mut ys)
                .map_err(msg)?;
            r0 += n;
        }
        let mut out = lead.to_vec();
        out.push(w.out_features);
        Ok((
            CudaStorage::wrap_cuda_slice(y, s.device.clone()),
            Shape::from(out),
        ))
    }
}

/// Decode attention on the GPU: `q` `[heads, rows, head_dim]` against the cache layer's
/// whole storage `keys`/`values` `[kv_heads, capacity, head_dim]`, giving
/// `[rows, heads · head_dim]`.
pub(crate) fn attention(
    q: &Tensor,
    keys: &Tensor,
    values: &Tensor,
    shape: AttentionShape,
) -> Result<Tensor> {
    let q = q.contiguous()?;
    Ok(q.apply_op3_no_bwd(keys, values, &Attention(shape))?)
}

struct Attention(AttentionShape);

fn view<'a>(
    s: &'a CudaStorage,
    l: &Layout,
    what: &str,
) -> candle_core::Result<kernels::cudarc::driver::CudaView<'a, f32>> {
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| msg(format!("attention: {what} not contiguous")))?;
    Ok(s.as_cuda_slice::<f32>()?.slice(start..end))
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "souffleur-decode-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(msg("the GPU attention got CPU tensors"))
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let shape = self.0;
        let kernels = kernels_for(&q.device)?;
        let (qv, kv, vv) = (
            view(q, ql, "query")?,
            view(k, kl, "keys")?,
            view(v, vl, "values")?,
        );
        let mut out = kernels
            .stream()
            .alloc_zeros::<f32>(shape.out_len())
            .map_err(msg)?;
        kernels
            .decode_attention(shape, &qv, &kv, &vv, &mut out.as_view_mut())
            .map_err(msg)?;
        Ok((
            CudaStorage::wrap_cuda_slice(out, q.device.clone()),
            Shape::from((shape.rows, shape.heads * shape.head_dim)),
        ))
    }
}

/// The fused rotation on the GPU: queries `[heads, t, head_dim]` and keys `[kv_heads, t,
/// head_dim]` rotated with the tables' rows (`cos`/`sin` `[t, head_dim / 2]`, already cut
/// to the positions), values `[kv_heads, t, head_dim]`, all from one launch.
pub(crate) fn rope_qkv(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    tables: (&Tensor, &Tensor),
    shape: RopeShape,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (cos, sin) = (tables.0.contiguous()?, tables.1.contiguous()?);
    let op = Rope {
        shape,
        cos: &cos,
        sin: &sin,
    };
    let all = q
        .contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?;
    let (nh, nkv) = (shape.heads, shape.kv_heads);
    Ok((
        all.narrow(0, 0, nh)?,
        all.narrow(0, nh, nkv)?,
        all.narrow(0, nh + nkv, nkv)?,
    ))
}

struct Rope<'a> {
    shape: RopeShape,
    cos: &'a Tensor,
    sin: &'a Tensor,
}

fn table_view<'a>(
    storage: &'a candle_core::Storage,
    l: &Layout,
) -> candle_core::Result<kernels::cudarc::driver::CudaView<'a, f32>> {
    match storage {
        candle_core::Storage::Cuda(s) => view(s, l, "rotary table"),
        _ => Err(msg("rope: the rotary tables are not on the GPU")),
    }
}

impl CustomOp3 for Rope<'_> {
    fn name(&self) -> &'static str {
        "souffleur-rope-qkv"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        Err(msg("the GPU rotation got CPU tensors"))
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        ql: &Layout,
        k: &CudaStorage,
        kl: &Layout,
        v: &CudaStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CudaStorage, Shape)> {
        let s = self.shape;
        let kernels = kernels_for(&q.device)?;
        let (qv, kv, vv) = (
            view(q, ql, "queries")?,
            view(k, kl, "keys")?,
            view(v, vl, "values")?,
        );
        let (cs, cl) = self.cos.storage_and_layout();
        let (ss, sl) = self.sin.storage_and_layout();
        let (cos, sin) = (table_view(&cs, cl)?, table_view(&ss, sl)?);
        let per_head = s.rows * s.head_dim;
        let mut out = kernels
            .stream()
            .alloc_zeros::<f32>((s.heads + 2 * s.kv_heads) * per_head)
            .map_err(msg)?;
        {
            let (mut q_out, mut rest) = out.split_at_mut(s.heads * per_head);
            let (mut keys, mut values) = rest.split_at_mut(s.kv_heads * per_head);
            kernels
                .rope_qk(
                    s,
                    [&qv, &kv, &vv],
                    [&cos, &sin],
                    None,
                    &mut q_out,
                    &mut keys,
                    &mut values,
                )
                .map_err(msg)?;
        }
        Ok((
            CudaStorage::wrap_cuda_slice(out, q.device.clone()),
            Shape::from((s.heads + 2 * s.kv_heads, s.rows, s.head_dim)),
        ))
    }
}

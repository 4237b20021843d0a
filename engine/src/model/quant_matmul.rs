//! Fast CPU matrix products with GGUF-quantised weights.
//!
//! [`QuantWeight`] computes `y = x · Wᵀ` directly on the raw GGUF blocks of `W`
//! (Q4_0, Q4_1, Q5_0, Q8_0 and the K-quants Q4_K, Q5_K, Q6_K). Each row of `x` is
//! first quantised to 8-bit blocks of 32 values with one `f32` scale `d` and the
//! scaled sum `s = d · Σq` (like llama.cpp's Q8_1), so every block product is an
//! integer dot product:
//!
//! * Q8_0: `d_w · d_x · Σ w·q`
//! * Q4_1: `d_w · d_x · Σ w·q + m_w · s_x` (weights are `d_w · w + m_w`, `w ∈ 0..16`)
//! * Q4_0: like Q4_1 with `m_w = −8 · d_w`
//! * Q5_0 and the K-quants: see `quant_matmul/kquants.rs` (a scale per 16 or 32 weights, an offset
//!   per 32, super-blocks of 256 for the K-quants).
//!
//! The block products run on AVX-512 VNNI or AVX2 when the CPU has them (checked at
//! run time) and on a portable scalar path otherwise; all compute the same integer
//! sums. Work is split over output features (few rows, e.g. decoding) or over rows
//! (prefill), and rows are processed in tiles of up to eight so that each weight
//! block is loaded and unpacked once per tile. On AVX2, Q5_0 and Q8_0 weights are
//! regrouped at load so that the eight lanes of a register are eight weight rows
//! and no sum needs a horizontal reduction (`quant_matmul/eight_rows.rs`); the
//! K-quants take eight blocks of 32 at a time, their eight integer sums per row
//! reduced together and scaled with one vector operation (`quant_matmul/kquants.rs`).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Storage, Tensor};

use crate::error::{EngineError, Result};

#[cfg(target_arch = "x86_64")]
mod avx512;
mod eight_rows;
mod kquants;
pub mod reference;
#[cfg(target_arch = "x86_64")]
use avx512::ActPair;
/// Placeholder off x86-64, where no kernel uses activation pairs.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy)]
struct ActPair;

/// Values per activation block, and per weight block of the 32-value formats.
const QK: usize = 32;

/// Most rows per tile: each weight block is unpacked once and used for this many rows.
const TILE: usize = 8;

/// Rows per chunk of work: a chunk sweeps its weight rows over this many rows. In a
/// model the weights come from memory rather than cache, and each row block reads
/// them again: 64 rows (a keystroke's prefill, half a prompt chunk) read them once
/// where blocks of 16 read them four times (prefill 1.3× faster, BENCHMARKS.md).
const ROW_BLOCK: usize = 64;

/// Target number of block products (weight block × row) per chunk of work.
const CHUNK_WORK: usize = 2048;

/// How long the posting thread waits for a helper's unfinished chunk before
/// computing it itself.
const STRAGGLER_WAIT: Duration = Duration::from_micros(20);

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Which implementation of the block products to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, any CPU.
    Scalar,
    /// AVX2 + FMA + F16C intrinsics (x86-64 only).
    Avx2,
    /// AVX-512 (F, BW) with VNNI, two blocks per register (x86-64 only); falls
    /// back to [`Kernel::Avx2`] for rows with an odd number of blocks.
    Avx512Vnni,
}

impl Kernel {
    /// The kernel products use: the fastest this CPU supports, unless the
    /// environment variable `SOUFFLEUR_CPU_KERNEL` (`scalar`, `avx2`, `avx512`)
    /// names another one it supports (for measurements and diagnosis).
    pub fn detect() -> Self {
        static CHOSEN: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let wanted = match std::env::var("SOUFFLEUR_CPU_KERNEL").as_deref() {
                Ok("scalar") => Some(Self::Scalar),
                Ok("avx2") => Some(Self::Avx2),
                Ok("avx512") => Some(Self::Avx512Vnni),
                _ => None,
            };
            wanted
                .filter(|k| k.is_available())
                .unwrap_or_else(Self::fastest)
        })
    }

    /// The fastest kernel this CPU supports.
    pub fn fastest() -> Self {
        [Self::Avx512Vnni, Self::Avx2]
            .into_iter()
            .find(|k| k.is_available())
            .unwrap_or(Self::Scalar)
    }

    /// Whether this kernel can run on the current CPU.
    pub fn is_available(self) -> bool {
        match self {
            Self::Scalar => true,
            Self::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                {
                    is_x86_feature_detected!("avx2")
                        && is_x86_feature_detected!("fma")
                        && is_x86_feature_detected!("f16c")
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
            Self::Avx512Vnni => {
                #[cfg(target_arch = "x86_64")]
                {
                    avx512::available()
                }
                #[cfg(not(target_arch = "x86_64"))]
                {
                    false
                }
            }
        }
    }
}

/// The weight block formats the kernel understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Q4_0,
    Q4_1,
    Q5_0,
    Q8_0,
    Q4K,
    Q5K,
    Q6K,
}

impl Format {
    fn of(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_0 => Some(Self::Q4_0),
            GgmlDType::Q4_1 => Some(Self::Q4_1),
            GgmlDType::Q5_0 => Some(Self::Q5_0),
            GgmlDType::Q8_0 => Some(Self::Q8_0),
            GgmlDType::Q4K => Some(Self::Q4K),
            GgmlDType::Q5K => Some(Self::Q5K),
            GgmlDType::Q6K => Some(Self::Q6K),
            _ => None,
        }
    }

    /// Weights per block (32, or 256 for a K-quant super-block).
    fn block_values(self) -> usize {
        match self {
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q8_0 => QK,
            Self::Q4K | Self::Q5K | Self::Q6K => kquants::QK_K,
        }
    }

    /// Bytes per block.
    fn block_bytes(self) -> usize {
        match self {
            Self::Q4_0 => 2 + QK / 2,
            Self::Q4_1 => 4 + QK / 2,
            Self::Q5_0 => kquants::Q5_0_BYTES,
            Self::Q8_0 => kquants::Q8_0_BYTES,
            Self::Q4K => kquants::Q4K_BYTES,
            Self::Q5K => kquants::Q5K_BYTES,
            Self::Q6K => kquants::Q6K_BYTES,
        }
    }

    /// Whether the products go through [`kquants`] (the common sub-block form).
    fn is_sub_form(self) -> bool {
        matches!(self, Self::Q5_0 | Self::Q4K | Self::Q5K | Self::Q6K)
    }

    /// Whether the AVX2 products of GGUF-layout weights go through the group
    /// products of [`kquants`] (Q5_0 goes through `eight_rows` instead, and so do
    /// regrouped Q8_0 weights).
    fn grouped_on_avx2(self) -> bool {
        matches!(self, Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8_0)
    }

    /// Bytes of one weight row of `in_features` weights.
    fn row_bytes(self, in_features: usize) -> usize {
        in_features / self.block_values() * self.block_bytes()
    }
}

/// Where a weight's bytes live.
#[derive(Clone)]
enum Bytes {
    /// A copy owned by the weight (shared between clones).
    Owned(Arc<[u8]>),
    /// The storage of a CPU `QTensor`, shared without copying.
    Shared(Arc<QTensor>),
    /// Q5_0 or Q8_0 blocks regrouped eight rows at a time for the AVX2 products
    /// (`eight_rows::repack`).
    Regrouped(Arc<[u8]>),
}

/// A quantised weight matrix `[out_features, in_features]` in its raw GGUF block
/// layout, multiplied on the CPU with integer dot products.
#[derive(Clone)]
pub struct QuantWeight {
    dtype: GgmlDType,
    format: Format,
    out_features: usize,
    in_features: usize,
    bytes: Bytes,
}

impl std::fmt::Debug for QuantWeight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuantWeight")
            .field("dtype", &self.dtype)
            .field("out_features", &self.out_features)
            .field("in_features", &self.in_features)
            .finish_non_exhaustive()
    }
}

fn compute_err(msg: String) -> EngineError {
    EngineError::Compute(candle_core::Error::Msg(msg))
}

impl QuantWeight {
    /// Whether weights of type `dtype` can use this kernel.
    pub fn supports(dtype: GgmlDType) -> bool {
        Format::of(dtype).is_some()
    }

    /// Wraps raw GGUF blocks of a `[out_features, in_features]` matrix.
    pub fn from_raw(
        dtype: GgmlDType,
        out_features: usize,
        in_features: usize,
        data: Vec<u8>,
    ) -> Result<Self> {
        let format = Self::check(dtype, out_features, in_features, data.len())?;
        let bytes = if Self::regroups(format) {
            Bytes::Regrouped(
                eight_rows::repack(format, &data, out_features, in_features / QK).into(),
            )
        } else {
            Bytes::Owned(data.into())
        };
        Ok(Self {
            dtype,
            format,
            out_features,
            in_features,
            bytes,
        })
    }

    /// A copy in the given layout: blocks regrouped for the AVX2 products or
    /// in the GGUF layout (tests compare the two bit for bit).
    #[cfg(test)]
    fn in_layout(&self, regrouped: bool) -> Self {
        let data = self.data().expect("data").into_owned();
        let bytes = if regrouped {
            assert!(eight_rows::regroupable(self.format));
            Bytes::Regrouped(
                eight_rows::repack(self.format, &data, self.out_features, self.in_features / QK)
                    .into(),
            )
        } else {
            Bytes::Owned(data.into())
        };
        Self {
            bytes,
            ..self.clone()
        }
    }

    /// Whether weights of `format` are regrouped at load: Q5_0 and Q8_0 where the
    /// products run on AVX2 (`eight_rows`).
    fn regroups(format: Format) -> bool {
        eight_rows::regroupable(format) && Kernel::detect() == Kernel::Avx2
    }

    /// Uses the blocks of a 2-D quantised tensor (shape `[out, in]`); CPU tensors
    /// are shared without copying, except that Q5_0 and Q8_0 blocks are regrouped for the
    /// AVX2 products when no one else holds the tensor.
    pub fn from_qtensor(qtensor: Arc<QTensor>) -> Result<Self> {
        let (out_features, in_features) = qtensor.shape().dims2()?;
        let dtype = qtensor.dtype();
        let len = qtensor.data()?.len();
        let format = Self::check(dtype, out_features, in_features, len)?;
        let bytes = if Self::regroups(format) && Arc::strong_count(&qtensor) == 1 {
            let data = qtensor.data()?;
            Bytes::Regrouped(
                eight_rows::repack(format, &data, out_features, in_features / QK).into(),
            )
        } else if qtensor.device().is_cpu() {
            Bytes::Shared(qtensor)
        } else {
            Bytes::Owned(qtensor.data()?.into())
        };
        Ok(Self {
            dtype,
            format,
            out_features,
            in_features,
            bytes,
        })
    }

    /// Bytes a `[out_features, in_features]` weight of `dtype` keeps resident once
    /// [`QuantWeight::from_qtensor`] has wrapped it: the GGUF blocks, or their
    /// regrouped copy where the loader regroups (`shared`: the tensor is also held
    /// elsewhere, e.g. a tied embedding, and so is never regrouped). `None` when this
    /// kernel does not take `dtype`.
    pub(crate) fn resident_bytes(
        dtype: GgmlDType,
        out_features: usize,
        in_features: usize,
        shared: bool,
    ) -> Option<u64> {
        let format = Format::of(dtype)?;
        if Self::regroups(format) && !shared && in_features.is_multiple_of(QK) {
            return Some(eight_rows::regrouped_len(format, out_features, in_features / QK) as u64);
        }
        Some((out_features * format.row_bytes(in_features)) as u64)
    }

    /// Bytes this weight holds in memory, and the tensor it shares them with (so
    /// a tied embedding is counted once).
    pub(crate) fn held_bytes(&self) -> (u64, Option<&Arc<QTensor>>) {
        match &self.bytes {
            Bytes::Owned(v) | Bytes::Regrouped(v) => (v.len() as u64, None),
            Bytes::Shared(q) => (q.storage_size_in_bytes() as u64, Some(q)),
        }
    }

    fn check(dtype: GgmlDType, out: usize, inp: usize, len: usize) -> Result<Format> {
        let format = Format::of(dtype)
            .ok_or_else(|| compute_err(format!("quantised matmul: unsupported type {dtype:?}")))?;
        let per_block = format.block_values();
        if !inp.is_multiple_of(per_block) {
            return Err(compute_err(format!(
                "quantised matmul: in_features {inp} is not a multiple of {per_block}"
            )));
        }
        let expected = out * format.row_bytes(inp);
        if len != expected {
            return Err(compute_err(format!(
                "quantised matmul: {dtype:?} [{out}, {inp}] needs {expected} bytes, got {len}"
            )));
        }
        Ok(format)
    }

    /// The GGUF block type of the weights.
    pub fn dtype(&self) -> GgmlDType {
        self.dtype
    }

    /// Number of outputs per row (rows of `W`).
    pub fn out_features(&self) -> usize {
        self.out_features
    }

    /// Number of inputs per row (columns of `W`).
    pub fn in_features(&self) -> usize {
        self.in_features
    }

    /// The raw GGUF block bytes.
    pub fn data(&self) -> Result<Cow<'_, [u8]>> {
        Ok(match &self.bytes {
            Bytes::Owned(v) => Cow::Borrowed(v),
            Bytes::Shared(q) => q.data()?,
            Bytes::Regrouped(v) => Cow::Owned(eight_rows::unpack_rows(
                self.format,
                v,
                self.in_features / QK,
                0..self.out_features,
            )),
        })
    }

    /// `x · Wᵀ` for `rows` rows of `x` (row-major `[rows, in_features]`), giving
    /// row-major `[rows, out_features]`, with the fastest kernel for this CPU.
    pub fn matmul(&self, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.matmul_with(Kernel::detect(), x, rows)
    }

    /// Like [`matmul`](Self::matmul) with a chosen kernel (which must be available).
    pub fn matmul_with(&self, kernel: Kernel, x: &[f32], rows: usize) -> Result<Vec<f32>> {
        if !kernel.is_available() {
            return Err(compute_err(format!(
                "quantised matmul: kernel {kernel:?} is not supported by this CPU"
            )));
        }
        if x.len() != rows * self.in_features {
            return Err(compute_err(format!(
                "quantised matmul: input has {} values, expected {rows} × {}",
                x.len(),
                self.in_features
            )));
        }
        let out = self.out_features;
        if rows == 0 || out == 0 {
            return Ok(vec![0f32; rows * out]);
        }
        let nb = self.in_features / QK;
        let kernel = if kernel == Kernel::Avx512Vnni && !nb.is_multiple_of(2) {
            Kernel::Avx2
        } else {
            kernel
        };
        let threads = rayon::current_num_threads().max(1);
        let parallel = threads > 1 && rows * out * self.in_features >= PARALLEL_MIN_WORK;
        let participants = if parallel { threads } else { 1 };
        let row_block = rows.min(ROW_BLOCK);
        // Chunks of about CHUNK_WORK block products, and a few per participant.
        let out_chunk = (CHUNK_WORK / (nb * row_block))
            .min(out.div_ceil(2 * participants))
            .max(16)
            .div_ceil(16)
            * 16;
        let out_chunks = out.div_ceil(out_chunk);
        let chunks = rows.div_ceil(row_block) * out_chunks;
        let acts = quantize_rows(kernel, x, rows, self.in_features);
        #[cfg(target_arch = "x86_64")]
        let pairs = if kernel == Kernel::Avx512Vnni {
            avx512::pair_rows(&acts, nb)
        } else {
            Vec::new()
        };
        #[cfg(not(target_arch = "x86_64"))]
        let pairs = Vec::new();
        let regrouped = matches!(self.bytes, Bytes::Regrouped(_));
        let scales = if kernel == Kernel::Avx2 && self.format.grouped_on_avx2() && !regrouped {
            kquants::group_scales(&acts, rows)
        } else {
            Vec::new()
        };
        let job = Arc::new(Job {
            kernel,
            format: self.format,
            weight: self.clone(),
            acts,
            pairs,
            scales,
            y: (0..rows * out).map(|_| AtomicU32::new(0)).collect(),
            rows,
            row_block,
            out_chunk,
            out_chunks,
            segments: (0..participants)
                .map(|p| Segment::new(p * chunks / participants, (p + 1) * chunks / participants))
                .collect(),
            joined: AtomicUsize::new(1),
            done: (0..chunks).map(|_| AtomicBool::new(false)).collect(),
            finished: AtomicUsize::new(0),
            failed: AtomicBool::new(false),
        });
        if participants > 1 {
            crew::post(&job, participants - 1);
        }
        job.work(0);
        job.finish();
        if participants > 1 {
            crew::retire(&job);
        }
        if job.failed.load(Ordering::Relaxed) {
            return Err(compute_err(
                "quantised matmul: weight data unavailable".into(),
            ));
        }
        Ok(job
            .y
            .iter()
            .map(|v| f32::from_bits(v.load(Ordering::Relaxed)))
            .collect())
    }

    /// Applies the product to an f32 tensor `[.., in_features]`, giving `[.., out_features]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims();
        let Some((&last, lead)) = dims.split_last() else {
            return Err(compute_err("quantised matmul: scalar input".into()));
        };
        if last != self.in_features {
            return Err(compute_err(format!(
                "quantised matmul: input {:?} does not end in {}",
                x.shape(),
                self.in_features
            )));
        }
        if !x.device().is_cpu() {
            return Err(compute_err(
                "quantised matmul: input is not on the CPU".into(),
            ));
        }
        let rows: usize = lead.iter().product();
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let y = {
            let (storage, layout) = x.storage_and_layout();
            let Storage::Cpu(cpu) = &*storage else {
                return Err(compute_err(
                    "quantised matmul: input is not on the CPU".into(),
                ));
            };
            let (start, end) = layout
                .contiguous_offsets()
                .ok_or_else(|| compute_err("quantised matmul: input not contiguous".into()))?;
            self.matmul(&cpu.as_slice::<f32>()?[start..end], rows)?
        };
        let mut out_dims = lead.to_vec();
        out_dims.push(self.out_features);
        Ok(Tensor::from_vec(y, out_dims, x.device())?)
    }
}

/// A contiguous range of chunk indices, taken from the front by its owner and
/// from the back by other participants once their own ranges are empty. Each
/// participant thus streams through neighbouring weight rows, which the
/// hardware prefetcher rewards.
struct Segment(AtomicU64);

impl Segment {
    fn new(front: usize, back: usize) -> Self {
        Self(AtomicU64::new(Self::pack(front, back)))
    }

    fn pack(front: usize, back: usize) -> u64 {
        ((front as u64) << 32) | back as u64
    }

    fn unpack(v: u64) -> (usize, usize) {
        ((v >> 32) as usize, (v & 0xffff_ffff) as usize)
    }

    /// Claims the first (`front`) or last remaining chunk.
    fn take(&self, front: bool) -> Option<usize> {
        let mut v = self.0.load(Ordering::Relaxed);
        loop {
            let (f, b) = Self::unpack(v);
            if f >= b {
                return None;
            }
            let (next, got) = if front {
                (Self::pack(f + 1, b), f)
            } else {
                (Self::pack(f, b - 1), b - 1)
            };
            match self
                .0
                .compare_exchange_weak(v, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return Some(got),
                Err(now) => v = now,
            }
        }
    }
}

/// One matrix product shared by the calling thread and its rayon helpers.
///
/// The work is cut into chunks `(row block, output range)`; participant `p`
/// owns segment `p` of the chunk indices and then helps with the others.
struct Job {
    kernel: Kernel,
    format: Format,
    weight: QuantWeight,
    acts: Vec<ActBlock>,
    /// The activations regrouped for [`Kernel::Avx512Vnni`] (else empty).
    pairs: Vec<ActPair>,
    /// The activations' scales for the AVX2 group products of Q5_0 and the
    /// K-quants (`kquants::group_scales`; else empty).
    scales: Vec<f32>,
    /// Row-major `[rows, out]` results as f32 bits. Chunks write disjoint
    /// entries; a chunk computed twice writes the same bits twice.
    y: Box<[AtomicU32]>,
    rows: usize,
    row_block: usize,
    out_chunk: usize,
    out_chunks: usize,
    /// One per participant (the posting thread is participant 0).
    segments: Box<[Segment]>,
    /// Participant number for the next helper to join.
    joined: AtomicUsize,
    /// Per chunk: its results are all in `y`.
    done: Box<[AtomicBool]>,
    /// Number of chunks finished (counting a recomputed chunk twice).
    finished: AtomicUsize,
    failed: AtomicBool,
}

impl Job {
    fn chunks(&self) -> usize {
        self.done.len()
    }

    /// Joins as the next helper.
    fn help(&self) {
        let p = self.joined.fetch_add(1, Ordering::Relaxed);
        self.work(p);
    }

    /// Works as participant `p`: its own segment from the front, then the
    /// others' from the back, until no chunk is left unclaimed.
    fn work(&self, p: usize) {
        let n = self.segments.len();
        if let Some(own) = self.segments.get(p) {
            while let Some(c) = own.take(true) {
                self.compute(c);
            }
        }
        for i in 1..=n {
            let other = &self.segments[(p + i) % n];
            while let Some(c) = other.take(false) {
                self.compute(c);
            }
        }
    }

    /// Computes chunk `c` (a row block × an output range) and marks it done.
    fn compute(&self, c: usize) {
        let nb = self.weight.in_features / QK;
        let r0 = (c / self.out_chunks) * self.row_block;
        let o0 = (c % self.out_chunks) * self.out_chunk;
        let outs = o0..(o0 + self.out_chunk).min(self.weight.out_features);
        let rows = r0..(r0 + self.row_block).min(self.rows);
        let data = match &self.weight.bytes {
            #[cfg(target_arch = "x86_64")]
            Bytes::Regrouped(v) if self.kernel == Kernel::Avx2 => {
                // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and F16C;
                // chunks start at multiples of 16 outputs and span at most
                // ROW_BLOCK rows.
                unsafe {
                    eight_rows::avx2::compute(
                        self.format,
                        eight_rows::avx2::Layout::Regrouped(v),
                        nb,
                        &self.acts,
                        outs.clone(),
                        rows.clone(),
                        self.weight.out_features,
                        &self.y,
                    )
                };
                Ok(None)
            }
            // Other kernels (measurements, references) read this chunk's rows
            // back in the GGUF layout.
            Bytes::Regrouped(v) => Ok(Some((
                Cow::Owned(eight_rows::unpack_rows(self.format, v, nb, outs.clone())),
                outs.start,
            ))),
            _ => self.weight.data().map(|d| Some((d, 0))),
        };
        match data {
            Ok(None) => {}
            Ok(Some((data, first))) => {
                let w = Weights {
                    kernel: self.kernel,
                    format: self.format,
                    data: &data,
                    first,
                    row_bytes: self.format.row_bytes(self.weight.in_features),
                    nb,
                    out: self.weight.out_features,
                };
                if self.kernel == Kernel::Avx512Vnni {
                    w.compute_pairs(&self.pairs, outs, rows, &self.y);
                } else {
                    w.compute(&self.acts, &self.scales, outs, rows, &self.y);
                }
            }
            Err(_) => self.failed.store(true, Ordering::Relaxed),
        }
        // Publishes the chunk's results to whoever sees the flag.
        self.done[c].store(true, Ordering::Release);
        self.finished.fetch_add(1, Ordering::Release);
    }

    /// After [`work`](Self::work) on the posting thread: makes sure every chunk
    /// is done. A chunk a helper still holds is waited for briefly, then
    /// computed again here, so a helper descheduled mid-chunk costs at most
    /// one chunk of extra work instead of a stall.
    fn finish(&self) {
        if self.finished.load(Ordering::Acquire) >= self.chunks() {
            return;
        }
        let deadline = Instant::now() + STRAGGLER_WAIT;
        for (c, done) in self.done.iter().enumerate() {
            let mut spins = 0u32;
            while !done.load(Ordering::Acquire) {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(64) && Instant::now() > deadline {
                    self.compute(c);
                    break;
                }
                std::hint::spin_loop();
            }
        }
    }
}

/// Helpers on the rayon pool that pick up posted [`Job`]s.
///
/// Waking a sleeping thread can take hundreds of microseconds on a virtual
/// machine, longer than a whole decode-step product. So a helper that finishes
/// a job lingers for [`LINGER`](crew::LINGER), spinning (and running other
/// pending rayon work) while it waits for the next job, then returns its thread
/// to the pool. During generation products follow each other within
/// microseconds, so the helpers stay awake; when the engine idles they leave.
mod crew {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex, MutexGuard};
    use std::time::{Duration, Instant};

    use super::Job;

    /// How long an idle helper waits for the next job before leaving.
    pub(super) const LINGER: Duration = Duration::from_millis(2);
    /// How long an idle helper spins before it also yields its core.
    const SPIN: Duration = Duration::from_micros(100);

    /// The most recently posted job.
    static CURRENT: Mutex<Option<Arc<Job>>> = Mutex::new(None);
    /// Bumped after each post.
    static POSTED: AtomicU64 = AtomicU64::new(0);
    /// Helpers started and not yet gone.
    static ALIVE: AtomicUsize = AtomicUsize::new(0);

    fn current() -> MutexGuard<'static, Option<Arc<Job>>> {
        // A panic while holding the lock cannot leave the slot inconsistent.
        CURRENT.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers `job` to up to `helpers` helpers, starting new ones as needed.
    pub(super) fn post(job: &Arc<Job>, helpers: usize) {
        if helpers == 0 {
            return;
        }
        *current() = Some(Arc::clone(job));
        POSTED.fetch_add(1, Ordering::AcqRel);
        let mut alive = ALIVE.load(Ordering::Acquire);
        while alive < helpers {
            match ALIVE.compare_exchange(alive, alive + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    rayon::spawn(help);
                    alive += 1;
                }
                Err(now) => alive = now,
            }
        }
    }

    /// Drops the board's reference to a finished job.
    pub(super) fn retire(job: &Arc<Job>) {
        let mut slot = current();
        if slot.as_ref().is_some_and(|j| Arc::ptr_eq(j, job)) {
            *slot = None;
        }
    }

    /// A helper: works on the current job, then waits a while for the next.
    fn help() {
        let mut seen = POSTED.load(Ordering::Acquire);
        loop {
            let job = current().clone();
            if let Some(job) = job {
                job.help();
            }
            let start = Instant::now();
            let mut spins = 0u32;
            loop {
                let now = POSTED.load(Ordering::Acquire);
                if now != seen {
                    seen = now;
                    break;
                }
                spins = spins.wrapping_add(1);
                if !spins.is_multiple_of(64) {
                    std::hint::spin_loop();
                    continue;
                }
                // Let other rayon work (e.g. candle's) run on this thread.
                if matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                    continue;
                }
                let idle = start.elapsed();
                if idle > LINGER {
                    // Jobs posted from now on start a new helper.
                    ALIVE.fetch_sub(1, Ordering::AcqRel);
                    return;
                }
                if idle > SPIN {
                    // Give the core to other runnable threads, if any.
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// One block of 32 quantised activations: `x ≈ d · q`, `s = d · Σq`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
struct ActBlock {
    d: f32,
    s: f32,
    qs: [i8; QK],
}

/// Quantises `rows` rows of `x` (each `cols` long, a multiple of 32) to blocks.
fn quantize_rows(kernel: Kernel, x: &[f32], rows: usize, cols: usize) -> Vec<ActBlock> {
    let mut out = vec![ActBlock::default(); rows * cols / QK];
    for (src, dst) in x.as_chunks::<QK>().0.iter().zip(out.iter_mut()) {
        match kernel {
            Kernel::Scalar => quantize_block_scalar(src, dst),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `matmul_with` only runs `Kernel::Avx2` or `Kernel::Avx512Vnni`
            // after checking that the CPU has them (both include AVX2, FMA and F16C).
            Kernel::Avx2 | Kernel::Avx512Vnni => unsafe { avx2::quantize_block(src, dst) },
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx2 | Kernel::Avx512Vnni => quantize_block_scalar(src, dst),
        }
    }
    out
}

/// Scale for a block whose largest magnitude is `amax`, and its inverse.
#[inline]
fn block_scale(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    (d, id)
}

fn quantize_block_scalar(x: &[f32; QK], out: &mut ActBlock) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (d, id) = block_scale(amax);
    let mut sum = 0i32;
    for (q, &v) in out.qs.iter_mut().zip(x) {
        // Saturating cast; |v · id| ≤ 127 up to rounding.
        *q = (v * id).round_ties_even() as i8;
        sum += *q as i32;
    }
    out.d = d;
    out.s = d * sum as f32;
}

/// Converts an IEEE half (as bits) to f32.
fn f16_to_f32(h: u16) -> f32 {
    let sign = (u32::from(h) & 0x8000) << 16;
    let exp = u32::from(h >> 10) & 0x1f;
    let man = u32::from(h) & 0x3ff;
    let bits = match exp {
        0 => {
            // Zero or subnormal: man · 2⁻²⁴, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        31 => sign | 0x7f80_0000 | (man << 13),
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

#[inline]
fn read_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// A weight matrix viewed as rows of blocks, plus the kernel to use.
struct Weights<'a> {
    kernel: Kernel,
    format: Format,
    /// Rows `first..` of the matrix in the GGUF layout.
    data: &'a [u8],
    first: usize,
    row_bytes: usize,
    nb: usize,
    /// Output features: the stride of a row of results.
    out: usize,
}

impl Weights<'_> {
    /// Computes outputs `o ∈ outs` for rows `r ∈ rows` into `y[r · out + o]`;
    /// `scales` is the job's `scales` (empty unless the AVX2 group products use it).
    fn compute(
        &self,
        acts: &[ActBlock],
        scales: &[f32],
        outs: Range<usize>,
        rows: Range<usize>,
        y: &[AtomicU32],
    ) {
        let nb = self.nb;
        #[cfg(target_arch = "x86_64")]
        if self.kernel == Kernel::Avx2 && self.format == Format::Q5_0 {
            // SAFETY: `matmul_with` checked that the CPU has AVX2, FMA and F16C;
            // chunks start at multiples of 16 outputs and span at most ROW_BLOCK
            // rows; `data` holds every row (regrouped weights, whose chunks hold
            // only their own rows, take this kernel in `Job::compute`).
            assert_eq!(self.first, 0);
            unsafe {
                eight_rows::avx2::compute(
                    Format::Q5_0,
                    eight_rows::avx2::Layout::Gguf(self.data),
                    nb,
                    acts,
                    outs,
                    rows,
                    self.out,
                    y,
                )
            };
            return;
        }
        let per_row = 2 * nb.next_multiple_of(kquants::GROUP);
        let row = |r: usize| &acts[r * nb..(r + 1) * nb];
        let srow = |r: usize| scales.get(r * per_row..(r + 1) * per_row).unwrap_or(&[]);
        self.sweep(
            outs,
            rows,
            y,
            |w, r| self.tile(w, r.map(row), r.map(srow)),
            |w, r| self.tile(w, r.map(row), r.map(srow)),
            |w, r| self.tile(w, r.map(row), r.map(srow)),
            |w, r| self.tile(w, r.map(row), r.map(srow)),
            |w, r| self.tile(w, r.map(row), r.map(srow)),
        );
    }

    /// Like [`compute`](Self::compute) for [`Kernel::Avx512Vnni`], on activation
    /// pairs.
    fn compute_pairs(
        &self,
        pairs: &[ActPair],
        outs: Range<usize>,
        rows: Range<usize>,
        y: &[AtomicU32],
    ) {
        let per_row = self.nb / 2;
        let row = |r: usize| &pairs[r * per_row..(r + 1) * per_row];
        self.sweep(
            outs,
            rows,
            y,
            |w, r| self.tile_pairs(w, r.map(row)),
            |w, r| self.tile_pairs(w, r.map(row)),
            |w, r| self.tile_pairs(w, r.map(row)),
            |w, r| self.tile_pairs(w, r.map(row)),
            |w, r| self.tile_pairs(w, r.map(row)),
        );
    }

    /// Sweeps weight rows `outs` over activation rows `rows` in tiles of at most
    /// [`TILE`] rows, so each weight row is unpacked once per tile; the `tileN`
    /// functions compute N rows (given by index) at once.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    fn sweep(
        &self,
        outs: Range<usize>,
        rows: Range<usize>,
        y: &[AtomicU32],
        tile1: impl Fn(&[u8], [usize; 1]) -> [f32; 1],
        tile2: impl Fn(&[u8], [usize; 2]) -> [f32; 2],
        tile3: impl Fn(&[u8], [usize; 3]) -> [f32; 3],
        tile4: impl Fn(&[u8], [usize; 4]) -> [f32; 4],
        tile8: impl Fn(&[u8], [usize; 8]) -> [f32; 8],
    ) {
        let stride = self.out;
        let put = |r: usize, o: usize, vals: &[f32]| {
            for (i, v) in vals.iter().enumerate() {
                y[(r + i) * stride + o].store(v.to_bits(), Ordering::Relaxed);
            }
        };
        for o in outs {
            let at = (o - self.first) * self.row_bytes;
            let w = &self.data[at..at + self.row_bytes];
            let mut r = rows.start;
            while r < rows.end {
                let n = match (rows.end - r).min(TILE) {
                    8 => {
                        put(r, o, &tile8(w, std::array::from_fn(|i| r + i)));
                        8
                    }
                    4..=7 => {
                        put(r, o, &tile4(w, std::array::from_fn(|i| r + i)));
                        4
                    }
                    3 => {
                        put(r, o, &tile3(w, std::array::from_fn(|i| r + i)));
                        3
                    }
                    2 => {
                        put(r, o, &tile2(w, std::array::from_fn(|i| r + i)));
                        2
                    }
                    _ => {
                        put(r, o, &tile1(w, [r]));
                        1
                    }
                };
                r += n;
            }
        }
    }

    #[inline]
    fn tile_pairs<const R: usize>(&self, w: &[u8], a: [&[ActPair]; R]) -> [f32; R] {
        assert!(w.len() == self.row_bytes && self.nb.is_multiple_of(2));
        assert!(a.iter().all(|r| r.len() == self.nb / 2));
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `matmul_with` chose this kernel only after `avx512::available()`
        // and for an even number of blocks; the asserts give the lengths it needs.
        unsafe {
            if self.format.is_sub_form() && self.format != Format::Q5_0 {
                avx512::tile_k(self.format, w, a)
            } else {
                avx512::tile(self.format, w, a)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (w, a);
            unreachable!("no AVX-512 kernel off x86-64")
        }
    }

    /// Dot products of one weight row with `R` activation rows; `s` holds the
    /// rows' slices of the job's `scales` (see [`compute`](Self::compute)).
    #[inline]
    fn tile<const R: usize>(&self, w: &[u8], a: [&[ActBlock]; R], s: [&[f32]; R]) -> [f32; R] {
        assert!(w.len() == self.row_bytes);
        assert!(a.iter().all(|r| r.len() == self.nb));
        match self.kernel {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the kernel was checked to be available (AVX2, FMA, F16C) in
            // `matmul_with`; the asserts above give whole blocks and one activation
            // block per 32 weights, and the group products assert the scales.
            Kernel::Avx2 => unsafe {
                match self.format {
                    Format::Q4_0 => avx2::tile_q4::<R, false>(w, a),
                    Format::Q4_1 => avx2::tile_q4::<R, true>(w, a),
                    Format::Q5_0 | Format::Q8_0 | Format::Q4K | Format::Q5K | Format::Q6K => {
                        kquants::avx2::tile(self.format, w, a, s)
                    }
                }
            },
            // The portable path; AVX-512 products go through `tile_pairs`, so this
            // serves `Kernel::Avx512Vnni` only as a reference.
            _ if self.format.is_sub_form() => kquants::tile_scalar(self.format, w, a),
            _ => scalar::tile(self.format, w, a),
        }
    }
}

mod scalar {
    use super::{ActBlock, Format, QK, read_f16};

    /// Σ over 32 values of (4-bit weight) · (8-bit activation), unsigned nibbles.
    #[inline]
    fn dot_q4(qs: &[u8], a: &[i8; QK]) -> i32 {
        let mut sum = 0i32;
        for j in 0..QK / 2 {
            sum += i32::from(qs[j] & 0x0f) * i32::from(a[j]);
            sum += i32::from(qs[j] >> 4) * i32::from(a[j + QK / 2]);
        }
        sum
    }

    pub(super) fn tile<const R: usize>(fmt: Format, w: &[u8], a: [&[ActBlock]; R]) -> [f32; R] {
        let bb = fmt.block_bytes();
        let mut acc = [0f32; R];
        for (b, blk) in w.chunks_exact(bb).enumerate() {
            let d = read_f16(blk, 0);
            for (acc, row) in acc.iter_mut().zip(a.iter()) {
                let x = &row[b];
                *acc += match fmt {
                    Format::Q4_0 => d * x.d * dot_q4(&blk[2..], &x.qs) as f32 - 8.0 * d * x.s,
                    Format::Q4_1 => {
                        let m = read_f16(blk, 2);
                        d * x.d * dot_q4(&blk[4..], &x.qs) as f32 + m * x.s
                    }
                    Format::Q8_0 => {
                        let sum: i32 = blk[2..]
                            .iter()
                            .zip(&x.qs)
                            .map(|(&w, &q)| i32::from(w as i8) * i32::from(q))
                            .sum();
                        d * x.d * sum as f32
                    }
                    Format::Q5_0 | Format::Q4K | Format::Q5K | Format::Q6K => {
                        unreachable!("sub-form formats use kquants::tile_scalar")
                    }
                };
            }
        }
        acc
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{ActBlock, QK, block_scale};

    /// Horizontal sum of eight lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Quantises one block of 32 activations; identical results to
    /// `quantize_block_scalar` (same scale, round-half-even, saturation).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) fn quantize_block(x: &[f32; QK], out: &mut ActBlock) {
        // SAFETY: `x` is exactly 32 f32, read as four unaligned 8-lane loads;
        // `out.qs` is exactly 32 bytes, written by one unaligned 32-byte store.
        unsafe {
            let p = x.as_ptr();
            let v = [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ];
            let sign = _mm256_set1_ps(-0.0);
            let mut m = _mm256_andnot_ps(sign, v[0]);
            for x in &v[1..] {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *x));
            }
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_movehdup_ps(m));
            let (d, id) = block_scale(_mm_cvtss_f32(m));
            let idv = _mm256_set1_ps(id);
            const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
            let i0 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v[0], idv)));
            let i1 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v[1], idv)));
            let i2 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v[2], idv)));
            let i3 = _mm256_cvtps_epi32(_mm256_round_ps::<RN>(_mm256_mul_ps(v[3], idv)));
            // Sum of the quantised values (before packing, which could only
            // saturate values the scalar cast saturates the same way).
            let s = _mm256_add_epi32(_mm256_add_epi32(i0, i1), _mm256_add_epi32(i2, i3));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
            let sum = _mm_cvtsi128_si32(s);
            // Pack to i8; packs work per 128-bit lane, so fix the order after.
            let p01 = _mm256_packs_epi32(i0, i1);
            let p23 = _mm256_packs_epi32(i2, i3);
            let p = _mm256_packs_epi16(p01, p23);
            let p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(out.qs.as_mut_ptr().cast(), p);
            out.d = d;
            out.s = d * sum as f32;
        }
    }

    /// Dot products of one Q4_0 (`HAS_MIN = false`) or Q4_1 (`true`) weight row
    /// with `R` activation rows.
    ///
    /// # Safety
    /// The CPU must support AVX2, FMA and F16C; `w` must hold `nb` blocks
    /// (`nb · (18 or 20)` bytes) and every `a[i]` `nb` blocks.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn tile_q4<const R: usize, const HAS_MIN: bool>(
        w: &[u8],
        a: [&[ActBlock]; R],
    ) -> [f32; R] {
        let bb = if HAS_MIN { 20 } else { 18 };
        let nb = w.len() / bb;
        let mask = _mm256_set1_epi8(0x0f);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); R];
        let mut macc = [0f32; R];
        let wp = w.as_ptr();
        for b in 0..nb {
            // SAFETY: block `b < nb` lies within `w` (caller's contract), and
            // its scale(s) and 16 nibble bytes are read with unaligned loads.
            let (dw, m, q) = unsafe {
                let blk = wp.add(b * bb);
                let (dm, qs) = if HAS_MIN {
                    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(blk.cast::<i32>().read_unaligned()));
                    (dm, blk.add(4))
                } else {
                    let d = i32::from(blk.cast::<u16>().read_unaligned());
                    (_mm_cvtph_ps(_mm_cvtsi32_si128(d)), blk.add(2))
                };
                let raw = _mm_loadu_si128(qs.cast());
                let q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16::<4>(raw), raw), mask);
                let dw = _mm_cvtss_f32(dm);
                let m = if HAS_MIN {
                    _mm_cvtss_f32(_mm_movehdup_ps(dm))
                } else {
                    -8.0 * dw
                };
                (_mm256_set1_ps(dw), m, q)
            };
            for i in 0..R {
                // SAFETY: `a[i]` holds `nb` blocks (caller's contract).
                let x = unsafe { a[i].get_unchecked(b) };
                // SAFETY: `x.qs` is 32 bytes.
                let xq = unsafe { _mm256_loadu_si256(x.qs.as_ptr().cast()) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(q, xq), ones);
                let scale = _mm256_mul_ps(dw, _mm256_set1_ps(x.d));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), scale, acc[i]);
                macc[i] += m * x.s;
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
    use candle_core::{Device, Tensor};

    /// Deterministic pseudo-random values in [-1, 1).
    fn noise(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn kernels() -> Vec<Kernel> {
        let mut k = vec![Kernel::Scalar];
        if Kernel::Avx2.is_available() {
            k.push(Kernel::Avx2);
        }
        if Kernel::Avx512Vnni.is_available() {
            k.push(Kernel::Avx512Vnni);
        }
        k
    }

    /// Quantises a random `[out, inp]` matrix and returns it with its dequantised f32 values.
    fn weight(dtype: GgmlDType, out: usize, inp: usize, seed: u64) -> (QuantWeight, Vec<f32>) {
        // Give rows different magnitudes and an offset so Q4_1's minimum matters.
        let mut w = noise(out * inp, seed);
        for (i, v) in w.iter_mut().enumerate() {
            let row = i / inp;
            *v = *v * (0.5 + (row % 7) as f32 * 0.25) + 0.1;
        }
        let t = Tensor::from_vec(w, (out, inp), &Device::Cpu).expect("tensor");
        let q = QTensor::quantize(&t, dtype).expect("quantize");
        let deq = q
            .dequantize(&Device::Cpu)
            .expect("dequantize")
            .flatten_all()
            .expect("flatten")
            .to_vec1::<f32>()
            .expect("vec");
        let qw = QuantWeight::from_qtensor(Arc::new(q)).expect("weight");
        (qw, deq)
    }

    fn reference(w: &[f32], x: &[f32], rows: usize, out: usize, inp: usize) -> Vec<f32> {
        let mut y = vec![0f32; rows * out];
        for r in 0..rows {
            for o in 0..out {
                let mut s = 0f64;
                for k in 0..inp {
                    s += f64::from(x[r * inp + k]) * f64::from(w[o * inp + k]);
                }
                y[r * out + o] = s as f32;
            }
        }
        y
    }

    /// ‖a − b‖ / ‖b‖.
    fn rel_err(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        let num: f64 = a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum();
        let den: f64 = b.iter().map(|y| f64::from(*y).powi(2)).sum();
        (num / den).sqrt() as f32
    }

    fn check(dtype: GgmlDType, rows: usize, out: usize, inp: usize) {
        let (qw, deq) = weight(dtype, out, inp, (rows * 1000 + out + inp) as u64);
        let x = noise(rows * inp, 77 + rows as u64);
        let want = reference(&deq, &x, rows, out, inp);
        let mut results = Vec::new();
        for k in kernels() {
            let got = qw.matmul_with(k, &x, rows).expect("matmul");
            let err = rel_err(&got, &want);
            assert!(
                err < 1e-2,
                "{dtype:?} {k:?} rows={rows} out={out} in={inp}: relative error {err}"
            );
            // Every output, not just the norm, must be close.
            let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() < 0.03 * scale,
                    "{dtype:?} {k:?} rows={rows} out={out} in={inp}: y[{i}] = {g}, want {w}"
                );
            }
            results.push(got);
        }
        for (k, r) in kernels().iter().zip(&results).skip(1) {
            let err = rel_err(r, &results[0]);
            assert!(err < 1e-5, "scalar and {k:?} differ: {err}");
        }
    }

    #[test]
    fn regrouped_q5_0_gives_the_same_bits_as_the_gguf_layout() {
        for &(out, inp) in &SHAPES {
            let (qw, _) = weight(GgmlDType::Q5_0, out, inp, 21);
            let (gguf, regrouped) = (qw.in_layout(false), qw.in_layout(true));
            for rows in [1, 3, 9, 20] {
                let x = noise(rows * inp, 22);
                for k in kernels() {
                    assert_eq!(
                        gguf.matmul_with(k, &x, rows).expect("gguf"),
                        regrouped.matmul_with(k, &x, rows).expect("regrouped"),
                        "{k:?} rows={rows} out={out} in={inp}"
                    );
                }
            }
        }
    }

    /// The regrouped layout on every kernel, whatever kernel this CPU would
    /// choose (on AVX-512 machines weights are not regrouped by default).
    #[test]
    fn regrouped_weights_match_dequantized_matmul_and_stay_batch_invariant() {
        for dtype in [
            GgmlDType::Q5_0,
            GgmlDType::Q8_0,
            GgmlDType::Q4K,
            GgmlDType::Q6K,
        ] {
            for &(out, inp) in shapes(dtype) {
                let (qw, deq) = weight(dtype, out, inp, 31);
                let qw = qw.in_layout(true);
                // 70 rows: a block of 64 and one of 6; 7 and 6: groups of four
                // activation rows and the remainders of three and two.
                for rows in [70, 7, 6] {
                    let x = noise(rows * inp, 32);
                    let want = reference(&deq, &x, rows, out, inp);
                    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for k in kernels() {
                        let got = qw.matmul_with(k, &x, rows).expect("matmul");
                        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() < 0.03 * scale,
                                "{dtype:?} {k:?} out={out} in={inp}: y[{i}] = {g}, want {w}"
                            );
                        }
                        let label = format!("{dtype:?} {k:?} {rows} rows");
                        let picked = [0, rows / 2, rows - 2, rows - 1];
                        assert_rows_alone_equal(&qw, k, &x, &got, picked, &label);
                    }
                }
            }
        }
    }

    /// Asserts that each row `r` of `rows`, computed alone, has the bits it has in
    /// `batch` (the product of all rows of `x`).
    fn assert_rows_alone_equal(
        qw: &QuantWeight,
        k: Kernel,
        x: &[f32],
        batch: &[f32],
        rows: impl IntoIterator<Item = usize>,
        label: &str,
    ) {
        let (inp, out) = (qw.in_features, qw.out_features);
        for r in rows {
            let alone = qw
                .matmul_with(k, &x[r * inp..(r + 1) * inp], 1)
                .expect("alone");
            assert_eq!(alone[..], batch[r * out..(r + 1) * out], "{label}, row {r}");
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_whatever_rows_come_with_it() {
        // Speculative verification relies on it: a row computed in a batch of 9
        // must equal the same row computed alone.
        for dtype in ALL_TYPES {
            for &(out, inp) in shapes(dtype) {
                let (qw, _) = weight(dtype, out, inp, 5);
                let rows = 9;
                let x = noise(rows * inp, 6);
                for k in kernels() {
                    let batch = qw.matmul_with(k, &x, rows).expect("batch");
                    assert_rows_alone_equal(
                        &qw,
                        k,
                        &x,
                        &batch,
                        0..rows,
                        &format!("{dtype:?} {k:?}"),
                    );
                }
            }
        }
    }

    /// Shapes for the 32-value formats; (13, 1088) has a partial group of eight
    /// rows and more blocks per row than one segment of the eight-row products.
    const SHAPES: [(usize, usize); 5] = [(64, 96), (96, 64), (160, 576), (608, 320), (13, 1088)];

    /// Shapes for the K-quants, whose rows are super-blocks of 256.
    const K_SHAPES: [(usize, usize); 3] = [(64, 256), (96, 512), (40, 1280)];

    const ALL_TYPES: [GgmlDType; 7] = [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q8_0,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
    ];

    fn shapes(dtype: GgmlDType) -> &'static [(usize, usize)] {
        match Format::of(dtype).expect("supported").block_values() {
            QK => &SHAPES,
            _ => &K_SHAPES,
        }
    }

    #[test]
    fn q5_0_and_k_quants_match_dequantized_matmul() {
        for dtype in [
            GgmlDType::Q5_0,
            GgmlDType::Q4K,
            GgmlDType::Q5K,
            GgmlDType::Q6K,
        ] {
            for rows in [1, 3, 9] {
                for &(out, inp) in shapes(dtype) {
                    check(dtype, rows, out, inp);
                }
            }
        }
    }

    /// With activations that quantise without loss (integers in −127..=127 with a
    /// ±127 in every block, so `d = 1`), the kernels compute the dequantised product
    /// up to float rounding: this checks the weight unpacking bit for bit.
    #[test]
    fn exact_activations_give_the_dequantized_product() {
        for dtype in ALL_TYPES {
            for &(out, inp) in shapes(dtype) {
                let rows = 5;
                let (qw, deq) = weight(dtype, out, inp, 11);
                let mut x: Vec<f32> = noise(rows * inp, 12)
                    .iter()
                    .map(|v| (v * 127.0).round())
                    .collect();
                for (b, blk) in x.chunks_exact_mut(QK).enumerate() {
                    blk[b % QK] = if b % 2 == 0 { 127.0 } else { -127.0 };
                }
                let want = reference(&deq, &x, rows, out, inp);
                let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
                for k in kernels() {
                    let got = qw.matmul_with(k, &x, rows).expect("matmul");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 2e-5 * scale,
                            "{dtype:?} {k:?} [{out}, {inp}]: y[{i}] = {g}, want {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn q4_1_matches_dequantized_matmul() {
        for rows in [1, 3, 17] {
            for (out, inp) in SHAPES {
                check(GgmlDType::Q4_1, rows, out, inp);
            }
        }
    }

    #[test]
    fn q8_0_matches_dequantized_matmul() {
        for rows in [1, 3, 17] {
            for (out, inp) in SHAPES {
                check(GgmlDType::Q8_0, rows, out, inp);
            }
        }
    }

    #[test]
    fn q4_0_matches_dequantized_matmul() {
        for rows in [1, 3, 17] {
            for (out, inp) in SHAPES {
                check(GgmlDType::Q4_0, rows, out, inp);
            }
        }
    }

    #[test]
    fn large_batches_split_over_rows() {
        // Enough rows and work for the row-parallel path with uneven tails.
        check(GgmlDType::Q4_1, 75, 200, 256);
        check(GgmlDType::Q8_0, 130, 96, 128);
    }

    #[test]
    fn activation_quantization_agrees_between_kernels() {
        let x = noise(32 * 64, 5);
        let scalar = quantize_rows(Kernel::Scalar, &x, 64, 32);
        for k in kernels() {
            let got = quantize_rows(k, &x, 64, 32);
            for (g, s) in got.iter().zip(&scalar) {
                assert_eq!(g.qs, s.qs);
                assert_eq!(g.d.to_bits(), s.d.to_bits());
                assert_eq!(g.s.to_bits(), s.s.to_bits());
            }
        }
        // Round trip stays within half a step.
        for (blk, xs) in scalar.iter().zip(x.chunks_exact(QK)) {
            for (q, v) in blk.qs.iter().zip(xs) {
                assert!((f32::from(*q) * blk.d - v).abs() <= blk.d * 0.5 + 1e-7);
            }
        }
    }

    #[test]
    fn zero_rows_and_zero_blocks() {
        let (qw, _) = weight(GgmlDType::Q4_1, 32, 64, 1);
        let y = qw.matmul(&[0.0; 128], 2).expect("matmul");
        assert!(y.iter().all(|v| *v == 0.0));
        assert!(qw.matmul(&[], 0).expect("matmul").is_empty());
    }

    #[test]
    fn f16_conversion() {
        for (bits, want) in [
            (0x3c00u16, 1.0f32),
            (0xc000, -2.0),
            (0x0001, 5.960_464_5e-8),
            (0x7bff, 65504.0),
            (0x0000, 0.0),
        ] {
            assert_eq!(f16_to_f32(bits), want);
        }
        assert!(f16_to_f32(0x7c00).is_infinite());
    }

    #[test]
    fn forward_keeps_leading_dims() {
        let (qw, deq) = weight(GgmlDType::Q8_0, 48, 64, 9);
        let x = noise(2 * 3 * 64, 3);
        let t = Tensor::from_vec(x.clone(), (2, 3, 64), &Device::Cpu).expect("tensor");
        let y = qw.forward(&t).expect("forward");
        assert_eq!(y.dims(), &[2, 3, 48]);
        let got = y
            .flatten_all()
            .expect("flat")
            .to_vec1::<f32>()
            .expect("vec");
        assert!(rel_err(&got, &reference(&deq, &x, 6, 48, 64)) < 1e-2);
    }

    #[test]
    fn rejects_bad_shapes() {
        let (qw, _) = weight(GgmlDType::Q4_1, 32, 64, 2);
        assert!(qw.matmul(&[0.0; 65], 1).is_err());
        assert!(QuantWeight::from_raw(GgmlDType::Q4_1, 2, 32, vec![0; 39]).is_err());
        assert!(QuantWeight::from_raw(GgmlDType::F32, 2, 32, vec![0; 256]).is_err());
        assert!(QuantWeight::from_raw(GgmlDType::Q8_0, 2, 32, vec![0; 68]).is_ok());
        // K-quant rows are whole super-blocks of 256 weights.
        assert!(QuantWeight::from_raw(GgmlDType::Q4K, 2, 128, vec![0; 144]).is_err());
        assert!(QuantWeight::from_raw(GgmlDType::Q6K, 2, 256, vec![0; 420]).is_ok());
    }
}

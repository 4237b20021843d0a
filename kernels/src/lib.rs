//! Souffleur's CUDA kernels for the hot paths of decoding, where candle's generic
//! operations leave speed behind:
//!
//! * products of GGUF-quantised weights (Q4_K, Q5_0, Q6_K, Q8_0) with one to eight
//!   activation rows (batch-1 decode, speculative verification), on 8-bit activation
//!   blocks with integer dot products, as the engine's CPU kernels compute them;
//! * decode attention of a few query rows against the KV cache (online softmax);
//! * RMSNorm, and RoPE of the new queries and keys fused with their optional per-head
//!   RMSNorm and the write of keys and values into the cache;
//! * a copy kernel, the yardstick of memory bandwidth.
//!
//! The CUDA C sources in `cuda/` compile twice: with nvcc to PTX for sm_80 and sm_90
//! (the `cuda` feature, loaded through cudarc: module `cuda`), and with the host compiler
//! for a grid emulator that runs a launch's blocks and threads on the CPU
//! ([`emulated`]). Both take the launch geometry from [`shape`], so tests on any
//! machine run the very code and geometry a GPU runs.

pub mod emulated;
pub mod format;
pub mod host;
pub mod shape;

#[cfg(feature = "cuda")]
pub mod cuda;
/// The CUDA driver bindings the kernels are launched through (the same version candle uses).
#[cfg(feature = "cuda")]
pub use cudarc;

pub use format::Format;
pub use host::{Emulator, HostKernels};
pub use shape::{AttentionShape, GemvShape, Launch, RopeInputs, RopeShape};

/// Why a kernel could not run.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Buffers or sizes that do not fit the kernel.
    #[error("kernel shape: {0}")]
    Shape(String),
    /// The grid emulator found a broken barrier rule (a bug in a kernel).
    #[error("grid emulator: {0}")]
    Emulator(String),
    /// The CUDA driver refused a call.
    #[cfg(feature = "cuda")]
    #[error("CUDA: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
}

/// Result of a kernel call.
pub type Result<T> = std::result::Result<T, KernelError>;

/// Rows of 8-bit activation blocks: what the quantised products multiply.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActs {
    /// The 8-bit values, 32 per block, row after row.
    pub q: Vec<i8>,
    /// Each block's scale `d = max |x| / 127`.
    pub d: Vec<f32>,
    /// Each block's scaled sum `d · Σ q`.
    pub s: Vec<f32>,
}

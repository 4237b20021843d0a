//! Sizes of each kernel call, their checks, and the launch geometry both the GPU
//! and the grid emulator use. The constants mirror the `#define`s in `cuda/`.

use crate::{Format, KernelError, Result};

/// Most activation rows one quantised product takes (`SF_MAX_ROWS`).
pub const MAX_ROWS: usize = 8;
/// Output features per product block, one per warp (`SF_GEMV_WARPS`).
const GEMV_WARPS: u32 = 4;
/// Activation blocks quantised per launch block, one per warp.
const QUANTIZE_WARPS: u32 = 4;
/// Warps per attention block (`SF_ATTN_WARPS`).
const ATTN_WARPS: u32 = 4;
/// Largest head dimension of the attention and RoPE kernels (`SF_MAX_HEAD_DIM`).
pub const MAX_HEAD_DIM: usize = 256;
/// Threads per RMSNorm block (`SF_NORM_THREADS`).
const NORM_THREADS: u32 = 256;
/// Threads per block of the integer-sum and copy kernels.
const FLAT_THREADS: u32 = 256;

/// Grid and block sizes of one launch (x, y; z is always 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    /// Blocks in x and y.
    pub grid: (u32, u32),
    /// Threads per block (x only).
    pub block: u32,
}

fn shape_err(msg: String) -> KernelError {
    KernelError::Shape(msg)
}

fn blocks(n: usize, per: u32) -> Result<u32> {
    u32::try_from(n.div_ceil(per as usize))
        .map_err(|_| shape_err(format!("{n} items need too many blocks")))
}

fn fits_i32(what: &str, n: usize) -> Result<()> {
    if i32::try_from(n).is_err() {
        return Err(shape_err(format!(
            "{what} = {n} exceeds the kernels' 32-bit sizes"
        )));
    }
    Ok(())
}

/// A quantised product `y = x · Wᵀ`: `rows` activation rows of `in_features`, a
/// weight of `out_features` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemvShape {
    /// Weight format.
    pub format: Format,
    /// Output features (weight rows).
    pub out_features: usize,
    /// Input features (a multiple of the format's block).
    pub in_features: usize,
    /// Activation rows, 1 to [`MAX_ROWS`].
    pub rows: usize,
}

impl GemvShape {
    /// Checks the sizes and the lengths of the weight and activation buffers.
    pub fn check(&self, weight_bytes: usize, x_len: usize) -> Result<()> {
        let f = self.format;
        if self.in_features == 0 || !self.in_features.is_multiple_of(f.block_values()) {
            return Err(shape_err(format!(
                "{} product: {} inputs are not a multiple of {}",
                f.name(),
                self.in_features,
                f.block_values()
            )));
        }
        if self.rows == 0 || self.rows > MAX_ROWS {
            return Err(shape_err(format!(
                "{} product: {} rows (1 to {MAX_ROWS})",
                f.name(),
                self.rows
            )));
        }
        fits_i32("out_features", self.out_features)?;
        fits_i32("in_features", self.in_features)?;
        let want = self.out_features * f.row_bytes(self.in_features);
        if weight_bytes != want {
            return Err(shape_err(format!(
                "{} product: weight has {weight_bytes} bytes, expected {want}",
                f.name()
            )));
        }
        if x_len != self.rows * self.in_features {
            return Err(shape_err(format!(
                "{} product: input has {x_len} values, expected {} × {}",
                f.name(),
                self.rows,
                self.in_features
            )));
        }
        Ok(())
    }

    /// Activation blocks of 32 (all rows).
    pub fn act_blocks(&self) -> usize {
        self.rows * self.in_features / 32
    }

    /// Launch of the activation quantisation.
    pub fn quantize_launch(&self) -> Result<Launch> {
        Ok(Launch {
            grid: (blocks(self.act_blocks(), QUANTIZE_WARPS)?, 1),
            block: QUANTIZE_WARPS * 32,
        })
    }

    /// Launch of the product.
    pub fn launch(&self) -> Result<Launch> {
        Ok(Launch {
            grid: (blocks(self.out_features, GEMV_WARPS)?, 1),
            block: GEMV_WARPS * 32,
        })
    }

    /// Launch of the integer-sum kernel (row 0 against every sub-block).
    pub fn sums_launch(&self) -> Result<Launch> {
        Ok(Launch {
            grid: (
                blocks(self.out_features * self.in_features / 32, FLAT_THREADS)?,
                1,
            ),
            block: FLAT_THREADS,
        })
    }
}

/// Decode attention of `rows` new query rows of one sequence against its KV cache,
/// as the engine's CPU attention (`engine::model::attention::AttentionShape`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (dividing `heads`).
    pub kv_heads: usize,
    /// Values per head (a multiple of 32, at most [`MAX_HEAD_DIM`]).
    pub head_dim: usize,
    /// Positions allocated per key/value head in the cache.
    pub capacity: usize,
    /// Cached positions before the new rows.
    pub pos: usize,
    /// New rows (their keys and values already in the cache).
    pub rows: usize,
}

/// Checks heads and head dimension shared by attention and RoPE.
fn check_heads(what: &str, heads: usize, kv_heads: usize, hd: usize) -> Result<()> {
    if heads == 0 || kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(shape_err(format!(
            "{what}: {heads} query heads do not share {kv_heads} key/value heads evenly"
        )));
    }
    if hd == 0 || !hd.is_multiple_of(32) || hd > MAX_HEAD_DIM {
        return Err(shape_err(format!(
            "{what}: head dimension {hd} (a multiple of 32 up to {MAX_HEAD_DIM})"
        )));
    }
    Ok(())
}

impl AttentionShape {
    /// Checks the sizes and the buffer lengths (`q`, and keys/values each).
    pub fn check(&self, q_len: usize, cache_len: usize) -> Result<()> {
        check_heads("attention", self.heads, self.kv_heads, self.head_dim)?;
        if self.rows == 0 || self.pos + self.rows > self.capacity {
            return Err(shape_err(format!(
                "attention: {} rows after {} positions exceed the capacity {}",
                self.rows, self.pos, self.capacity
            )));
        }
        fits_i32("capacity", self.capacity)?;
        if q_len != self.heads * self.rows * self.head_dim {
            return Err(shape_err(format!(
                "attention: query has {q_len} values, expected {}",
                self.heads * self.rows * self.head_dim
            )));
        }
        if cache_len < self.kv_heads * self.capacity * self.head_dim {
            return Err(shape_err(format!(
                "attention: cache has {cache_len} values, expected {}",
                self.kv_heads * self.capacity * self.head_dim
            )));
        }
        Ok(())
    }

    /// Values of the output `[rows, heads · head_dim]`.
    pub fn out_len(&self) -> usize {
        self.rows * self.heads * self.head_dim
    }

    /// Launch: one block per (head, row).
    pub fn launch(&self) -> Result<Launch> {
        Ok(Launch {
            grid: (blocks(self.heads, 1)?, blocks(self.rows, 1)?),
            block: ATTN_WARPS * 32,
        })
    }
}

/// Rotary embedding of `rows` new rows at positions `pos..`, with the write of their
/// keys and values into the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RopeShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// Positions allocated per key/value head in the cache.
    pub capacity: usize,
    /// Position of the first new row.
    pub pos: usize,
    /// New rows.
    pub rows: usize,
    /// Rotate pairs `(2i, 2i+1)` (GPT-J style) instead of `(i, i + head_dim/2)`.
    pub interleaved: bool,
}

impl RopeShape {
    /// Checks the sizes; `table_rows` is the number of positions in the cos/sin tables.
    pub fn check(&self, table_rows: usize) -> Result<()> {
        check_heads("rope", self.heads, self.kv_heads, self.head_dim)?;
        if self.rows == 0 || self.pos + self.rows > self.capacity.min(table_rows) {
            return Err(shape_err(format!(
                "rope: {} rows after {} positions exceed the cache ({}) or the tables ({table_rows})",
                self.rows, self.pos, self.capacity
            )));
        }
        fits_i32("capacity", self.capacity)?;
        Ok(())
    }

    /// Launch: one warp per (head of q, k or v, row).
    pub fn launch(&self) -> Result<Launch> {
        Ok(Launch {
            grid: (
                blocks(self.heads + 2 * self.kv_heads, 1)?,
                blocks(self.rows, 1)?,
            ),
            block: 32,
        })
    }
}

/// Launch of RMSNorm over `rows` rows: one block per row.
pub fn rms_norm_launch(rows: usize) -> Result<Launch> {
    Ok(Launch {
        grid: (blocks(rows, 1)?, 1),
        block: NORM_THREADS,
    })
}

/// Launch of the copy kernel over `n` floats (a grid-stride loop, at most `max_blocks`).
pub fn copy_launch(n: usize, max_blocks: u32) -> Result<Launch> {
    Ok(Launch {
        grid: (blocks(n, FLAT_THREADS)?.clamp(1, max_blocks.max(1)), 1),
        block: FLAT_THREADS,
    })
}

/// Host inputs of the fused RoPE kernel.
#[derive(Debug, Clone, Copy)]
pub struct RopeInputs<'a> {
    /// New queries `[rows, heads · head_dim]`.
    pub q: &'a [f32],
    /// New keys `[rows, kv_heads · head_dim]`.
    pub k: &'a [f32],
    /// New values `[rows, kv_heads · head_dim]`.
    pub v: &'a [f32],
    /// Cosines `[positions, head_dim / 2]`.
    pub cos: &'a [f32],
    /// Sines `[positions, head_dim / 2]`.
    pub sin: &'a [f32],
    /// Per-head RMSNorm weights of queries and keys (`head_dim` each) and epsilon,
    /// for models that normalise them before rotation.
    pub qk_norm: Option<(&'a [f32], &'a [f32], f32)>,
}

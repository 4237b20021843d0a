//! The kernels run on the CPU by the grid emulator (`cuda/emulator.cpp`): the same
//! CUDA C, compiled for the host, with the launch geometry of [`crate::shape`]. For
//! tests and for checking kernels on machines without a GPU; far too slow to serve.

use std::ffi::{CStr, c_char};

use crate::shape::{self, Launch};
use crate::{
    AttentionShape, Format, GemvShape, KernelError, QuantizedActs, Result, RopeInputs, RopeShape,
};

unsafe extern "C" {
    fn sf_emu_quantize_q8(
        gx: u32,
        bx: u32,
        x: *const f32,
        q: *mut i8,
        d: *mut f32,
        s: *mut f32,
        blocks: i32,
    ) -> *const c_char;
    fn sf_emu_gemv(
        gx: u32,
        bx: u32,
        format: i32,
        rows: i32,
        w: *const u8,
        xq: *const i8,
        xd: *const f32,
        xs: *const f32,
        y: *mut f32,
        out: i32,
        inp: i32,
    ) -> *const c_char;
    fn sf_emu_block_sums(
        gx: u32,
        bx: u32,
        format: i32,
        w: *const u8,
        xq: *const i8,
        sums: *mut i32,
        out: i32,
        inp: i32,
    ) -> *const c_char;
    fn sf_emu_decode_attention(
        gx: u32,
        gy: u32,
        bx: u32,
        q: *const f32,
        keys: *const f32,
        values: *const f32,
        out: *mut f32,
        heads: i32,
        kv_heads: i32,
        hd: i32,
        capacity: i32,
        pos: i32,
        rows: i32,
    ) -> *const c_char;
    fn sf_emu_rms_norm(
        gx: u32,
        bx: u32,
        x: *const f32,
        w: *const f32,
        y: *mut f32,
        cols: i32,
        eps: f32,
    ) -> *const c_char;
    fn sf_emu_rope_qk(
        gx: u32,
        gy: u32,
        bx: u32,
        q_in: *const f32,
        k_in: *const f32,
        v_in: *const f32,
        cos: *const f32,
        sin: *const f32,
        q_norm: *const f32,
        k_norm: *const f32,
        eps: f32,
        q_out: *mut f32,
        keys: *mut f32,
        values: *mut f32,
        heads: i32,
        kv_heads: i32,
        hd: i32,
        capacity: i32,
        pos: i32,
        t: i32,
        interleaved: i32,
    ) -> *const c_char;
    fn sf_emu_selftest_broken_barrier(out: *mut i32) -> *const c_char;
    fn sf_emu_selftest_warp_sums(x: *const f32, out: *mut f32) -> *const c_char;
    fn sf_emu_copy(gx: u32, bx: u32, src: *const f32, dst: *mut f32, n: usize) -> *const c_char;
}

/// Turns the emulator's answer into a result.
fn done(status: *const c_char) -> Result<()> {
    if status.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is a NUL-terminated message in static or thread-local
    // storage that lives until the next launch on this thread.
    let msg = unsafe { CStr::from_ptr(status) }
        .to_string_lossy()
        .into_owned();
    Err(KernelError::Emulator(msg))
}

/// Sizes fit in `i32` once the shape checks passed.
fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// Quantises rows of `x` (length a multiple of 32) to 8-bit blocks.
pub fn quantize(x: &[f32]) -> Result<QuantizedActs> {
    if !x.len().is_multiple_of(32) {
        return Err(KernelError::Shape(format!(
            "quantize: {} values are not whole blocks of 32",
            x.len()
        )));
    }
    let blocks = x.len() / 32;
    let shape = GemvShape {
        format: Format::Q8_0,
        out_features: 0,
        in_features: 32,
        rows: blocks,
    };
    let launch = shape.quantize_launch()?;
    let mut acts = QuantizedActs {
        q: vec![0; x.len()],
        d: vec![0.0; blocks],
        s: vec![0.0; blocks],
    };
    if blocks == 0 {
        return Ok(acts);
    }
    // SAFETY: the buffers hold `blocks` blocks, which is what the kernel touches.
    done(unsafe {
        sf_emu_quantize_q8(
            launch.grid.0,
            launch.block,
            x.as_ptr(),
            acts.q.as_mut_ptr(),
            acts.d.as_mut_ptr(),
            acts.s.as_mut_ptr(),
            int(blocks),
        )
    })?;
    Ok(acts)
}

/// The quantised product `y = x · Wᵀ` (`[rows, out_features]`) of raw GGUF blocks
/// `weight` with `x` (`[rows, in_features]`), activations quantised first.
pub fn gemv(shape: GemvShape, weight: &[u8], x: &[f32]) -> Result<Vec<f32>> {
    shape.check(weight.len(), x.len())?;
    let acts = quantize(x)?;
    gemv_quantized(shape, weight, &acts)
}

/// The quantised product on activations already quantised ([`quantize`]).
pub fn gemv_quantized(shape: GemvShape, weight: &[u8], acts: &QuantizedActs) -> Result<Vec<f32>> {
    shape.check(weight.len(), acts.q.len())?;
    let Launch { grid, block } = shape.launch()?;
    let mut y = vec![0f32; shape.rows * shape.out_features];
    if shape.out_features == 0 {
        return Ok(y);
    }
    // SAFETY: `check` matched the buffers to the shape the kernel reads and writes.
    done(unsafe {
        sf_emu_gemv(
            grid.0,
            block,
            shape.format.number(),
            int(shape.rows),
            weight.as_ptr(),
            acts.q.as_ptr(),
            acts.d.as_ptr(),
            acts.s.as_ptr(),
            y.as_mut_ptr(),
            int(shape.out_features),
            int(shape.in_features),
        )
    })?;
    Ok(y)
}

/// The integer sums `[S₀, S₁]` of every (output feature, 32-weight sub-block) against
/// the first activation row `q` (`in_features` values): what the products add up.
pub fn block_sums(shape: GemvShape, weight: &[u8], q: &[i8]) -> Result<Vec<[i32; 2]>> {
    let one = GemvShape { rows: 1, ..shape };
    one.check(weight.len(), q.len())?;
    let Launch { grid, block } = one.sums_launch()?;
    let n = one.out_features * one.in_features / 32;
    let mut sums = vec![0i32; 2 * n];
    if n == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: `check` matched the buffers; `sums` holds two values per sub-block.
    done(unsafe {
        sf_emu_block_sums(
            grid.0,
            block,
            one.format.number(),
            weight.as_ptr(),
            q.as_ptr(),
            sums.as_mut_ptr(),
            int(one.out_features),
            int(one.in_features),
        )
    })?;
    Ok(sums.chunks_exact(2).map(|p| [p[0], p[1]]).collect())
}

/// Decode attention: `[rows, heads · head_dim]` for queries `q` laid out
/// `[heads, rows, head_dim]` and `keys`/`values` laid out `[kv_heads, capacity, head_dim]`.
pub fn decode_attention(
    shape: AttentionShape,
    q: &[f32],
    keys: &[f32],
    values: &[f32],
) -> Result<Vec<f32>> {
    shape.check(q.len(), keys.len().min(values.len()))?;
    let Launch { grid, block } = shape.launch()?;
    let mut out = vec![0f32; shape.out_len()];
    // SAFETY: `check` matched the buffers to the shape the kernel reads and writes.
    done(unsafe {
        sf_emu_decode_attention(
            grid.0,
            grid.1,
            block,
            q.as_ptr(),
            keys.as_ptr(),
            values.as_ptr(),
            out.as_mut_ptr(),
            int(shape.heads),
            int(shape.kv_heads),
            int(shape.head_dim),
            int(shape.capacity),
            int(shape.pos),
            int(shape.rows),
        )
    })?;
    Ok(out)
}

/// RMSNorm of each row of `x` (rows of `weight.len()` values) scaled by `weight`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Result<Vec<f32>> {
    let cols = weight.len();
    if cols == 0 || !x.len().is_multiple_of(cols) {
        return Err(KernelError::Shape(format!(
            "rms_norm: {} values are not rows of {cols}",
            x.len()
        )));
    }
    let rows = x.len() / cols;
    let Launch { grid, block } = shape::rms_norm_launch(rows)?;
    let mut y = vec![0f32; x.len()];
    if rows == 0 {
        return Ok(y);
    }
    // SAFETY: `x` and `y` hold `rows` rows of `cols`, `weight` one row.
    done(unsafe {
        sf_emu_rms_norm(
            grid.0,
            block,
            x.as_ptr(),
            weight.as_ptr(),
            y.as_mut_ptr(),
            int(cols),
            eps,
        )
    })?;
    Ok(y)
}

/// Rotates the new queries (returned `[heads, rows, head_dim]`) and keys, writing keys
/// and values into `keys`/`values` (`[kv_heads, capacity, head_dim]`) at their positions.
pub fn rope_qk(
    shape: RopeShape,
    inputs: RopeInputs<'_>,
    keys: &mut [f32],
    values: &mut [f32],
) -> Result<Vec<f32>> {
    let hd = shape.head_dim;
    let half = hd / 2;
    let table_rows = inputs.cos.len().checked_div(half).unwrap_or(0);
    shape.check(table_rows)?;
    let bad = |what: &str, got: usize, want: usize| {
        Err(KernelError::Shape(format!(
            "rope: {what} has {got} values, expected {want}"
        )))
    };
    let (q_len, kv_len) = (
        shape.rows * shape.heads * hd,
        shape.rows * shape.kv_heads * hd,
    );
    let cache = shape.kv_heads * shape.capacity * hd;
    if inputs.q.len() != q_len {
        return bad("q", inputs.q.len(), q_len);
    }
    if inputs.k.len() != kv_len || inputs.v.len() != kv_len {
        return bad("k or v", inputs.k.len().min(inputs.v.len()), kv_len);
    }
    if inputs.sin.len() != inputs.cos.len() {
        return bad("sin", inputs.sin.len(), inputs.cos.len());
    }
    if keys.len() < cache || values.len() < cache {
        return bad("the cache", keys.len().min(values.len()), cache);
    }
    let (q_norm, k_norm, eps) = match inputs.qk_norm {
        Some((qn, kn, eps)) => {
            if qn.len() != hd || kn.len() != hd {
                return bad("a QK-norm weight", qn.len().min(kn.len()), hd);
            }
            (qn.as_ptr(), kn.as_ptr(), eps)
        }
        None => (std::ptr::null(), std::ptr::null(), 0.0),
    };
    let Launch { grid, block } = shape.launch()?;
    let mut q_out = vec![0f32; q_len];
    // SAFETY: every buffer was checked against the shape the kernel reads and writes.
    done(unsafe {
        sf_emu_rope_qk(
            grid.0,
            grid.1,
            block,
            inputs.q.as_ptr(),
            inputs.k.as_ptr(),
            inputs.v.as_ptr(),
            inputs.cos.as_ptr(),
            inputs.sin.as_ptr(),
            q_norm,
            k_norm,
            eps,
            q_out.as_mut_ptr(),
            keys.as_mut_ptr(),
            values.as_mut_ptr(),
            int(shape.heads),
            int(shape.kv_heads),
            int(hd),
            int(shape.capacity),
            int(shape.pos),
            int(shape.rows),
            i32::from(shape.interleaved),
        )
    })?;
    Ok(q_out)
}

/// Copies `src` with the copy kernel (at most `max_blocks` blocks).
pub fn copy(src: &[f32], max_blocks: u32) -> Result<Vec<f32>> {
    let Launch { grid, block } = shape::copy_launch(src.len(), max_blocks)?;
    let mut dst = vec![0f32; src.len()];
    // SAFETY: both buffers hold `src.len()` floats.
    done(unsafe { sf_emu_copy(grid.0, block, src.as_ptr(), dst.as_mut_ptr(), src.len()) })?;
    Ok(dst)
}

/// The emulator's own checks: a 64-thread kernel whose first 16 threads alone reach
/// `__syncthreads` (must be reported as an error), and one where each lane writes its
/// warp's sum of `x` plus the lane index three lanes down (`__shfl_down_sync`, which
/// keeps its own value past the warp's end). Returns the second kernel's output.
pub fn self_test(x: &[f32; 64]) -> (Result<()>, Result<Vec<f32>>) {
    let mut flags = [0i32; 64];
    // SAFETY: the kernel writes one int per thread of its 64.
    let broken = done(unsafe { sf_emu_selftest_broken_barrier(flags.as_mut_ptr()) });
    let mut out = vec![0f32; 64];
    // SAFETY: the kernel reads and writes one float per thread of its 64.
    let sums =
        done(unsafe { sf_emu_selftest_warp_sums(x.as_ptr(), out.as_mut_ptr()) }).map(|()| out);
    (broken, sums)
}

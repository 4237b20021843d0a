//! The kernels on an NVIDIA GPU: PTX compiled by nvcc at build time for sm_80 and
//! sm_90, embedded here, and loaded and launched through cudarc with the geometry of
//! [`crate::shape`]. Buffers are device slices the caller owns (candle's tensors
//! hand theirs over in the engine); every call checks their lengths first.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::Ptx;

use crate::shape::{self, Launch, MAX_ROWS};
use crate::{AttentionShape, Format, GemvShape, KernelError, Result, RopeShape};

/// PTX of each module for sm_80 (A100, and any newer card by JIT) and sm_90 (H100/H200).
const PTX: [(&str, &str, &str); 3] = [
    (
        "gemv",
        include_str!(concat!(env!("OUT_DIR"), "/gemv.sm_80.ptx")),
        include_str!(concat!(env!("OUT_DIR"), "/gemv.sm_90.ptx")),
    ),
    (
        "attention",
        include_str!(concat!(env!("OUT_DIR"), "/attention.sm_80.ptx")),
        include_str!(concat!(env!("OUT_DIR"), "/attention.sm_90.ptx")),
    ),
    (
        "norm_rope",
        include_str!(concat!(env!("OUT_DIR"), "/norm_rope.sm_80.ptx")),
        include_str!(concat!(env!("OUT_DIR"), "/norm_rope.sm_90.ptx")),
    ),
];

/// Whether the CUDA driver library can be loaded and reports at least one device.
pub fn device_present() -> bool {
    cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0)
}

/// Activation blocks on the device: the scratch the quantised products read.
#[derive(Debug)]
pub struct DeviceActs {
    q: CudaSlice<i8>,
    d: CudaSlice<f32>,
    s: CudaSlice<f32>,
}

impl DeviceActs {
    /// Room for `blocks` blocks of 32 activations.
    pub fn new(stream: &Arc<CudaStream>, blocks: usize) -> Result<Self> {
        Ok(Self {
            q: stream.alloc_zeros(blocks.max(1) * 32)?,
            d: stream.alloc_zeros(blocks.max(1))?,
            s: stream.alloc_zeros(blocks.max(1))?,
        })
    }

    /// How many blocks fit.
    pub fn blocks(&self) -> usize {
        self.d.len()
    }

    /// The 8-bit values (for tests that read them back).
    pub fn q(&self) -> &CudaSlice<i8> {
        &self.q
    }

    /// The block scales.
    pub fn d(&self) -> &CudaSlice<f32> {
        &self.d
    }

    /// The block sums.
    pub fn s(&self) -> &CudaSlice<f32> {
        &self.s
    }
}

/// The loaded kernels of one device, launched on one stream.
#[derive(Debug)]
pub struct CudaKernels {
    stream: Arc<CudaStream>,
    arch: &'static str,
    device_name: String,
    gemv: HashMap<(Format, usize), CudaFunction>,
    sums: HashMap<Format, CudaFunction>,
    functions: HashMap<&'static str, CudaFunction>,
}

fn config(l: Launch) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (l.grid.0, l.grid.1, 1),
        block_dim: (l.block, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn too_short(what: &str, got: usize, want: usize) -> KernelError {
    KernelError::Shape(format!("{what}: {got} values on the device, {want} needed"))
}

impl CudaKernels {
    /// Loads the PTX for the stream's device (sm_90 PTX on compute capability 9 and
    /// newer, sm_80 PTX on 8.x); older devices are refused.
    pub fn load(stream: Arc<CudaStream>) -> Result<Self> {
        let ctx = stream.context().clone();
        let (major, minor) = ctx.compute_capability()?;
        let device_name = ctx.name()?;
        let arch = match major {
            9.. => "sm_90",
            8 => "sm_80",
            _ => {
                return Err(KernelError::Shape(format!(
                    "{device_name} has compute capability {major}.{minor}; the kernels need 8.0 or newer"
                )));
            }
        };
        let mut modules = HashMap::new();
        for (name, sm80, sm90) in PTX {
            let src = if arch == "sm_90" { sm90 } else { sm80 };
            modules.insert(name, ctx.load_module(Ptx::from_src(src))?);
        }
        let mut gemv = HashMap::new();
        let mut sums = HashMap::new();
        for f in Format::ALL {
            for rows in 1..=MAX_ROWS {
                let name = format!("sf_gemv_{}_r{rows}", f.name());
                gemv.insert((f, rows), modules["gemv"].load_function(&name)?);
            }
            let name = format!("sf_block_sums_{}", f.name());
            sums.insert(f, modules["gemv"].load_function(&name)?);
        }
        let mut functions = HashMap::new();
        for (module, name) in [
            ("gemv", "sf_quantize_q8"),
            ("attention", "sf_decode_attention"),
            ("norm_rope", "sf_rms_norm"),
            ("norm_rope", "sf_rope_qk"),
            ("norm_rope", "sf_copy"),
        ] {
            functions.insert(name, modules[module].load_function(name)?);
        }
        Ok(Self {
            stream,
            arch,
            device_name,
            gemv,
            sums,
            functions,
        })
    }

    /// The stream the kernels run on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Which PTX was loaded (`sm_80` or `sm_90`).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// The device's name, as the driver reports it.
    pub fn device_name(&self) -> &str {
        &self.device_name
    }

    /// Names of the loaded kernels, for `/v1/health` and `model info`.
    pub fn kernel_names() -> Vec<String> {
        let mut names: Vec<String> = Format::ALL
            .iter()
            .map(|f| format!("gemv_{}[1..={MAX_ROWS} rows]", f.name()))
            .collect();
        names.extend(
            ["quantize_q8", "decode_attention", "rms_norm", "rope_qk"]
                .iter()
                .map(|s| s.to_string()),
        );
        names
    }

    fn function(&self, name: &str) -> &CudaFunction {
        &self.functions[name]
    }

    /// Quantises `blocks` blocks of `x` into `acts`.
    pub fn quantize(
        &self,
        x: &CudaView<'_, f32>,
        blocks: usize,
        acts: &mut DeviceActs,
    ) -> Result<()> {
        if x.len() < blocks * 32 {
            return Err(too_short("quantize input", x.len(), blocks * 32));
        }
        if acts.blocks() < blocks {
            return Err(too_short("quantize scratch", acts.blocks(), blocks));
        }
        if blocks == 0 {
            return Ok(());
        }
        let launch = GemvShape {
            format: Format::Q8_0,
            out_features: 0,
            in_features: 32,
            rows: blocks,
        }
        .quantize_launch()?;
        let n = int(blocks);
        let mut b = self.stream.launch_builder(self.function("sf_quantize_q8"));
        b.arg(x)
            .arg(&mut acts.q)
            .arg(&mut acts.d)
            .arg(&mut acts.s)
            .arg(&n);
        // SAFETY: the buffers hold `blocks` blocks, which is all the kernel touches.
        unsafe { b.launch(config(launch)) }?;
        Ok(())
    }

    /// `y = x · Wᵀ` (`[rows, out_features]`) for raw GGUF blocks `w` and activations `x`
    /// (`[rows, in_features]`), quantising `x` into `acts` first.
    pub fn gemv(
        &self,
        shape: GemvShape,
        w: &CudaView<'_, u8>,
        x: &CudaView<'_, f32>,
        acts: &mut DeviceActs,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        shape.check(w.len(), x.len())?;
        if y.len() < shape.rows * shape.out_features {
            return Err(too_short(
                "product output",
                y.len(),
                shape.rows * shape.out_features,
            ));
        }
        self.quantize(x, shape.act_blocks(), acts)?;
        self.gemv_quantized(shape, w, acts, y)
    }

    /// The product on activations already in `acts`.
    pub fn gemv_quantized(
        &self,
        shape: GemvShape,
        w: &CudaView<'_, u8>,
        acts: &DeviceActs,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        shape.check(w.len(), shape.rows * shape.in_features)?;
        if acts.blocks() < shape.act_blocks() {
            return Err(too_short(
                "product activations",
                acts.blocks(),
                shape.act_blocks(),
            ));
        }
        if y.len() < shape.rows * shape.out_features {
            return Err(too_short(
                "product output",
                y.len(),
                shape.rows * shape.out_features,
            ));
        }
        if shape.out_features == 0 {
            return Ok(());
        }
        let (out, inp) = (int(shape.out_features), int(shape.in_features));
        let mut b = self
            .stream
            .launch_builder(&self.gemv[&(shape.format, shape.rows)]);
        b.arg(w)
            .arg(&acts.q)
            .arg(&acts.d)
            .arg(&acts.s)
            .arg(y)
            .arg(&out)
            .arg(&inp);
        // SAFETY: the lengths were checked against the shape the kernel reads and writes.
        unsafe { b.launch(config(shape.launch()?)) }?;
        Ok(())
    }

    /// Integer sums of every (output feature, sub-block) against activation row 0 in
    /// `acts`, two per sub-block into `sums`.
    pub fn block_sums(
        &self,
        shape: GemvShape,
        w: &CudaView<'_, u8>,
        acts: &DeviceActs,
        sums: &mut CudaViewMut<'_, i32>,
    ) -> Result<()> {
        let one = GemvShape { rows: 1, ..shape };
        one.check(w.len(), one.in_features)?;
        let n = one.out_features * one.in_features / 32;
        if sums.len() < 2 * n {
            return Err(too_short("block sums", sums.len(), 2 * n));
        }
        if acts.blocks() < one.act_blocks() {
            return Err(too_short(
                "block sums activations",
                acts.blocks(),
                one.act_blocks(),
            ));
        }
        let (out, inp) = (int(one.out_features), int(one.in_features));
        let mut b = self.stream.launch_builder(&self.sums[&one.format]);
        b.arg(w).arg(&acts.q).arg(sums).arg(&out).arg(&inp);
        // SAFETY: the lengths were checked against the shape the kernel reads and writes.
        unsafe { b.launch(config(one.sums_launch()?)) }?;
        Ok(())
    }

    /// Decode attention (see [`crate::emulated::decode_attention`] for the layouts).
    pub fn decode_attention(
        &self,
        shape: AttentionShape,
        q: &CudaView<'_, f32>,
        keys: &CudaView<'_, f32>,
        values: &CudaView<'_, f32>,
        out: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        shape.check(q.len(), keys.len().min(values.len()))?;
        if out.len() < shape.out_len() {
            return Err(too_short("attention output", out.len(), shape.out_len()));
        }
        let args = [
            shape.heads,
            shape.kv_heads,
            shape.head_dim,
            shape.capacity,
            shape.pos,
            shape.rows,
        ]
        .map(int);
        let mut b = self
            .stream
            .launch_builder(self.function("sf_decode_attention"));
        b.arg(q).arg(keys).arg(values).arg(out);
        for a in &args {
            b.arg(a);
        }
        // SAFETY: the lengths were checked against the shape the kernel reads and writes.
        unsafe { b.launch(config(shape.launch()?)) }?;
        Ok(())
    }

    /// RMSNorm of `rows` rows of `w.len()` values.
    pub fn rms_norm(
        &self,
        x: &CudaView<'_, f32>,
        w: &CudaView<'_, f32>,
        eps: f32,
        rows: usize,
        y: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let cols = w.len();
        if x.len() < rows * cols || y.len() < rows * cols {
            return Err(too_short(
                "rms_norm rows",
                x.len().min(y.len()),
                rows * cols,
            ));
        }
        if rows == 0 {
            return Ok(());
        }
        let c = int(cols);
        let mut b = self.stream.launch_builder(self.function("sf_rms_norm"));
        b.arg(x).arg(w).arg(y).arg(&c).arg(&eps);
        // SAFETY: `x` and `y` hold `rows` rows of `cols`, `w` one row.
        unsafe { b.launch(config(shape::rms_norm_launch(rows)?)) }?;
        Ok(())
    }

    /// The fused RoPE (see [`crate::emulated::rope_qk`]): rotated queries into `q_out`,
    /// keys and values into the cache at their positions.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_qk(
        &self,
        shape: RopeShape,
        qkv: [&CudaView<'_, f32>; 3],
        tables: [&CudaView<'_, f32>; 2],
        qk_norm: Option<(&CudaView<'_, f32>, &CudaView<'_, f32>, f32)>,
        q_out: &mut CudaViewMut<'_, f32>,
        keys: &mut CudaViewMut<'_, f32>,
        values: &mut CudaViewMut<'_, f32>,
    ) -> Result<()> {
        let hd = shape.head_dim;
        shape.check(tables[0].len().min(tables[1].len()) / (hd / 2).max(1))?;
        let (q_len, kv_len) = (
            shape.rows * shape.heads * hd,
            shape.rows * shape.kv_heads * hd,
        );
        let cache = shape.kv_heads * shape.capacity * hd;
        if qkv[0].len() < q_len || q_out.len() < q_len {
            return Err(too_short(
                "rope queries",
                qkv[0].len().min(q_out.len()),
                q_len,
            ));
        }
        if qkv[1].len().min(qkv[2].len()) < kv_len {
            return Err(too_short(
                "rope keys/values",
                qkv[1].len().min(qkv[2].len()),
                kv_len,
            ));
        }
        if keys.len().min(values.len()) < cache {
            return Err(too_short("rope cache", keys.len().min(values.len()), cache));
        }
        let mut b = self.stream.launch_builder(self.function("sf_rope_qk"));
        b.arg(qkv[0])
            .arg(qkv[1])
            .arg(qkv[2])
            .arg(tables[0])
            .arg(tables[1]);
        let null = 0u64;
        let eps = match &qk_norm {
            Some((qn, kn, eps)) => {
                if qn.len() < hd || kn.len() < hd {
                    return Err(too_short("QK-norm weights", qn.len().min(kn.len()), hd));
                }
                b.arg(*qn).arg(*kn);
                *eps
            }
            None => {
                b.arg(&null).arg(&null);
                0.0
            }
        };
        let args = [
            shape.heads,
            shape.kv_heads,
            hd,
            shape.capacity,
            shape.pos,
            shape.rows,
        ]
        .map(int);
        let interleaved = i32::from(shape.interleaved);
        b.arg(&eps).arg(q_out).arg(keys).arg(values);
        for a in &args {
            b.arg(a);
        }
        b.arg(&interleaved);
        // SAFETY: every buffer was checked against the shape the kernel reads and writes.
        unsafe { b.launch(config(shape.launch()?)) }?;
        Ok(())
    }

    /// Copies `n` floats from `src` to `dst` with at most `max_blocks` blocks.
    pub fn copy(
        &self,
        src: &CudaView<'_, f32>,
        dst: &mut CudaViewMut<'_, f32>,
        max_blocks: u32,
    ) -> Result<()> {
        let n = src.len().min(dst.len());
        let mut b = self.stream.launch_builder(self.function("sf_copy"));
        b.arg(src).arg(dst).arg(&n);
        // SAFETY: both buffers hold at least `n` floats.
        unsafe { b.launch(config(shape::copy_launch(n, max_blocks)?)) }?;
        Ok(())
    }
}

/// The GPU as [`crate::HostKernels`]: inputs uploaded, results downloaded, the stream
/// synchronised around each call (for checks, not for serving).
impl crate::HostKernels for CudaKernels {
    fn describe(&self) -> String {
        format!("{} ({} PTX)", self.device_name, self.arch)
    }

    fn quantize(&self, x: &[f32]) -> Result<crate::QuantizedActs> {
        let blocks = x.len() / 32;
        if !x.len().is_multiple_of(32) {
            return Err(KernelError::Shape(format!(
                "quantize: {} values are not whole blocks of 32",
                x.len()
            )));
        }
        let xd = self.stream.clone_htod(x)?;
        let mut acts = DeviceActs::new(&self.stream, blocks)?;
        self.quantize(&xd.as_view(), blocks, &mut acts)?;
        let mut q = self.stream.clone_dtoh(&acts.q)?;
        let mut d = self.stream.clone_dtoh(&acts.d)?;
        let mut s = self.stream.clone_dtoh(&acts.s)?;
        q.truncate(blocks * 32);
        d.truncate(blocks);
        s.truncate(blocks);
        Ok(crate::QuantizedActs { q, d, s })
    }

    fn gemv(&self, shape: GemvShape, weight: &[u8], x: &[f32]) -> Result<Vec<f32>> {
        shape.check(weight.len(), x.len())?;
        let w = self.stream.clone_htod(weight)?;
        let xd = self.stream.clone_htod(x)?;
        let mut acts = DeviceActs::new(&self.stream, shape.act_blocks())?;
        let mut y = self
            .stream
            .alloc_zeros::<f32>((shape.rows * shape.out_features).max(1))?;
        self.gemv(
            shape,
            &w.as_view(),
            &xd.as_view(),
            &mut acts,
            &mut y.as_view_mut(),
        )?;
        let mut out = self.stream.clone_dtoh(&y)?;
        out.truncate(shape.rows * shape.out_features);
        Ok(out)
    }

    fn block_sums(&self, shape: GemvShape, weight: &[u8], q: &[i8]) -> Result<Vec<[i32; 2]>> {
        let one = GemvShape { rows: 1, ..shape };
        one.check(weight.len(), q.len())?;
        let n = one.out_features * one.in_features / 32;
        let w = self.stream.clone_htod(weight)?;
        let mut acts = DeviceActs::new(&self.stream, one.act_blocks())?;
        self.stream.memcpy_htod(q, &mut acts.q)?;
        let mut sums = self.stream.alloc_zeros::<i32>((2 * n).max(1))?;
        self.block_sums(one, &w.as_view(), &acts, &mut sums.as_view_mut())?;
        let flat = self.stream.clone_dtoh(&sums)?;
        Ok(flat[..2 * n]
            .chunks_exact(2)
            .map(|p| [p[0], p[1]])
            .collect())
    }

    fn decode_attention(
        &self,
        shape: AttentionShape,
        q: &[f32],
        keys: &[f32],
        values: &[f32],
    ) -> Result<Vec<f32>> {
        shape.check(q.len(), keys.len().min(values.len()))?;
        let (qd, kd, vd) = (
            self.stream.clone_htod(q)?,
            self.stream.clone_htod(keys)?,
            self.stream.clone_htod(values)?,
        );
        let mut out = self.stream.alloc_zeros::<f32>(shape.out_len())?;
        self.decode_attention(
            shape,
            &qd.as_view(),
            &kd.as_view(),
            &vd.as_view(),
            &mut out.as_view_mut(),
        )?;
        Ok(self.stream.clone_dtoh(&out)?)
    }

    fn rms_norm(&self, x: &[f32], weight: &[f32], eps: f32) -> Result<Vec<f32>> {
        let cols = weight.len();
        if cols == 0 || !x.len().is_multiple_of(cols) {
            return Err(KernelError::Shape(format!(
                "rms_norm: {} values are not rows of {cols}",
                x.len()
            )));
        }
        let (xd, wd) = (self.stream.clone_htod(x)?, self.stream.clone_htod(weight)?);
        let mut y = self.stream.alloc_zeros::<f32>(x.len().max(1))?;
        self.rms_norm(
            &xd.as_view(),
            &wd.as_view(),
            eps,
            x.len() / cols,
            &mut y.as_view_mut(),
        )?;
        let mut out = self.stream.clone_dtoh(&y)?;
        out.truncate(x.len());
        Ok(out)
    }

    fn rope_qk(
        &self,
        shape: RopeShape,
        inputs: crate::RopeInputs<'_>,
        keys: &mut [f32],
        values: &mut [f32],
    ) -> Result<Vec<f32>> {
        let up = |v: &[f32]| self.stream.clone_htod(v);
        let (q, k, v) = (up(inputs.q)?, up(inputs.k)?, up(inputs.v)?);
        let (cos, sin) = (up(inputs.cos)?, up(inputs.sin)?);
        let mut kc = up(keys)?;
        let mut vc = up(values)?;
        let norm = match inputs.qk_norm {
            Some((qn, kn, eps)) => Some((up(qn)?, up(kn)?, eps)),
            None => None,
        };
        let q_len = shape.rows * shape.heads * shape.head_dim;
        let mut q_out = self.stream.alloc_zeros::<f32>(q_len.max(1))?;
        let norm_views = norm
            .as_ref()
            .map(|(a, b, eps)| (a.as_view(), b.as_view(), *eps));
        self.rope_qk(
            shape,
            [&q.as_view(), &k.as_view(), &v.as_view()],
            [&cos.as_view(), &sin.as_view()],
            norm_views.as_ref().map(|(a, b, eps)| (a, b, *eps)),
            &mut q_out.as_view_mut(),
            &mut kc.as_view_mut(),
            &mut vc.as_view_mut(),
        )?;
        keys.copy_from_slice(&self.stream.clone_dtoh(&kc)?);
        values.copy_from_slice(&self.stream.clone_dtoh(&vc)?);
        let mut out = self.stream.clone_dtoh(&q_out)?;
        out.truncate(q_len);
        Ok(out)
    }

    fn copy(&self, src: &[f32], max_blocks: u32) -> Result<Vec<f32>> {
        let s = self.stream.clone_htod(src)?;
        let mut d = self.stream.alloc_zeros::<f32>(src.len().max(1))?;
        self.copy(&s.as_view(), &mut d.as_view_mut(), max_blocks)?;
        let mut out = self.stream.clone_dtoh(&d)?;
        out.truncate(src.len());
        Ok(out)
    }
}

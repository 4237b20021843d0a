//! Throughput of the engine's quantised matrix products on a model's real weights:
//! for each weight format in the model (its largest tensor of at most 8M weights, so
//! the product is of a layer's size, not the vocabulary's), `x · Wᵀ` with 1, 4, 16 and 128 activation rows, on
//! every CPU kernel this machine has. Prints one JSON object per line with
//! multiply-adds per second; driven by `benches/kernel_bench.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::Device;
use candle_core::quantized::gguf_file::Content;
use engine::model::quant_matmul::{Kernel, QuantWeight};

/// How long each measurement runs (after one warm-up product).
const MEASURE: Duration = Duration::from_millis(500);

/// Measurements per configuration; the fastest is reported (the least disturbed by
/// other work on the machine).
const REPEATS: usize = 3;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().context("usage: kernel_bench MODEL.gguf")?);
    let mut file = std::fs::File::open(&path).with_context(|| format!("{}", path.display()))?;
    let content = Content::read(&mut file)?;
    // One tensor per format: the largest of a layer's size (ties: first by name).
    let mut picked: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let info = &content.tensor_infos[name];
        let dims = info.shape.dims();
        let size = info.shape.elem_count();
        if dims.len() != 2 || size > 8 << 20 || !QuantWeight::supports(info.ggml_dtype) {
            continue;
        }
        let entry = picked
            .entry(format!("{:?}", info.ggml_dtype))
            .or_insert_with(|| (size, name.clone()));
        if size > entry.0 {
            *entry = (size, name.clone());
        }
    }
    let kernels: Vec<Kernel> = [Kernel::Scalar, Kernel::Avx2, Kernel::Avx512Vnni]
        .into_iter()
        .filter(|k| k.is_available())
        .collect();
    for (dtype, (_, name)) in picked {
        let qt = content.tensor(&mut file, &name, &Device::Cpu)?;
        let w = QuantWeight::from_qtensor(Arc::new(qt))?;
        let (out, inp) = (w.out_features(), w.in_features());
        for &kernel in &kernels {
            for rows in [1usize, 4, 16, 128] {
                if kernel == Kernel::Scalar && rows > 4 {
                    continue;
                }
                let x: Vec<f32> = (0..rows * inp)
                    .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                w.matmul_with(kernel, &x, rows)?;
                let mut secs = f64::INFINITY;
                for _ in 0..REPEATS {
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < MEASURE {
                        std::hint::black_box(w.matmul_with(kernel, &x, rows)?);
                        n += 1;
                    }
                    secs = secs.min(start.elapsed().as_secs_f64() / n as f64);
                }
                let macs = (rows * out * inp) as f64;
                println!(
                    "{}",
                    serde_json::json!({
                        "tensor": name, "format": dtype, "out": out, "in": inp,
                        "kernel": format!("{kernel:?}"), "rows": rows,
                        "gmac_s": macs / secs / 1e9,
                        "us_per_product": secs * 1e6,
                    })
                );
            }
        }
    }
    Ok(())
}

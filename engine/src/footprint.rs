//! How much memory a model needs: its weights as the engine keeps them, the
//! key/value state of its running sequences, its prefix cache and the working
//! memory of a forward pass, read from the model file's headers without loading
//! the weights. `souffleur plan` prints these figures and the server refuses a
//! configuration whose models together exceed the memory budget.
//!
//! ```no_run
//! use engine::footprint::{Footprint, FootprintSettings, ModelShape};
//!
//! let shape = ModelShape::inspect("model.gguf".as_ref())?;
//! let settings = FootprintSettings { max_active: 4, context_tokens: 4608, prefix_cache_bytes: 256 << 20 };
//! let footprint = Footprint::estimate(&shape, &settings);
//! println!("{} MiB", footprint.total() >> 20);
//! # Ok::<(), engine::EngineError>(())
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use crate::error::{EngineError, Result};
use crate::kv_cache::GROWTH;
use crate::model::config::ModelConfig;
use crate::model::gguf::GgufFile;
use crate::model::safetensors::{SafetensorsModel, weight_files};
use crate::model::{Model, ModelFormat, parameter_count};

/// Bytes of one cached key or value element: the engine's [`KvCache`](crate::kv_cache::KvCache) stores f32.
const KV_ELEMENT_BYTES: u64 = 4;

/// A model's shape and resident weight bytes, read from its file headers without
/// loading weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelShape {
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// Number of weights (embedding plus blocks).
    pub parameters: usize,
    /// Size of the model's files on disk (a GGUF file, or a safetensors
    /// directory's weights, `config.json` and `tokenizer.json`).
    pub file_bytes: u64,
    /// Bytes the engine keeps in memory for the weights once loaded on the CPU:
    /// quantised projections as GGUF blocks or regrouped for the AVX2 kernel,
    /// float tensors, norms and biases as f32, the embedding as stored (f32 when it
    /// is a float type), a tied output projection shared with it, and the rotary
    /// tables (`context_length × head_dim` f32).
    pub weights_bytes: u64,
    /// The storage types of the weights, the most common quantised one first:
    /// `"Q4K: 169 Q4K, 141 F32, 29 Q6K"`; `"F32"` for safetensors checkpoints.
    pub quantisation: String,
}

impl ModelShape {
    /// Reads the shape of the GGUF file or safetensors directory at `path` from its
    /// headers (fast: no weight is read).
    pub fn inspect(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        if meta.is_dir() {
            let st = SafetensorsModel::open_headers(path)?;
            let config = st.config()?;
            let weights_bytes = st.resident_weight_bytes()? + rotary_bytes(&config);
            Ok(Self {
                parameters: parameter_count(&config),
                file_bytes: files_bytes(path, ModelFormat::Safetensors)?,
                weights_bytes,
                quantisation: "F32".into(),
                config,
            })
        } else {
            let file = GgufFile::open(path, &Device::Cpu)?;
            let config = file.config()?;
            let weights_bytes = file.resident_weight_bytes(&config)? + rotary_bytes(&config);
            Ok(Self {
                parameters: parameter_count(&config),
                file_bytes: meta.len(),
                weights_bytes,
                quantisation: describe_types(&file.tensor_type_counts()),
                config,
            })
        }
    }

    /// The same figures for a loaded model, its weights' bytes counted in memory
    /// (`file_bytes` is 0 if its files can no longer be read).
    pub fn of(model: &Model) -> Self {
        let info = model.info();
        Self {
            config: info.config.clone(),
            parameters: info.parameters,
            file_bytes: files_bytes(&info.path, info.format).unwrap_or(0),
            weights_bytes: model.transformer().resident_bytes(),
            quantisation: match info.format {
                ModelFormat::Gguf => describe_types(&info.tensor_types),
                ModelFormat::Safetensors => "F32".into(),
            },
        }
    }

    /// Bytes of key/value state one token of context takes: layers × key/value
    /// heads × head width × 2 (keys and values) × 4 (the cache stores f32).
    pub fn kv_bytes_per_token(&self) -> u64 {
        let c = &self.config;
        (c.num_layers * c.num_kv_heads * c.head_dim) as u64 * 2 * KV_ELEMENT_BYTES
    }
}

/// How a model is served, for [`Footprint::estimate`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FootprintSettings {
    /// Sequences decoding at once (`scheduler.max_active`, or the users planned for).
    pub max_active: usize,
    /// Tokens of context of each sequence (prompt plus generated tokens).
    pub context_tokens: usize,
    /// Bytes of key/value state the prefix cache may keep.
    pub prefix_cache_bytes: u64,
}

/// The memory one served model needs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footprint {
    /// Weights as the engine keeps them ([`ModelShape::weights_bytes`]).
    pub weights: u64,
    /// Key/value state of 1,000 tokens of context.
    pub kv_per_1k_tokens: u64,
    /// Key/value state of `max_active` sequences of `context_tokens` each (the cache
    /// grows in steps of 256 positions, so each is rounded up to one).
    pub kv_cache: u64,
    /// The prefix cache's budget (it may be full while every sequence runs).
    pub prefix_cache: u64,
    /// Everything else: the process's fixed memory, the tokenizer's tables and the
    /// scratch memory of a forward pass (see [`Footprint::working_bytes`]).
    pub working: u64,
}

/// Working memory, calibrated against peak RSS (`benches/plan_accuracy.sh`,
/// BENCHMARKS.md 2026-12-07): the process's fixed memory (binary, runtime, server,
/// threads) and what the allocator keeps of transient buffers (a tensor's raw and
/// regrouped copies while loading, a sequence's old and new cache while it grows).
const RUNTIME_BYTES: u64 = 112 << 20;
/// Working memory per vocabulary entry: the tokenizer's tables (token strings,
/// merges, lookup maps).
const TOKENIZER_BYTES_PER_TOKEN: u64 = 300;
/// Rows of one forward pass the scratch memory is sized for: the scheduler's
/// default `max_batch_tokens`.
const BATCH_ROWS: u64 = 512;
/// Rows of one prefill chunk, whose attention scores span the whole context.
const CHUNK_ROWS: u64 = 128;

impl Footprint {
    /// The memory a model of `shape` needs when served with `settings`.
    pub fn estimate(shape: &ModelShape, settings: &FootprintSettings) -> Self {
        Self {
            weights: shape.weights_bytes,
            kv_per_1k_tokens: shape.kv_bytes_per_token() * 1000,
            kv_cache: (settings.max_active as u64)
                .saturating_mul(sequence_bytes(shape, settings.context_tokens)),
            prefix_cache: settings.prefix_cache_bytes,
            working: Self::working_bytes(shape, settings),
        }
    }

    /// Working memory besides weights and key/value state, an estimate calibrated by
    /// measurement rather than derived exactly: a fixed 112 MiB for the process and
    /// the allocator's retained transient buffers (one constant for every model,
    /// fitted so that the estimate of SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B is
    /// within 2 % of their measured peak RSS; see BENCHMARKS.md), 300
    /// bytes per vocabulary entry for the tokenizer, and the scratch tensors of a
    /// forward pass of 512 rows (the scheduler's default `max_batch_tokens`): four
    /// of model width and three of feed-forward width per row, attention scores of
    /// one 128-row prefill chunk against the whole context per head, and logits for
    /// each running sequence, all f32 and counted twice for the allocator's
    /// retained and in-flight copies.
    pub fn working_bytes(shape: &ModelShape, settings: &FootprintSettings) -> u64 {
        let c = &shape.config;
        let rows = BATCH_ROWS * (4 * c.hidden_size as u64 + 3 * c.intermediate_size as u64);
        let scores = CHUNK_ROWS * c.num_heads as u64 * settings.context_tokens as u64;
        let logits = settings.max_active as u64 * c.vocab_size as u64;
        RUNTIME_BYTES
            + c.vocab_size as u64 * TOKENIZER_BYTES_PER_TOKEN
            + (rows + scores + logits) * 4 * 2
    }

    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv_cache)
            .saturating_add(self.prefix_cache)
            .saturating_add(self.working)
    }

    /// How many sequences of `context_tokens` fit in `memory` bytes besides weights,
    /// prefix cache and working memory (working memory as for `max_active` of them).
    pub fn sequences_that_fit(
        shape: &ModelShape,
        settings: &FootprintSettings,
        memory: u64,
    ) -> usize {
        let fixed = Self::estimate(shape, settings);
        let left = memory
            .saturating_sub(fixed.weights)
            .saturating_sub(fixed.prefix_cache)
            .saturating_sub(fixed.working);
        match sequence_bytes(shape, settings.context_tokens) {
            0 => usize::MAX,
            per_sequence => usize::try_from(left / per_sequence).unwrap_or(usize::MAX),
        }
    }
}

/// Key/value bytes of one sequence of `context_tokens`, with the cache's growth step.
fn sequence_bytes(shape: &ModelShape, context_tokens: usize) -> u64 {
    let positions = context_tokens.div_ceil(GROWTH) * GROWTH;
    (positions as u64).saturating_mul(shape.kv_bytes_per_token())
}

/// Bytes of the rotary tables the transformer precomputes: cos and sin of
/// `context_length × head_dim / 2` angles, f32.
fn rotary_bytes(c: &ModelConfig) -> u64 {
    2 * (c.context_length * (c.head_dim / 2)) as u64 * 4
}

/// Total size of the model's files (those its identity is hashed from).
fn files_bytes(path: &Path, format: ModelFormat) -> Result<u64> {
    let files = match format {
        ModelFormat::Gguf => vec![path.to_path_buf()],
        ModelFormat::Safetensors => {
            let mut files = vec![path.join("config.json"), path.join("tokenizer.json")];
            files.extend(weight_files(path)?);
            files
        }
    };
    let mut total = 0;
    for f in files {
        total += std::fs::metadata(&f)
            .map_err(|e| EngineError::io(&f, e))?
            .len();
    }
    Ok(total)
}

/// `"Q4K: 169 Q4K, 141 F32, 29 Q6K"`: the most common quantised type (else the
/// most common type), then every type's count, most common first.
fn describe_types(counts: &[(String, usize)]) -> String {
    let mut sorted = counts.to_vec();
    sorted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let is_float = |t: &str| matches!(t, "F32" | "F16" | "BF16");
    let Some(main) = sorted
        .iter()
        .find(|(t, _)| !is_float(t))
        .or_else(|| sorted.first())
    else {
        return "unknown".into();
    };
    let list: Vec<String> = sorted.iter().map(|(t, n)| format!("{n} {t}")).collect();
    format!("{}: {}", main.0, list.join(", "))
}

/// The machine's physical memory (`MemTotal` of `/proc/meminfo`); `None` where
/// there is no such file.
pub fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_total(&text)
}

fn parse_mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let mut words = line.split_whitespace().skip(1);
    let value: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") | None => value.checked_mul(1024),
        Some(_) => None,
    }
}

/// Adds up the memory tensors hold, counting storage shared between weights (a
/// tied embedding) once.
#[derive(Debug, Default)]
pub(crate) struct HeldBytes {
    seen: HashSet<Held>,
    total: u64,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum Held {
    Pointer(usize),
    Tensor(candle_core::TensorId),
}

impl HeldBytes {
    /// Counts a quantised tensor's storage.
    pub(crate) fn qtensor(&mut self, q: &Arc<QTensor>) {
        if self.seen.insert(Held::Pointer(Arc::as_ptr(q) as usize)) {
            self.total += q.storage_size_in_bytes() as u64;
        }
    }

    /// Counts a dense tensor's elements.
    pub(crate) fn tensor(&mut self, t: &Tensor) {
        if self.seen.insert(Held::Tensor(t.id())) {
            self.total += (t.elem_count() * t.dtype().size_in_bytes()) as u64;
        }
    }

    /// Counts `bytes` owned by the object at `pointer`.
    pub(crate) fn once(&mut self, pointer: usize, bytes: u64) {
        if self.seen.insert(Held::Pointer(pointer)) {
            self.total += bytes;
        }
    }

    /// The bytes counted so far.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::{Architecture, MlpKind, NormKind, RopeStyle};
    use std::path::PathBuf;

    /// SmolLM2-135M's shape.
    fn smollm2() -> ModelShape {
        ModelShape {
            config: ModelConfig {
                arch: Architecture::Llama,
                vocab_size: 49152,
                hidden_size: 576,
                num_layers: 30,
                num_heads: 9,
                num_kv_heads: 3,
                head_dim: 64,
                intermediate_size: 1536,
                rope_theta: 100_000.0,
                rope_style: RopeStyle::Interleaved,
                norm: NormKind::Rms,
                norm_eps: 1e-5,
                mlp: MlpKind::GatedSilu,
                context_length: 8192,
            },
            parameters: 134_515_008,
            file_bytes: 98_362_432,
            weights_bytes: 100 << 20,
            quantisation: "Q4_1".into(),
        }
    }

    #[test]
    fn kv_bytes_per_token_is_layers_heads_width_keys_values_and_f32() {
        // 30 layers × 3 kv heads × 64 × 2 (K and V) × 4 bytes.
        assert_eq!(smollm2().kv_bytes_per_token(), 46_080);
    }

    #[test]
    fn estimate_adds_weights_kv_cache_prefix_cache_and_working_memory() {
        let shape = smollm2();
        let settings = FootprintSettings {
            max_active: 4,
            context_tokens: 1000,
            prefix_cache_bytes: 64 << 20,
        };
        let f = Footprint::estimate(&shape, &settings);
        assert_eq!(f.weights, 100 << 20);
        assert_eq!(f.kv_per_1k_tokens, 46_080_000);
        // 1000 tokens take 1024 positions (the cache grows by 256).
        assert_eq!(f.kv_cache, 4 * 1024 * 46_080);
        assert_eq!(f.prefix_cache, 64 << 20);
        assert_eq!(f.working, Footprint::working_bytes(&shape, &settings));
        assert!(f.working > RUNTIME_BYTES);
        assert_eq!(
            f.total(),
            f.weights + f.kv_cache + f.prefix_cache + f.working
        );
    }

    #[test]
    fn sequences_that_fit_divides_what_is_left_by_one_sequence() {
        let shape = smollm2();
        let settings = FootprintSettings {
            max_active: 4,
            context_tokens: 1024,
            prefix_cache_bytes: 0,
        };
        let f = Footprint::estimate(&shape, &settings);
        let one = 1024 * shape.kv_bytes_per_token();
        let room = f.weights + f.working + 7 * one + one / 2;
        assert_eq!(Footprint::sequences_that_fit(&shape, &settings, room), 7);
        assert_eq!(
            Footprint::sequences_that_fit(&shape, &settings, f.weights),
            0
        );
        let estimate_fits = f.total();
        assert_eq!(
            Footprint::sequences_that_fit(&shape, &settings, estimate_fits),
            4
        );
    }

    #[test]
    fn mem_total_is_read_in_bytes() {
        let text = "MemFree:  100 kB\nMemTotal:       24500000 kB\n";
        assert_eq!(parse_mem_total(text), Some(24_500_000 * 1024));
        assert_eq!(parse_mem_total("nothing"), None);
        assert!(physical_memory().is_none_or(|m| m > 0));
    }

    #[test]
    fn types_are_described_by_the_main_quantisation() {
        let counts = [
            ("F32".to_string(), 141),
            ("Q4K".to_string(), 169),
            ("Q6K".to_string(), 29),
        ];
        assert_eq!(describe_types(&counts), "Q4K: 169 Q4K, 141 F32, 29 Q6K");
        assert_eq!(describe_types(&[("F32".into(), 3)]), "F32: 3 F32");
        assert_eq!(describe_types(&[]), "unknown");
    }

    fn fixture(rel: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny")
            .join(rel)
    }

    /// The header-only figures equal what the loaded model holds, for every
    /// format and architecture the fixtures cover.
    #[test]
    fn inspect_equals_the_loaded_model_on_the_tiny_fixtures() {
        for rel in ["qwen2-gguf/model.gguf", "llama", "qwen2", "starcoder2"] {
            let path = fixture(rel);
            let shape = ModelShape::inspect(&path).expect("inspect");
            let model = Model::load(&path).expect("load");
            assert_eq!(shape, ModelShape::of(&model), "{rel}");
            assert!(shape.weights_bytes > 0 && shape.file_bytes > 0, "{rel}");
        }
    }

    /// The real models, where installed (`~/.souffleur/models` or
    /// `$SOUFFLEUR_HOME/models`): the header figures equal the loaded model's, and
    /// the weights are close to the file's size (quantised blocks kept as they are,
    /// some regrouped a few per cent larger; norms and rotary tables in f32).
    #[test]
    fn inspect_equals_the_loaded_model_on_installed_models() {
        let home = std::env::var_os("SOUFFLEUR_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".souffleur")));
        let Some(models) = home.map(|h| h.join("models")) else {
            return;
        };
        for (file, layers, kv_heads, head_dim) in [
            ("SmolLM2-135M-Instruct.Q4_1.gguf", 30, 3, 64),
            ("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 24, 2, 64),
            ("qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 28, 2, 128),
        ] {
            let path = models.join(file);
            if !path.is_file() {
                eprintln!("skipped: {} is not installed", path.display());
                continue;
            }
            let shape = ModelShape::inspect(&path).expect("inspect");
            let c = &shape.config;
            assert_eq!(
                (c.num_layers, c.num_kv_heads, c.head_dim),
                (layers, kv_heads, head_dim)
            );
            assert_eq!(
                shape.kv_bytes_per_token(),
                (layers * kv_heads * head_dim * 2 * 4) as u64
            );
            let ratio = shape.weights_bytes as f64 / shape.file_bytes as f64;
            assert!(
                (0.9..1.25).contains(&ratio),
                "{file}: weights/file = {ratio}"
            );
            let model = Model::load(&path).expect("load");
            assert_eq!(shape, ModelShape::of(&model), "{file}");
        }
    }
}

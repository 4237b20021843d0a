//! Loading GGUF files: hyper-parameters, quantised weights and the embedded tokenizer.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, MlpKind, ModelConfig, NormKind, RopeStyle};
use super::layers::{Linear, Norm};
use super::weights::{Block, Embedding, Mlp, Weights};
use crate::error::{EngineError, Result};
use crate::tokenizer::GgufTokenizerSpec;

/// A GGUF file opened for reading.
pub struct GgufFile {
    path: std::path::PathBuf,
    content: Content,
    reader: BufReader<File>,
    device: Device,
}

impl GgufFile {
    /// Opens `path`, reads the header and checks that every tensor's data is present.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
        let actual = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
        let mut reader = BufReader::new(file);
        let content = Content::read(&mut reader).map_err(|e| {
            let msg = e.to_string();
            if let Some(rest) = msg.strip_prefix("unknown dtype for tensor ") {
                EngineError::UnsupportedQuantization {
                    path: path.to_path_buf(),
                    tensor: "(header)".into(),
                    dtype: format!("ggml type id {rest}"),
                }
            } else if actual < 64 || msg.contains("remaining") || msg.contains("failed to fill") {
                EngineError::Truncated {
                    path: path.to_path_buf(),
                    expected: 64,
                    actual,
                }
            } else {
                EngineError::invalid(path, format!("not a readable GGUF file: {msg}"))
            }
        })?;
        let mut expected = content.tensor_data_offset;
        for info in content.tensor_infos.values() {
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            expected = expected.max(content.tensor_data_offset + info.offset + bytes as u64);
        }
        if actual < expected {
            return Err(EngineError::Truncated {
                path: path.to_path_buf(),
                expected,
                actual,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            device: device.clone(),
        })
    }

    fn meta(&self, key: &str) -> Result<&Value> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| EngineError::invalid(&self.path, format!("missing metadata `{key}`")))
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key)?;
        v.to_u64()
            .map(|x| x as usize)
            .or_else(|_| v.to_u32().map(|x| x as usize))
            .or_else(|_| v.to_i32().map(|x| x as usize))
            .map_err(|_| {
                EngineError::invalid(&self.path, format!("metadata `{key}` is not an integer"))
            })
    }

    fn meta_f32(&self, key: &str) -> Result<f32> {
        self.meta(key)?.to_f32().map_err(|_| {
            EngineError::invalid(&self.path, format!("metadata `{key}` is not a float"))
        })
    }

    fn meta_str(&self, key: &str) -> Option<&str> {
        self.content
            .metadata
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(String::as_str)
    }

    /// The architecture name stored in `general.architecture`.
    pub fn architecture_name(&self) -> Result<String> {
        Ok(self
            .meta("general.architecture")?
            .to_string()
            .map_err(|_| {
                EngineError::invalid(&self.path, "`general.architecture` is not a string")
            })?
            .clone())
    }

    /// The model's display name from `general.name`, if any.
    pub fn display_name(&self) -> Option<String> {
        self.meta_str("general.name").map(str::to_string)
    }

    /// Counts tensors by quantisation type, for `model info`.
    pub fn tensor_type_counts(&self) -> Vec<(String, usize)> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for info in self.content.tensor_infos.values() {
            *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        counts.into_iter().collect()
    }

    /// Bytes the weights will hold in memory once [`GgufFile::weights`] has loaded
    /// them (on the CPU), from the tensor infos alone: quantised projections as the
    /// integer kernel keeps them (GGUF blocks, or regrouped; see
    /// [`QuantWeight::resident_bytes`](super::quant_matmul::QuantWeight)), float
    /// projections, norms and biases as f32, the embedding as stored (f32 when it is a
    /// float type) and a tied output projection sharing it unless it had to be
    /// dequantised. Keep in step with [`GgufFile::weights`]; a test compares the two.
    pub fn resident_weight_bytes(&self, cfg: &ModelConfig) -> Result<u64> {
        let float = |d: GgmlDType| matches!(d, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16);
        let info = |name: &str| {
            self.content
                .tensor_infos
                .get(name)
                .ok_or_else(|| EngineError::invalid(&self.path, format!("missing tensor `{name}`")))
        };
        let stored = |i: &candle_core::quantized::gguf_file::TensorInfo| {
            (i.shape.elem_count() / i.ggml_dtype.block_size() * i.ggml_dtype.type_size()) as u64
        };
        let dense = |name: &str| -> Result<u64> { Ok(info(name)?.shape.elem_count() as u64 * 4) };
        let linear = |prefix: &str| -> Result<u64> {
            let w = info(&format!("{prefix}.weight"))?;
            let (out, inp) = w.shape.dims2().map_err(|_| {
                EngineError::invalid(&self.path, format!("tensor `{prefix}.weight` is not 2-D"))
            })?;
            let weight = match super::quant_matmul::QuantWeight::resident_bytes(
                w.ggml_dtype,
                out,
                inp,
                false,
            ) {
                Some(n) => n,
                None if float(w.ggml_dtype) => w.shape.elem_count() as u64 * 4,
                None => stored(w),
            };
            let bias = format!("{prefix}.bias");
            Ok(weight + if self.has(&bias) { dense(&bias)? } else { 0 })
        };
        let embd = info("token_embd.weight")?;
        let embedding = if float(embd.ggml_dtype) {
            embd.shape.elem_count() as u64 * 4
        } else {
            stored(embd)
        };
        let lm_head = if self.has("output.weight") {
            linear("output")?
        } else if float(embd.ggml_dtype) {
            // The tied projection goes through candle's matmul, which dequantises
            // its own f32 copy.
            embd.shape.elem_count() as u64 * 4
        } else {
            0
        };
        let mut total = embedding + lm_head + dense("output_norm.weight")?;
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            total +=
                dense(&format!("{p}.attn_norm.weight"))? + dense(&format!("{p}.ffn_norm.weight"))?;
            for part in [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ] {
                total += linear(&format!("{p}.{part}"))?;
            }
        }
        Ok(total)
    }

    /// Reads hyper-parameters from metadata.
    pub fn config(&self) -> Result<ModelConfig> {
        let name = self.architecture_name()?;
        let arch = match Architecture::from_name(&name) {
            Some(a @ (Architecture::Llama | Architecture::Qwen2)) => a,
            _ => {
                return Err(EngineError::UnsupportedArchitecture {
                    path: self.path.clone(),
                    arch: name,
                });
            }
        };
        let p = |k: &str| format!("{name}.{k}");
        let hidden_size = self.meta_usize(&p("embedding_length"))?;
        let num_heads = self.meta_usize(&p("attention.head_count"))?;
        let num_kv_heads = self
            .meta_usize(&p("attention.head_count_kv"))
            .unwrap_or(num_heads);
        let head_dim = self
            .meta_usize(&p("rope.dimension_count"))
            .unwrap_or(hidden_size / num_heads.max(1));
        if num_heads == 0 || num_kv_heads == 0 || !num_heads.is_multiple_of(num_kv_heads) {
            return Err(EngineError::invalid(
                &self.path,
                format!("inconsistent head counts: {num_heads} heads, {num_kv_heads} kv heads"),
            ));
        }
        let vocab_size = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => {
                return Err(EngineError::invalid(
                    &self.path,
                    "missing tensor token_embd.weight",
                ));
            }
        };
        Ok(ModelConfig {
            arch,
            vocab_size,
            hidden_size,
            num_layers: self.meta_usize(&p("block_count"))?,
            num_heads,
            num_kv_heads,
            head_dim,
            intermediate_size: self.meta_usize(&p("feed_forward_length"))?,
            rope_theta: self.meta_f32(&p("rope.freq_base")).unwrap_or(10_000.0),
            rope_style: match arch {
                Architecture::Llama => RopeStyle::Interleaved,
                _ => RopeStyle::Halves,
            },
            norm: NormKind::Rms,
            norm_eps: self
                .meta_f32(&p("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f64,
            mlp: MlpKind::GatedSilu,
            context_length: self.meta_usize(&p("context_length")).unwrap_or(4096),
        })
    }

    /// Reads the tokenizer description from metadata.
    pub fn tokenizer_spec(&self) -> Result<GgufTokenizerSpec> {
        let strings = |key: &str| -> Result<Vec<String>> {
            self.meta(key)?
                .to_vec()
                .map_err(|_| EngineError::invalid(&self.path, format!("`{key}` is not an array")))?
                .iter()
                .map(|v| {
                    v.to_string().cloned().map_err(|_| {
                        EngineError::invalid(&self.path, format!("`{key}` holds a non-string"))
                    })
                })
                .collect()
        };
        let token_types = match self.content.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| EngineError::invalid(&self.path, "token_type is not an array"))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => Vec::new(),
        };
        let id = |key: &str| self.meta_usize(key).ok().map(|x| x as u32);
        Ok(GgufTokenizerSpec {
            model: self
                .meta_str("tokenizer.ggml.model")
                .unwrap_or("none")
                .to_string(),
            pre: self.meta_str("tokenizer.ggml.pre").map(str::to_string),
            tokens: strings("tokenizer.ggml.tokens")?,
            merges: strings("tokenizer.ggml.merges").unwrap_or_default(),
            token_types,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: self
                .content
                .metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.to_bool().ok())
                .unwrap_or(false),
            chat_template: self.meta_str("tokenizer.chat_template").map(str::to_string),
        })
    }

    fn qtensor(&mut self, name: &str) -> Result<QTensor> {
        let t = self
            .content
            .tensor(&mut self.reader, name, &self.device)
            .map_err(|e| EngineError::invalid(&self.path, format!("tensor `{name}`: {e}")))?;
        match t.dtype() {
            GgmlDType::F32
            | GgmlDType::F16
            | GgmlDType::BF16
            | GgmlDType::Q4_0
            | GgmlDType::Q4_1
            | GgmlDType::Q5_0
            | GgmlDType::Q5_1
            | GgmlDType::Q8_0
            | GgmlDType::Q2K
            | GgmlDType::Q3K
            | GgmlDType::Q4K
            | GgmlDType::Q5K
            | GgmlDType::Q6K
            | GgmlDType::Q8K => Ok(t),
            other => Err(EngineError::UnsupportedQuantization {
                path: self.path.clone(),
                tensor: name.to_string(),
                dtype: format!("{other:?}"),
            }),
        }
    }

    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn dense(&mut self, name: &str) -> Result<Tensor> {
        Ok(self
            .qtensor(name)?
            .dequantize(&self.device)?
            .to_dtype(DType::F32)?)
    }

    fn linear(&mut self, prefix: &str) -> Result<Linear> {
        let w = Arc::new(self.qtensor(&format!("{prefix}.weight"))?);
        let bias_name = format!("{prefix}.bias");
        let b = if self.has(&bias_name) {
            Some(self.dense(&bias_name)?)
        } else {
            None
        };
        Linear::from_qtensor(w, b)
    }

    fn norm(&mut self, name: &str, cfg: &ModelConfig) -> Result<Norm> {
        Ok(Norm::new(cfg.norm, self.dense(name)?, None, cfg.norm_eps))
    }

    /// Reads all weights of a llama/qwen2-style model.
    pub fn weights(&mut self, cfg: &ModelConfig) -> Result<Weights> {
        let embd = Arc::new(self.qtensor("token_embd.weight")?);
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("blk.{i}");
            blocks.push(Block {
                attn_norm: self.norm(&format!("{p}.attn_norm.weight"), cfg)?,
                q: self.linear(&format!("{p}.attn_q"))?,
                k: self.linear(&format!("{p}.attn_k"))?,
                v: self.linear(&format!("{p}.attn_v"))?,
                o: self.linear(&format!("{p}.attn_output"))?,
                mlp_norm: self.norm(&format!("{p}.ffn_norm.weight"), cfg)?,
                mlp: Mlp::GatedSilu {
                    gate: self.linear(&format!("{p}.ffn_gate"))?,
                    up: self.linear(&format!("{p}.ffn_up"))?,
                    down: self.linear(&format!("{p}.ffn_down"))?,
                },
            });
        }
        let final_norm = self.norm("output_norm.weight", cfg)?;
        let lm_head = if self.has("output.weight") {
            self.linear("output")?
        } else {
            Linear::from_qtensor(embd.clone(), None)?
        };
        let embedding = match embd.dtype() {
            GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => {
                Embedding::Dense(embd.dequantize(&self.device)?.to_dtype(DType::F32)?)
            }
            _ => Embedding::Quantized(embd),
        };
        Ok(Weights {
            embedding,
            blocks,
            final_norm,
            lm_head,
        })
    }
}

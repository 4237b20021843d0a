//! Loading Hugging Face checkpoints: `config.json` plus `*.safetensors`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use serde::Deserialize;

use super::config::{Architecture, MlpKind, ModelConfig, NormKind, RopeStyle};
use super::layers::{Linear, Norm};
use super::weights::{Block, Embedding, Mlp, Weights};
use crate::error::{EngineError, Result};

/// The fields of a Hugging Face `config.json` the engine uses.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    intermediate_size: usize,
    head_dim: Option<usize>,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f64>,
    norm_epsilon: Option<f64>,
    max_position_embeddings: Option<usize>,
    #[serde(default)]
    tie_word_embeddings: bool,
    attention_bias: Option<bool>,
    use_bias: Option<bool>,
}

/// A checkpoint directory with its parsed configuration and tensors.
pub struct SafetensorsModel {
    dir: PathBuf,
    tensors: HashMap<String, Tensor>,
    hf: HfConfig,
}

/// The `*.safetensors` files of a checkpoint directory, sorted.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| EngineError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(EngineError::invalid(
            dir,
            "no *.safetensors files in the directory",
        ));
    }
    Ok(files)
}

impl SafetensorsModel {
    /// Reads `config.json` and every weight file in `dir`.
    pub fn open(dir: &Path, device: &Device) -> Result<Self> {
        let hf = read_hf_config(dir)?;
        let mut tensors = HashMap::new();
        for file in weight_files(dir)? {
            let loaded = candle_core::safetensors::load(&file, device)
                .map_err(|e| EngineError::invalid(&file, e.to_string()))?;
            tensors.extend(loaded);
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors,
            hf,
        })
    }

    /// Reads `config.json` only (no weights): enough for [`SafetensorsModel::config`]
    /// and [`SafetensorsModel::resident_weight_bytes`].
    pub fn open_headers(dir: &Path) -> Result<Self> {
        Ok(Self {
            dir: dir.to_path_buf(),
            tensors: HashMap::new(),
            hf: read_hf_config(dir)?,
        })
    }

    /// Bytes the weights will hold in memory once loaded, from the weight files'
    /// headers alone: every tensor the loader keeps, converted to f32 (an untied
    /// `lm_head.weight` included, a tied one and unused buffers such as rotary
    /// `inv_freq` not).
    pub fn resident_weight_bytes(&self) -> Result<u64> {
        let mut total = 0u64;
        for file in weight_files(&self.dir)? {
            for (name, elems) in tensor_sizes(&file)? {
                let kept = name.starts_with("model.") && !name.ends_with("inv_freq")
                    || name == "lm_head.weight" && !self.hf.tie_word_embeddings;
                if kept {
                    total += elems * 4;
                }
            }
        }
        Ok(total)
    }

    /// Hyper-parameters from `config.json`.
    pub fn config(&self) -> Result<ModelConfig> {
        let hf = &self.hf;
        let arch = Architecture::from_name(&hf.model_type).ok_or_else(|| {
            EngineError::UnsupportedArchitecture {
                path: self.dir.join("config.json"),
                arch: hf.model_type.clone(),
            }
        })?;
        let num_kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if hf.num_attention_heads == 0
            || num_kv_heads == 0
            || !hf.num_attention_heads.is_multiple_of(num_kv_heads)
        {
            return Err(EngineError::invalid(
                &self.dir,
                "inconsistent attention head counts",
            ));
        }
        let starcoder = arch == Architecture::Starcoder2;
        Ok(ModelConfig {
            arch,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            num_layers: hf.num_hidden_layers,
            num_heads: hf.num_attention_heads,
            num_kv_heads,
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads),
            intermediate_size: hf.intermediate_size,
            rope_theta: hf.rope_theta.unwrap_or(10_000.0),
            rope_style: RopeStyle::Halves,
            norm: if starcoder {
                NormKind::Layer
            } else {
                NormKind::Rms
            },
            norm_eps: hf.rms_norm_eps.or(hf.norm_epsilon).unwrap_or(1e-5),
            mlp: if starcoder {
                MlpKind::Gelu
            } else {
                MlpKind::GatedSilu
            },
            context_length: hf.max_position_embeddings.unwrap_or(4096),
        })
    }

    fn take(&mut self, name: &str) -> Result<Tensor> {
        let t = self
            .tensors
            .remove(name)
            .ok_or_else(|| EngineError::invalid(&self.dir, format!("missing tensor `{name}`")))?;
        Ok(t.to_dtype(DType::F32)?)
    }

    fn maybe(&mut self, name: &str) -> Result<Option<Tensor>> {
        match self.tensors.remove(name) {
            Some(t) => Ok(Some(t.to_dtype(DType::F32)?)),
            None => Ok(None),
        }
    }

    fn linear(&mut self, prefix: &str, bias: bool) -> Result<Linear> {
        let w = self.take(&format!("{prefix}.weight"))?;
        let b = if bias {
            Some(self.take(&format!("{prefix}.bias"))?)
        } else {
            self.maybe(&format!("{prefix}.bias"))?
        };
        Ok(Linear::new(QMatMul::Tensor(w), b))
    }

    fn norm(&mut self, prefix: &str, cfg: &ModelConfig) -> Result<Norm> {
        let w = self.take(&format!("{prefix}.weight"))?;
        let b = self.maybe(&format!("{prefix}.bias"))?;
        Ok(Norm::new(cfg.norm, w, b, cfg.norm_eps))
    }

    /// Builds the weights, consuming the loaded tensors.
    pub fn weights(&mut self, cfg: &ModelConfig) -> Result<Weights> {
        let qkv_bias = match cfg.arch {
            Architecture::Qwen2 => true,
            Architecture::Starcoder2 => self.hf.use_bias.unwrap_or(true),
            Architecture::Llama => self.hf.attention_bias.unwrap_or(false),
        };
        let mlp_bias = cfg.arch == Architecture::Starcoder2 && self.hf.use_bias.unwrap_or(true);
        let o_bias = cfg.arch == Architecture::Starcoder2 && self.hf.use_bias.unwrap_or(true);
        let embed = self.take("model.embed_tokens.weight")?;
        let mut blocks = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("model.layers.{i}");
            let mlp = match cfg.mlp {
                MlpKind::GatedSilu => Mlp::GatedSilu {
                    gate: self.linear(&format!("{p}.mlp.gate_proj"), mlp_bias)?,
                    up: self.linear(&format!("{p}.mlp.up_proj"), mlp_bias)?,
                    down: self.linear(&format!("{p}.mlp.down_proj"), mlp_bias)?,
                },
                MlpKind::Gelu => Mlp::Gelu {
                    fc: self.linear(&format!("{p}.mlp.c_fc"), mlp_bias)?,
                    proj: self.linear(&format!("{p}.mlp.c_proj"), mlp_bias)?,
                },
            };
            blocks.push(Block {
                attn_norm: self.norm(&format!("{p}.input_layernorm"), cfg)?,
                q: self.linear(&format!("{p}.self_attn.q_proj"), qkv_bias)?,
                k: self.linear(&format!("{p}.self_attn.k_proj"), qkv_bias)?,
                v: self.linear(&format!("{p}.self_attn.v_proj"), qkv_bias)?,
                o: self.linear(&format!("{p}.self_attn.o_proj"), o_bias)?,
                mlp_norm: self.norm(&format!("{p}.post_attention_layernorm"), cfg)?,
                mlp,
            });
        }
        let final_norm = self.norm("model.norm", cfg)?;
        let lm_head = match self.maybe("lm_head.weight")? {
            Some(w) if !self.hf.tie_word_embeddings => Linear::new(QMatMul::Tensor(w), None),
            _ => Linear::new(QMatMul::Tensor(embed.clone()), None),
        };
        Ok(Weights {
            embedding: Embedding::Dense(embed),
            blocks,
            final_norm,
            lm_head,
        })
    }
}

/// Reads and parses `dir/config.json`.
fn read_hf_config(dir: &Path) -> Result<HfConfig> {
    let config_path = dir.join("config.json");
    let bytes = std::fs::read(&config_path).map_err(|e| EngineError::io(&config_path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| EngineError::invalid(&config_path, e.to_string()))
}

/// The name and element count of every tensor in a safetensors file, from its
/// header (an 8-byte little-endian length, then that many bytes of JSON).
fn tensor_sizes(file: &Path) -> Result<Vec<(String, u64)>> {
    use std::io::Read;
    let mut f = std::fs::File::open(file).map_err(|e| EngineError::io(file, e))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|e| EngineError::io(file, e))?;
    let len = u64::from_le_bytes(len);
    const MAX_HEADER: u64 = 100 << 20;
    if len > MAX_HEADER {
        return Err(EngineError::invalid(
            file,
            format!("safetensors header of {len} bytes"),
        ));
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header)
        .map_err(|e| EngineError::io(file, e))?;
    let header: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| EngineError::invalid(file, format!("safetensors header: {e}")))?;
    let mut out = Vec::with_capacity(header.len());
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let shape = info["shape"]
            .as_array()
            .ok_or_else(|| EngineError::invalid(file, format!("tensor `{name}` has no shape")))?;
        let mut elems = 1u64;
        for d in shape {
            let d = d.as_u64().ok_or_else(|| {
                EngineError::invalid(file, format!("tensor `{name}` has a bad shape"))
            })?;
            elems = elems.saturating_mul(d);
        }
        out.push((name, elems));
    }
    Ok(out)
}

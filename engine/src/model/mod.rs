//! Model files → a runnable [`Model`]: configuration, weights, tokenizer and identity.

pub mod attention;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod gguf;
pub mod layer_subset;
pub mod layers;
pub mod quant_matmul;
pub mod safetensors;
pub mod transformer;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::Device;

use crate::checksum::sha256_files;
use crate::error::{EngineError, Result};
use crate::fim::FimTemplate;
use crate::tokenizer::Tokenizer;
use config::ModelConfig;
use transformer::Transformer;

/// The on-disk format a model came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelFormat {
    /// A single GGUF file (weights and tokenizer).
    Gguf,
    /// A directory with `config.json`, `tokenizer.json` and `*.safetensors`.
    Safetensors,
}

/// Facts about a loaded model, for `model info`, `/v1/health` and logs.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Human-readable name.
    pub name: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// File format.
    pub format: ModelFormat,
    /// SHA-256 identity of the model's files.
    pub sha256: String,
    /// Hyper-parameters.
    pub config: ModelConfig,
    /// FIM template chosen from the vocabulary.
    pub fim: crate::fim::FimStyle,
    /// Tensor counts by storage type (GGUF only).
    pub tensor_types: Vec<(String, usize)>,
    /// Number of weights.
    pub parameters: usize,
    /// The device it computes on (`cpu`, or `cuda:N <name> (<arch> PTX)`).
    pub device: String,
    /// The kernels of its hot paths on that device.
    pub kernels: Vec<String>,
}

impl ModelInfo {
    /// The same facts with the device and kernels of `device` filled in.
    fn on(self, device: &Device) -> Self {
        let report = crate::device::report(device);
        Self {
            device: report.device,
            kernels: report.kernels,
            ..self
        }
    }
}

/// A model ready for inference.
pub struct Model {
    transformer: Transformer,
    tokenizer: Tokenizer,
    fim: FimTemplate,
    info: ModelInfo,
    /// The vocabulary as the grammar engine sees it (built on first use).
    grammars: crate::constraint::GrammarCell,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("info", &self.info).finish()
    }
}

/// Number of weights of a model of shape `cfg` (embedding plus blocks).
pub(crate) fn parameter_count(cfg: &ModelConfig) -> usize {
    let d = cfg.hidden_size;
    let kv = cfg.num_kv_heads * cfg.head_dim;
    let q = cfg.num_heads * cfg.head_dim;
    let mlp = match cfg.mlp {
        config::MlpKind::GatedSilu => 3 * d * cfg.intermediate_size,
        config::MlpKind::Gelu => 2 * d * cfg.intermediate_size,
    };
    cfg.vocab_size * d + cfg.num_layers * (d * q + 2 * d * kv + q * d + mlp)
}

impl Model {
    /// Loads a GGUF file, or a safetensors checkpoint directory, on the device
    /// [`crate::device::choose`] picks (the CPU unless built with CUDA support).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_on(path, &crate::device::choose()?)
    }

    /// Loads a model onto `device`.
    pub fn load_on(path: &Path, device: &Device) -> Result<Self> {
        Self::load_inner(path, device, None)
    }

    /// Loads a model whose SHA-256 the caller has already established (and checked
    /// against a pin), on the device [`crate::device::choose`] picks: the files are not
    /// hashed again.
    pub fn load_identified(path: &Path, sha256: String) -> Result<Self> {
        Self::load_inner(path, &crate::device::choose()?, Some(sha256))
    }

    fn load_inner(path: &Path, device: &Device, sha256: Option<String>) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| EngineError::io(path, e))?;
        let mut model = if meta.is_dir() {
            Self::load_safetensors(path, device, sha256.is_none())?
        } else {
            Self::load_gguf(path, device, sha256.is_none())?
        };
        if let Some(sha256) = sha256 {
            model.info.sha256 = sha256;
        }
        Ok(model)
    }

    fn load_gguf(path: &Path, device: &Device, hash: bool) -> Result<Self> {
        let mut file = gguf::GgufFile::open(path, device)?;
        let config = file.config()?;
        let tokenizer = Tokenizer::from_gguf(&file.tokenizer_spec()?)?;
        let weights = file.weights(&config)?;
        let fim = FimTemplate::detect(&tokenizer);
        let info = ModelInfo {
            name: file.display_name().unwrap_or_else(|| file_stem(path)),
            path: path.to_path_buf(),
            format: ModelFormat::Gguf,
            sha256: if hash {
                sha256_files(&[path])?
            } else {
                String::new()
            },
            parameters: parameter_count(&config),
            config: config.clone(),
            fim: fim.style(),
            tensor_types: file.tensor_type_counts(),
            device: String::new(),
            kernels: Vec::new(),
        }
        .on(device);
        Ok(Self {
            transformer: Transformer::new(config, weights, device)?,
            tokenizer,
            fim,
            info,
            grammars: Default::default(),
        })
    }

    fn load_safetensors(dir: &Path, device: &Device, hash: bool) -> Result<Self> {
        let mut st = safetensors::SafetensorsModel::open(dir, device)?;
        let config = st.config()?;
        let tokenizer_path = dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
        let weights = st.weights(&config)?;
        let fim = FimTemplate::detect(&tokenizer);
        let mut files = vec![dir.join("config.json"), tokenizer_path];
        files.extend(safetensors::weight_files(dir)?);
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let info = ModelInfo {
            name: file_stem(dir),
            path: dir.to_path_buf(),
            format: ModelFormat::Safetensors,
            sha256: if hash {
                sha256_files(&refs)?
            } else {
                String::new()
            },
            parameters: parameter_count(&config),
            config: config.clone(),
            fim: fim.style(),
            tensor_types: Vec::new(),
            device: String::new(),
            kernels: Vec::new(),
        }
        .on(device);
        Ok(Self {
            transformer: Transformer::new(config, weights, device)?,
            tokenizer,
            fim,
            info,
            grammars: Default::default(),
        })
    }

    /// Compiles `spec` into a [`Constraint`](crate::constraint::Constraint) for this
    /// model's vocabulary (for [`GenerationRequest::constraint`](crate::GenerationRequest)).
    /// A schema or grammar that cannot be enforced is an
    /// [`EngineError::InvalidRequest`](crate::EngineError) naming what is unsupported.
    pub fn constraint(
        &self,
        spec: &crate::constraint::GrammarSpec,
    ) -> Result<crate::constraint::Constraint> {
        crate::constraint::Constraint::compile(&self.grammars, &self.tokenizer, spec)
    }

    /// Facts about the model.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The network itself.
    pub fn transformer(&self) -> &Transformer {
        &self.transformer
    }

    /// The model's FIM template.
    pub fn fim(&self) -> &FimTemplate {
        &self.fim
    }

    /// Prompt ids for completing between `prefix` and `suffix` in a file of a repository,
    /// in the model's repository-level format (see [`FimTemplate::build_in_repo`];
    /// models without one get [`completion_prompt`](Self::completion_prompt)).
    pub fn completion_prompt_in_repo(
        &self,
        repo: &crate::fim::RepoContext<'_>,
        prefix: &str,
        suffix: &str,
    ) -> Result<Vec<u32>> {
        if !self.fim.has_repo_format() {
            return self.completion_prompt(prefix, suffix);
        }
        self.fim
            .build_in_repo(&self.tokenizer, repo, prefix, suffix)
    }

    /// Prompt ids for completing between `prefix` and `suffix` (prefix-only models ignore the suffix).
    pub fn completion_prompt(&self, prefix: &str, suffix: &str) -> Result<Vec<u32>> {
        let mut ids = self.fim.build(&self.tokenizer, prefix, suffix)?;
        if ids.is_empty() {
            // Nothing to condition on: start a fresh document.
            ids.extend(self.tokenizer.bos().or(self.tokenizer.eos()));
        }
        Ok(ids)
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .or_else(|| path.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into())
}

//! Hyper-parameters of a decoder-only transformer, independent of file format.

/// How rotary position embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (GGUF llama weights, which llama.cpp converts to this layout).
    Interleaved,
    /// First half with second half (Hugging Face checkpoints, GGUF qwen2).
    Halves,
}

/// Normalisation layer type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormKind {
    /// RMSNorm with a weight.
    Rms,
    /// LayerNorm with weight and bias.
    Layer,
}

/// Feed-forward block type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MlpKind {
    /// `down(silu(gate(x)) * up(x))` as in llama and qwen2.
    GatedSilu,
    /// `proj(gelu_tanh(fc(x)))` as in starcoder2.
    Gelu,
}

/// Architecture family, as named by the model files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Meta's llama and derivatives (SmolLM, CodeLlama, DeepSeek-Coder).
    Llama,
    /// Alibaba's Qwen2 / Qwen2.5(-Coder).
    Qwen2,
    /// BigCode's StarCoder2.
    Starcoder2,
}

impl Architecture {
    /// Parses the name used in GGUF metadata or `config.json` `model_type`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "llama" | "mistral" => Some(Self::Llama),
            "qwen2" => Some(Self::Qwen2),
            "starcoder2" => Some(Self::Starcoder2),
            _ => None,
        }
    }

    /// The canonical lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Qwen2 => "qwen2",
            Self::Starcoder2 => "starcoder2",
        }
    }
}

/// Shape and numerics of a model: everything the forward pass needs besides weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Architecture family.
    pub arch: Architecture,
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when smaller than `num_heads`).
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Inner width of the feed-forward block.
    pub intermediate_size: usize,
    /// Rotary embedding base.
    pub rope_theta: f32,
    /// Rotary pairing convention of the weights.
    pub rope_style: RopeStyle,
    /// Normalisation type.
    pub norm: NormKind,
    /// Normalisation epsilon.
    pub norm_eps: f64,
    /// Feed-forward type.
    pub mlp: MlpKind,
    /// Longest sequence the model was trained for.
    pub context_length: usize,
}

//! Fill-in-the-middle prompt templates, chosen from a model's vocabulary.

use crate::error::Result;
use crate::tokenizer::Tokenizer;

/// The FIM convention a model was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FimStyle {
    /// `<fim_prefix>P<fim_suffix>S<fim_middle>` (StarCoder, StarCoder2, SantaCoder).
    StarCoder,
    /// `<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>` (Qwen2.5-Coder).
    Qwen,
    /// `▁<PRE> P ▁<SUF>S ▁<MID>` (CodeLlama).
    CodeLlama,
    /// `<｜fim▁begin｜>P<｜fim▁hole｜>S<｜fim▁end｜>` (DeepSeek-Coder).
    DeepSeek,
    /// `[SUFFIX]S[PREFIX]P` (Codestral).
    Codestral,
    /// No FIM tokens: the prefix alone is continued.
    PrefixOnly,
}

impl FimStyle {
    /// A short name for logs and `model info`.
    pub fn name(self) -> &'static str {
        match self {
            Self::StarCoder => "starcoder",
            Self::Qwen => "qwen",
            Self::CodeLlama => "codellama",
            Self::DeepSeek => "deepseek",
            Self::Codestral => "codestral",
            Self::PrefixOnly => "prefix-only",
        }
    }
}

/// A FIM template with its marker token ids resolved.
#[derive(Debug, Clone)]
pub struct FimTemplate {
    style: FimStyle,
    /// Marker ids in template order (prefix, suffix, middle); empty for prefix-only.
    markers: Vec<u32>,
}

const CANDIDATES: &[(FimStyle, [&str; 3])] = &[
    (
        FimStyle::Qwen,
        ["<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"],
    ),
    (
        FimStyle::StarCoder,
        ["<fim_prefix>", "<fim_suffix>", "<fim_middle>"],
    ),
    (
        FimStyle::CodeLlama,
        ["\u{2581}<PRE>", "\u{2581}<SUF>", "\u{2581}<MID>"],
    ),
    (
        FimStyle::DeepSeek,
        [
            "<\u{ff5c}fim\u{2581}begin\u{ff5c}>",
            "<\u{ff5c}fim\u{2581}hole\u{ff5c}>",
            "<\u{ff5c}fim\u{2581}end\u{ff5c}>",
        ],
    ),
    (FimStyle::Codestral, ["[PREFIX]", "[SUFFIX]", "[MIDDLE]"]),
];

impl FimTemplate {
    /// Picks the template whose marker tokens all exist in the vocabulary.
    pub fn detect(tokenizer: &Tokenizer) -> Self {
        for (style, names) in CANDIDATES {
            let ids: Option<Vec<u32>> = names.iter().map(|n| tokenizer.token_id(n)).collect();
            if let Some(markers) = ids {
                return Self {
                    style: *style,
                    markers,
                };
            }
        }
        Self::prefix_only()
    }

    /// The fallback that ignores the suffix.
    pub fn prefix_only() -> Self {
        Self {
            style: FimStyle::PrefixOnly,
            markers: Vec::new(),
        }
    }

    /// The detected style.
    pub fn style(&self) -> FimStyle {
        self.style
    }

    /// Whether the model can see the suffix.
    pub fn uses_suffix(&self) -> bool {
        self.style != FimStyle::PrefixOnly
    }

    /// Token ids of the prompt for completing between `prefix` and `suffix`.
    pub fn build(&self, tokenizer: &Tokenizer, prefix: &str, suffix: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        if tokenizer.add_bos() {
            ids.extend(tokenizer.bos());
        }
        let (pre, suf, mid) = match self.markers.as_slice() {
            [a, b, c] => (*a, *b, *c),
            _ => {
                ids.extend(tokenizer.encode(prefix)?);
                return Ok(ids);
            }
        };
        match self.style {
            // Codestral is suffix-first: [SUFFIX] S [PREFIX] P, and generates the middle.
            FimStyle::Codestral => {
                ids.push(suf);
                ids.extend(tokenizer.encode(suffix)?);
                ids.push(pre);
                ids.extend(tokenizer.encode(prefix)?);
            }
            FimStyle::CodeLlama => {
                ids.push(pre);
                ids.extend(tokenizer.encode(&format!(" {prefix}"))?);
                ids.push(suf);
                ids.extend(tokenizer.encode(&format!(" {suffix}"))?);
                ids.push(mid);
            }
            _ => {
                ids.push(pre);
                ids.extend(tokenizer.encode(prefix)?);
                ids.push(suf);
                ids.extend(tokenizer.encode(suffix)?);
                ids.push(mid);
            }
        }
        Ok(ids)
    }
}

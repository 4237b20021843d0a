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
    /// The repository-level markers, for models trained with them.
    repo: Option<RepoMarkers>,
}

/// Token ids of a model's repository-level format: `<|repo_name|>` and `<|file_sep|>`
/// (Qwen2.5-Coder), or `<repo_name>` and `<file_sep>` (StarCoder2).
#[derive(Debug, Clone, Copy)]
struct RepoMarkers {
    repo_name: u32,
    file_sep: u32,
    /// Qwen puts a newline after the repository name and after each file.
    newlines: bool,
}

/// A file shown to the model before the one being edited, in the repository-level format.
#[derive(Debug, Clone, Copy)]
pub struct RepoFile<'a> {
    /// Repository-relative path.
    pub path: &'a str,
    /// The file's text (or the part of it worth showing).
    pub text: &'a str,
}

/// Where a completion happens, for models with a repository-level format: the
/// repository's name, other files of it, and the path of the file being edited.
#[derive(Debug, Clone, Copy)]
pub struct RepoContext<'a> {
    /// Repository name.
    pub name: &'a str,
    /// Files shown before the current one.
    pub files: &'a [RepoFile<'a>],
    /// Repository-relative path of the file being edited.
    pub path: &'a str,
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
                let repo_names = match style {
                    FimStyle::Qwen => Some(("<|repo_name|>", "<|file_sep|>", true)),
                    FimStyle::StarCoder => Some(("<repo_name>", "<file_sep>", false)),
                    _ => None,
                };
                let repo = repo_names.and_then(|(r, f, newlines)| {
                    Some(RepoMarkers {
                        repo_name: tokenizer.token_id(r)?,
                        file_sep: tokenizer.token_id(f)?,
                        newlines,
                    })
                });
                return Self {
                    style: *style,
                    markers,
                    repo,
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
            repo: None,
        }
    }

    /// Whether the model has a repository-level format ([`build_in_repo`](Self::build_in_repo)).
    pub fn has_repo_format(&self) -> bool {
        self.repo.is_some()
    }

    /// Token ids of a prompt in the model's repository-level format: the repository's
    /// name, each context file after a file separator and its path, then the current
    /// file's path and the FIM prompt (Qwen2.5-Coder:
    /// `<|repo_name|>R\n<|file_sep|>a.py\n…\n<|file_sep|>b.py\n<|fim_prefix|>P<|fim_suffix|>S<|fim_middle|>`).
    /// Models without one get [`build`](Self::build) with the prefix alone.
    pub fn build_in_repo(
        &self,
        tokenizer: &Tokenizer,
        repo: &RepoContext<'_>,
        prefix: &str,
        suffix: &str,
    ) -> Result<Vec<u32>> {
        let Some(m) = self.repo else {
            return self.build(tokenizer, prefix, suffix);
        };
        let nl = if m.newlines { "\n" } else { "" };
        let mut ids = Vec::new();
        if tokenizer.add_bos() {
            ids.extend(tokenizer.bos());
        }
        ids.push(m.repo_name);
        ids.extend(tokenizer.encode(&format!("{}{nl}", repo.name))?);
        for f in repo.files {
            ids.push(m.file_sep);
            let text = f.text.strip_suffix('\n').unwrap_or(f.text);
            ids.extend(tokenizer.encode(&format!("{}\n{text}\n", f.path))?);
        }
        ids.push(m.file_sep);
        ids.extend(tokenizer.encode(&format!("{}\n", repo.path))?);
        // The FIM part, without a second BOS.
        let fim = self.build(tokenizer, prefix, suffix)?;
        let skip = usize::from(tokenizer.add_bos() && tokenizer.bos().is_some());
        ids.extend_from_slice(&fim[skip.min(fim.len())..]);
        Ok(ids)
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

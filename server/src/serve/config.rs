//! The server's TOML configuration: one file, every key optional, unknown keys rejected.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Everything `souffleur serve` can be configured with.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen.
    pub server: ServerSection,
    /// Which model to serve.
    pub model: ModelSection,
    /// Request limits.
    pub limits: LimitsSection,
    /// Completion behaviour.
    pub completion: CompletionSection,
    /// The code index used for context.
    pub index: IndexSection,
    /// What the audit log records.
    pub audit: AuditSection,
    /// The batching scheduler.
    pub scheduler: SchedulerSection,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to bind.
    pub host: IpAddr,
    /// Port to bind (0 picks a free one and prints it).
    pub port: u16,
    /// Serve without tokens (single user; loopback only).
    pub local: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 8347,
            local: false,
        }
    }
}

/// `[model]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    /// Model file or directory (default: the built-in default model).
    pub path: Option<PathBuf>,
    /// Expected SHA-256 of the model; the server refuses to start on a mismatch.
    pub sha256: Option<String>,
    /// A draft model for speculative decoding (same tokenizer, e.g. from
    /// `souffleur model make-draft`); needed by `speculation = "draft"`.
    pub draft: Option<PathBuf>,
    /// Expected SHA-256 of the draft model.
    pub draft_sha256: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest request body in bytes (413 above).
    pub max_body_bytes: usize,
    /// Most prompt tokens of one request (413 above).
    pub max_prompt_tokens: usize,
    /// Largest `max_tokens` a request may ask for (422 above).
    pub max_tokens: usize,
    /// Requests one token may have in flight at once (429 above).
    pub max_concurrent_per_token: usize,
    /// Longest prompt text in characters, refused (413) before it is tokenized
    /// (default: 16 × `max_prompt_tokens`).
    pub max_prompt_chars: Option<usize>,
    /// Bytes of prompt text being tokenized at once, over all requests; more waits.
    pub max_tokenizing_bytes: usize,
    /// Seconds a client has to send a request's headers; also how long an idle
    /// keep-alive connection is kept open.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body (408 after).
    pub body_timeout_secs: u64,
    /// Largest size of a request's headers in bytes (431 above).
    pub max_header_bytes: usize,
    /// Open connections one client address may hold; more are closed at once.
    pub max_connections_per_address: usize,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM before they are cut.
    pub shutdown_grace_secs: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_prompt_tokens: 4096,
            max_tokens: 512,
            max_concurrent_per_token: 8,
            max_prompt_chars: None,
            max_tokenizing_bytes: 4 << 20,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            max_header_bytes: 32 << 10,
            max_connections_per_address: 64,
            shutdown_grace_secs: 10,
        }
    }
}

impl LimitsSection {
    /// Longest prompt text in characters.
    pub fn prompt_chars(&self) -> usize {
        self.max_prompt_chars
            .unwrap_or(self.max_prompt_tokens.saturating_mul(16))
    }
}

/// `[completion]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompletionSection {
    /// Token budget of the text before the cursor.
    pub prefix_tokens: usize,
    /// Token budget of the text after the cursor (FIM models only; the suffix also ends
    /// before the next top-level item). It follows the prefix in the prompt, so it is
    /// prefilled again at every keystroke.
    pub suffix_tokens: usize,
    /// The suffix budget (at most `suffix_tokens`) while typing inside a line (single-line
    /// completions), where a short suffix keeps each keystroke's prefill small.
    pub single_line_suffix_tokens: usize,
    /// Token budget of retrieved and client-sent snippets.
    pub snippet_tokens: usize,
    /// New tokens for a single-line completion.
    pub single_line_tokens: usize,
    /// New tokens for a multi-line completion.
    pub multi_line_tokens: usize,
    /// Most lines of a multi-line completion.
    pub max_lines: usize,
    /// Show snippets to models that have a repository-level format (Qwen2.5-Coder,
    /// StarCoder2) in that format, as files of the repository (`true`), or as comments
    /// naming their paths, as for other models (`false`).
    pub repository_format: bool,
}

impl Default for CompletionSection {
    fn default() -> Self {
        Self {
            prefix_tokens: 768,
            suffix_tokens: 256,
            single_line_suffix_tokens: 64,
            snippet_tokens: 384,
            single_line_tokens: 32,
            multi_line_tokens: 96,
            max_lines: 12,
            repository_format: true,
        }
    }
}

/// `[index]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSection {
    /// Index directory (default: `<home>/index`); the server runs without one if absent.
    pub path: Option<PathBuf>,
}

/// `[audit]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Also store prompts and completions in the audit log (off: metadata only).
    pub store_code: bool,
}

/// `[scheduler]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSection {
    /// Most sequences decoding at once.
    pub max_active: usize,
    /// Most tokens in one forward pass.
    pub max_batch_tokens: usize,
    /// MiB of key/value state kept for prefix reuse.
    pub prefix_cache_mib: usize,
    /// Speculative decoding: `off`, `ngram`, `ngram:K` or `draft` (needs `model.draft`).
    pub speculation: String,
}

impl SchedulerSection {
    /// The parsed `speculation` setting.
    pub fn speculation(&self) -> Result<engine::Speculation> {
        engine::Speculation::parse(&self.speculation).ok_or_else(|| {
            anyhow::anyhow!(
                "`scheduler.speculation` must be `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft`, not `{}`",
                self.speculation
            )
        })
    }
}

impl Default for SchedulerSection {
    fn default() -> Self {
        Self {
            max_active: 16,
            max_batch_tokens: 512,
            prefix_cache_mib: 256,
            speculation: "ngram".into(),
        }
    }
}

impl Config {
    /// Reads and validates `path`; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        let positive = [
            ("limits.max_body_bytes", self.limits.max_body_bytes),
            ("limits.max_prompt_tokens", self.limits.max_prompt_tokens),
            ("limits.max_tokens", self.limits.max_tokens),
            (
                "limits.max_concurrent_per_token",
                self.limits.max_concurrent_per_token,
            ),
            ("limits.prompt_chars", self.limits.prompt_chars()),
            (
                "limits.max_tokenizing_bytes",
                self.limits.max_tokenizing_bytes,
            ),
            (
                "limits.header_timeout_secs",
                self.limits.header_timeout_secs as usize,
            ),
            (
                "limits.body_timeout_secs",
                self.limits.body_timeout_secs as usize,
            ),
            ("limits.max_header_bytes", self.limits.max_header_bytes),
            (
                "limits.max_connections_per_address",
                self.limits.max_connections_per_address,
            ),
            ("completion.prefix_tokens", self.completion.prefix_tokens),
            (
                "completion.single_line_tokens",
                self.completion.single_line_tokens,
            ),
            (
                "completion.multi_line_tokens",
                self.completion.multi_line_tokens,
            ),
            ("completion.max_lines", self.completion.max_lines),
            ("scheduler.max_active", self.scheduler.max_active),
            (
                "scheduler.max_batch_tokens",
                self.scheduler.max_batch_tokens,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                bail!("`{key}` must be greater than 0");
            }
        }
        if self.scheduler.max_batch_tokens < self.scheduler.max_active {
            bail!("`scheduler.max_batch_tokens` must be at least `scheduler.max_active`");
        }
        let budget = self.completion.prefix_tokens
            + self.completion.suffix_tokens
            + self.completion.snippet_tokens;
        if budget > self.limits.max_prompt_tokens {
            bail!(
                "`completion.prefix_tokens` + `completion.suffix_tokens` + `completion.snippet_tokens` ({budget}) exceed `limits.max_prompt_tokens` ({})",
                self.limits.max_prompt_tokens
            );
        }
        if self.scheduler.speculation()?.uses_draft_model() && self.model.draft.is_none() {
            bail!(
                "`scheduler.speculation = \"{}\"` needs `model.draft`",
                self.scheduler.speculation
            );
        }
        for (key, sum) in [
            ("model.sha256", &self.model.sha256),
            ("model.draft_sha256", &self.model.draft_sha256),
        ] {
            if let Some(sum) = sum
                && (sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                bail!("`{key}` must be 64 hex digits");
            }
        }
        if self.server.local && !self.server.host.is_loopback() {
            bail!(
                "`server.local` serves without tokens and only binds loopback, not {}",
                self.server.host
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_valid_and_loopback() {
        let c = Config::parse("").expect("defaults");
        assert!(c.server.host.is_loopback());
        assert!(!c.audit.store_code);
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("[limits]\nmax_tokenz = 3\n").expect_err("unknown key");
        assert!(format!("{err:#}").contains("max_tokenz"), "{err:#}");
    }

    #[test]
    fn wrong_types_name_the_key() {
        let err = Config::parse("[server]\nport = \"eighty\"\n").expect_err("bad type");
        assert!(format!("{err:#}").contains("port"), "{err:#}");
    }

    #[test]
    fn nonsense_values_are_refused() {
        let err = Config::parse("[limits]\nmax_tokens = 0\n").expect_err("zero");
        assert!(format!("{err:#}").contains("limits.max_tokens"));
        let err = Config::parse("[server]\nlocal = true\nhost = \"0.0.0.0\"\n").expect_err("local");
        assert!(format!("{err:#}").contains("loopback"));
        let err = Config::parse("[model]\nsha256 = \"abc\"\n").expect_err("sha");
        assert!(format!("{err:#}").contains("model.sha256"));
        let err =
            Config::parse("[scheduler]\nspeculation = \"draft\"\n").expect_err("no draft model");
        assert!(format!("{err:#}").contains("model.draft"), "{err:#}");
        let ok =
            Config::parse("[model]\ndraft = \"d.gguf\"\n[scheduler]\nspeculation = \"draft\"\n");
        assert!(ok.is_ok(), "{ok:?}");
    }
}

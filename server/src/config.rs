//! The server's TOML configuration: one file, every key optional, unknown keys rejected.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Why a configuration was refused; each names the file or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {}: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file was read but is not a valid configuration.
    #[error("invalid config file {}: {inner}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong in it.
        inner: Box<ConfigError>,
    },
    /// Not TOML, an unknown key or a value of the wrong type (the message names it).
    #[error("{0}")]
    Syntax(String),
    /// A value that parses but makes no sense (the message names the key).
    #[error("{0}")]
    Invalid(String),
}

/// Result of reading or checking a configuration.
pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(ConfigError::Invalid(format!($($arg)*)))
    };
}

/// Everything `souffleur serve` can be configured with.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where to listen.
    pub server: ServerSection,
    /// The one model to serve, for every role (a shorthand for a single `[[models]]`).
    pub model: ModelSection,
    /// `[[models]]`: several models, each named and serving roles.
    pub models: Vec<ModelEntry>,
    /// `[roles]`: which model serves a role by default.
    pub roles: RolesSection,
    /// `[memory]`: what all models together may use.
    pub memory: MemorySection,
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
    /// What the server logs and in which format.
    pub log: LogSection,
    /// The web console at `/admin`.
    pub console: ConsoleSection,
    /// `[auth]`: directory sign-in.
    pub auth: crate::directory::AuthSection,
}

/// `[console]`: the admins' web console at `/admin`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSection {
    /// Serve the console (off: `/admin` answers 404).
    pub enabled: bool,
    /// A session ends after this many seconds without a request.
    pub session_idle_secs: u64,
    /// A session ends this many seconds after sign-in, used or not.
    pub session_max_secs: u64,
    /// Failed sign-ins allowed per client address and minute.
    pub sign_in_attempts_per_minute: u32,
    /// Mark the session cookie `Secure` (set it when a TLS proxy fronts Souffleur; it is
    /// also set for requests that arrive with `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// Days of per-minute usage counts kept for the usage plots.
    pub usage_retention_days: u64,
    /// Directories under which the console may add git repositories to the index
    /// (empty: the console adds none; `souffleur index add` still can).
    pub repo_roots: Vec<PathBuf>,
}

impl Default for ConsoleSection {
    fn default() -> Self {
        Self {
            enabled: true,
            session_idle_secs: 30 * 60,
            session_max_secs: 12 * 3600,
            sign_in_attempts_per_minute: 5,
            secure_cookies: false,
            usage_retention_days: 90,
            repo_roots: Vec::new(),
        }
    }
}

/// `[log]`: the server's log on standard error.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// A `tracing` filter: `info`, `debug`, `server=debug,engine=info`, … (the
    /// environment variable `SOUFFLEUR_LOG` overrides it).
    pub level: String,
    /// `text` (one human-readable line per event) or `json` (one JSON object per line).
    pub format: LogFormat,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
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

/// What a model is used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelRole {
    /// Code completions (`/v1/completions`, Tabby's `/v1/completions`, the LSP).
    Completion,
    /// Chat (`/v1/chat/completions`).
    Chat,
    /// Pull-request review (`/v1/review`, `souffleur review`).
    Review,
}

impl ModelRole {
    /// Every role.
    pub const ALL: [ModelRole; 3] = [ModelRole::Completion, ModelRole::Chat, ModelRole::Review];

    /// The role's name in configuration and responses.
    pub fn name(self) -> &'static str {
        match self {
            ModelRole::Completion => "completion",
            ModelRole::Chat => "chat",
            ModelRole::Review => "review",
        }
    }
}

/// `[[models]]`: one model the server keeps loaded, under a name clients may use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    /// The id clients pass as `model` (letters, digits, `.`, `_`, `-`; unique).
    pub name: String,
    /// Model file or directory, or a catalogue name (`qwen2.5-coder-0.5b`); empty for
    /// a model on a remote backend.
    #[serde(default)]
    pub path: PathBuf,
    /// Expected SHA-256; the server refuses to load the model on a mismatch.
    pub sha256: Option<String>,
    /// What the model serves; the first model listing a role is its default unless
    /// `[roles]` names another.
    #[serde(default)]
    pub roles: Vec<ModelRole>,
    /// A draft model for speculative decoding (same tokenizer).
    pub draft: Option<PathBuf>,
    /// Expected SHA-256 of the draft model.
    pub draft_sha256: Option<String>,
    /// Speculative decoding for this model's requests (default: `scheduler.speculation`).
    pub speculation: Option<String>,
    /// Most sequences decoding at once (default: `scheduler.max_active`).
    pub max_active: Option<usize>,
    /// MiB of key/value state kept for prefix reuse (default: `scheduler.prefix_cache_mib`).
    pub prefix_cache_mib: Option<usize>,
    /// Unload the model after this many seconds without a request; the next request
    /// loads it again (default: kept loaded).
    pub unload_after_secs: Option<u64>,
    /// Who runs the model: `builtin` (the default: Souffleur's engine) or a remote
    /// engine (`llama.cpp-infill`, `openai-completions`, `openai-chat`, `ollama`)
    /// reached through `backend`.
    pub engine: Option<String>,
    /// `[models.backend]`: the replicas of a remote engine and how to reach them.
    pub backend: Option<crate::upstream::BackendSection>,
}

impl ModelEntry {
    /// The remote engine's kind, or `None` for the built-in engine.
    pub fn remote_kind(&self) -> Result<Option<crate::upstream::kind::Kind>> {
        match self.engine.as_deref() {
            None | Some("builtin") => Ok(None),
            Some(other) => serde_json::from_value(serde_json::Value::from(other))
                .map(Some)
                .map_err(|_| {
                    ConfigError::Invalid(format!(
                        "`engine` of model `{}` is `builtin`, `llama.cpp-infill`, `openai-completions`, `openai-chat` or `ollama`, not `{other}`",
                        self.name
                    ))
                }),
        }
    }

    /// The speculation setting this model's requests get by default.
    pub fn speculation<'a>(&'a self, scheduler: &'a SchedulerSection) -> &'a str {
        self.speculation
            .as_deref()
            .unwrap_or(&scheduler.speculation)
    }
}

/// `[roles]`: the default model of each role, by name.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RolesSection {
    /// Default model for completions.
    pub completion: Option<String>,
    /// Default model for chat.
    pub chat: Option<String>,
    /// Default model for reviews.
    pub review: Option<String>,
}

impl RolesSection {
    /// The model named for `role`, if any.
    pub fn get(&self, role: ModelRole) -> Option<&str> {
        match role {
            ModelRole::Completion => self.completion.as_deref(),
            ModelRole::Chat => self.chat.as_deref(),
            ModelRole::Review => self.review.as_deref(),
        }
    }
}

/// `[memory]`
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct MemorySection {
    /// MiB that all models together (weights, key/value state, prefix caches) may use;
    /// start-up and reloads refuse a configuration over it (default: the machine's
    /// physical memory).
    pub budget_mib: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct IndexSection {
    /// Index directory (default: `<home>/index`); the server runs without one if absent.
    pub path: Option<PathBuf>,
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Also store prompts and completions in the audit log (off: metadata only).
    pub store_code: bool,
    /// Delete rows older than this many days (checked hourly; unset: keep all).
    pub retention_days: Option<u64>,
}

/// `[scheduler]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
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
            ConfigError::Invalid(format!(
                "`scheduler.speculation` must be `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft`, not `{}`",
                self.speculation
            ))
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

/// Whether `sum` looks like a SHA-256 (64 hex digits).
fn is_sha256(sum: &str) -> bool {
    sum.len() == 64 && sum.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Config {
    /// The models to serve: `[[models]]`, or the one model of `[model]` (named after
    /// its file at start-up, `name` empty here) serving every role.
    pub fn served_models(&self) -> Vec<ModelEntry> {
        if !self.models.is_empty() {
            return self.models.clone();
        }
        vec![ModelEntry {
            name: String::new(),
            path: self.model.path.clone().unwrap_or_default(),
            sha256: self.model.sha256.clone(),
            roles: ModelRole::ALL.to_vec(),
            draft: self.model.draft.clone(),
            draft_sha256: self.model.draft_sha256.clone(),
            speculation: None,
            max_active: None,
            prefix_cache_mib: None,
            unload_after_secs: None,
            engine: None,
            backend: None,
        }]
    }

    /// The sections that differ between `self` and `other` and only take effect at a
    /// restart (everything but the models, their roles, the memory budget and the
    /// scheduler settings, which a reload applies).
    pub fn sections_differing(&self, other: &Config) -> Vec<String> {
        let mut differing = Vec::new();
        let mut check = |name: &str, same: bool| {
            if !same {
                differing.push(name.to_string());
            }
        };
        check("server", self.server == other.server);
        check("limits", self.limits == other.limits);
        check("completion", self.completion == other.completion);
        check("index", self.index == other.index);
        check("audit", self.audit == other.audit);
        check("log", self.log == other.log);
        differing
    }

    /// Whether the models come from `[[models]]` (named) rather than `[model]`.
    pub fn has_named_models(&self) -> bool {
        !self.models.is_empty()
    }

    /// Checks a model on a remote engine: a valid `backend`, roles its kind serves, and none
    /// of the built-in engine's settings (they would be silently meaningless).
    fn validate_remote(entry: &ModelEntry) -> Result<()> {
        let name = &entry.name;
        let Some(kind) = entry.remote_kind()? else {
            return Ok(());
        };
        let Some(backend) = &entry.backend else {
            invalid!(
                "model `{name}` runs on `{}`, which needs `[models.backend]` with its `replicas`",
                kind.name()
            );
        };
        backend.validate(kind, name).map_err(ConfigError::Invalid)?;
        let completes = entry.roles.contains(&ModelRole::Completion);
        if completes && kind.renders_fim() && backend.fim_template.is_none() {
            invalid!(
                "model `{name}`: a `{}` backend needs `backend.fim_template` (`qwen`, `starcoder`, `code-llama` or `deepseek`): Souffleur renders the prompt",
                kind.name()
            );
        }
        let builtin_only = [
            ("path", !entry.path.as_os_str().is_empty()),
            ("sha256", entry.sha256.is_some()),
            ("draft", entry.draft.is_some()),
            ("draft_sha256", entry.draft_sha256.is_some()),
            ("speculation", entry.speculation.is_some()),
            ("max_active", entry.max_active.is_some()),
            ("prefix_cache_mib", entry.prefix_cache_mib.is_some()),
            ("unload_after_secs", entry.unload_after_secs.is_some()),
        ];
        if let Some((key, _)) = builtin_only.iter().find(|(_, set)| *set) {
            invalid!(
                "`{key}` of model `{name}` is a setting of the built-in engine; the model runs on `{}` (use `backend.max_in_flight` for limits)",
                kind.name()
            );
        }
        let served = |r: &ModelRole| match r {
            ModelRole::Completion => kind.serves_completions(),
            ModelRole::Chat | ModelRole::Review => kind.serves_chat(),
        };
        if let Some(role) = entry.roles.iter().find(|r| !served(r)) {
            invalid!(
                "model `{name}` runs on `{}`, which serves {}, not `{}`",
                kind.name(),
                kind.role_names(),
                role.name()
            );
        }
        if entry.roles.is_empty() {
            invalid!(
                "model `{name}` on a remote backend needs its `roles` ({} on `{}`)",
                kind.role_names(),
                kind.name()
            );
        }
        Ok(())
    }

    fn validate_models(&self) -> Result<()> {
        let m = &self.model;
        let model_set = m.path.is_some() || m.sha256.is_some() || m.draft.is_some();
        if model_set && !self.models.is_empty() {
            invalid!("use either `[model]` (one model) or `[[models]]` (several), not both");
        }
        if self.models.is_empty()
            && let Some(role) = ModelRole::ALL
                .into_iter()
                .find(|r| self.roles.get(*r).is_some())
        {
            invalid!(
                "`roles.{}` names a model, but there is no `[[models]]`",
                role.name()
            );
        }
        for (key, sum) in [
            ("model.sha256", &m.sha256),
            ("model.draft_sha256", &m.draft_sha256),
        ] {
            if sum.as_deref().is_some_and(|s| !is_sha256(s)) {
                invalid!("`{key}` must be 64 hex digits");
            }
        }
        if self.models.is_empty() {
            if self.scheduler.speculation()?.uses_draft_model() && m.draft.is_none() {
                invalid!(
                    "`scheduler.speculation = \"{}\"` needs `model.draft`",
                    self.scheduler.speculation
                );
            }
            return Ok(());
        }
        self.scheduler.speculation()?;
        let mut names = std::collections::HashSet::new();
        for entry in &self.models {
            let name = &entry.name;
            let valid_name = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !valid_name {
                invalid!(
                    "`[[models]] name = \"{name}\"`: a name is 1 to 64 letters, digits, `.`, `_` or `-`"
                );
            }
            if !names.insert(name.as_str()) {
                invalid!("two `[[models]]` are named `{name}`");
            }
            if entry.remote_kind()?.is_some() {
                Self::validate_remote(entry)?;
                continue;
            }
            if entry.backend.is_some() {
                invalid!(
                    "model `{name}` has a `backend` but runs on the built-in engine: set `engine`"
                );
            }
            if entry.path.as_os_str().is_empty() {
                invalid!("model `{name}` needs a `path` (a file, a directory or a catalogue name)");
            }
            for (key, sum) in [
                ("sha256", &entry.sha256),
                ("draft_sha256", &entry.draft_sha256),
            ] {
                if sum.as_deref().is_some_and(|s| !is_sha256(s)) {
                    invalid!("`{key}` of model `{name}` must be 64 hex digits");
                }
            }
            let speculation = entry.speculation(&self.scheduler);
            match engine::Speculation::parse(speculation) {
                None => invalid!(
                    "`speculation` of model `{name}` must be `off`, `ngram`, `ngram:K` (K in 1..=32) or `draft`, not `{speculation}`"
                ),
                Some(s) if s.uses_draft_model() && entry.draft.is_none() => invalid!(
                    "model `{name}` speculates with `{speculation}`, which needs its `draft`"
                ),
                Some(_) => {}
            }
            if entry.max_active == Some(0) {
                invalid!("`max_active` of model `{name}` must be greater than 0");
            }
            if entry.max_active.unwrap_or(self.scheduler.max_active)
                > self.scheduler.max_batch_tokens
            {
                invalid!(
                    "`max_active` of model `{name}` must be at most `scheduler.max_batch_tokens`"
                );
            }
            if entry.unload_after_secs == Some(0) {
                invalid!("`unload_after_secs` of model `{name}` must be greater than 0");
            }
        }
        for role in ModelRole::ALL {
            if let Some(name) = self.roles.get(role) {
                let Some(entry) = self.models.iter().find(|e| e.name == name) else {
                    invalid!(
                        "`roles.{}` names `{name}`, which is not in `[[models]]`",
                        role.name()
                    );
                };
                if !entry.roles.contains(&role) {
                    invalid!(
                        "`roles.{0}` names `{name}`, whose `roles` do not include \"{0}\"",
                        role.name()
                    );
                }
            }
        }
        Ok(())
    }

    /// The name of `role`'s default model: `[roles]`, else the first of `[[models]]`
    /// serving it (None when no model serves it, or with `[model]`, whose one model
    /// serves every role).
    pub fn role_default(&self, role: ModelRole) -> Option<&str> {
        self.roles.get(role).or_else(|| {
            self.models
                .iter()
                .find(|e| e.roles.contains(&role))
                .map(|e| e.name.as_str())
        })
    }

    /// Reads and validates `path`; errors name the file and the offending key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Self::parse(&text).map_err(|inner| ConfigError::File {
            path: path.to_path_buf(),
            inner: Box::new(inner),
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        if let Some(ldap) = &self.auth.ldap {
            ldap.validate().map_err(ConfigError::Invalid)?;
        }
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
                "console.session_idle_secs",
                self.console.session_idle_secs as usize,
            ),
            (
                "console.session_max_secs",
                self.console.session_max_secs as usize,
            ),
            (
                "console.sign_in_attempts_per_minute",
                self.console.sign_in_attempts_per_minute as usize,
            ),
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
                invalid!("`{key}` must be greater than 0");
            }
        }
        if self.scheduler.max_batch_tokens < self.scheduler.max_active {
            invalid!("`scheduler.max_batch_tokens` must be at least `scheduler.max_active`");
        }
        let budget = self.completion.prefix_tokens
            + self.completion.suffix_tokens
            + self.completion.snippet_tokens;
        if budget > self.limits.max_prompt_tokens {
            invalid!(
                "`completion.prefix_tokens` + `completion.suffix_tokens` + `completion.snippet_tokens` ({budget}) exceed `limits.max_prompt_tokens` ({})",
                self.limits.max_prompt_tokens
            );
        }
        self.validate_models()?;
        if self.server.local && !self.server.host.is_loopback() {
            invalid!(
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

    const TWO_MODELS: &str = r#"
[[models]]
name = "coder-0.5b"
path = "qwen2.5-coder-0.5b"
roles = ["completion"]

[[models]]
name = "coder-1.5b"
path = "qwen2.5-coder-1.5b"
roles = ["chat", "review"]
speculation = "off"
"#;

    #[test]
    fn named_models_get_role_defaults() {
        let c = Config::parse(TWO_MODELS).expect("valid");
        assert!(c.has_named_models());
        assert_eq!(c.served_models().len(), 2);
        assert_eq!(c.role_default(ModelRole::Completion), Some("coder-0.5b"));
        assert_eq!(c.role_default(ModelRole::Chat), Some("coder-1.5b"));
        assert_eq!(c.role_default(ModelRole::Review), Some("coder-1.5b"));
        let c = Config::parse(&format!(
            "{TWO_MODELS}\n[[models]]\nname = \"chat-new\"\npath = \"x.gguf\"\nroles = [\"chat\"]\n\n[roles]\nchat = \"chat-new\"\n"
        ))
        .expect("valid");
        assert_eq!(c.role_default(ModelRole::Chat), Some("chat-new"));
        assert_eq!(c.role_default(ModelRole::Review), Some("coder-1.5b"));
    }

    const REMOTE: &str = r#"
[[models]]
name = "remote"
engine = "openai-completions"
roles = ["completion"]
[models.backend]
replicas = ["http://10.0.0.5:8000", "http://10.0.0.6:8000/"]
model = "Qwen/Qwen2.5-Coder-7B"
fim_template = "qwen"
api_key_env = "VLLM_KEY"
"#;

    #[test]
    fn remote_models_are_checked_for_what_they_can_do() {
        let c = Config::parse(REMOTE).expect("valid");
        let m = &c.served_models()[0];
        assert_eq!(
            m.remote_kind().expect("kind"),
            Some(crate::upstream::kind::Kind::OpenAiCompletions)
        );
        let backend = m.backend.as_ref().expect("backend");
        assert_eq!(backend.max_in_flight, 16);
        assert_eq!(backend.connect_timeout_ms, 1000);
        for (change, named) in [
            (
                ("engine = \"openai-completions\"", "engine = \"vllm\""),
                "`engine` of model `remote`",
            ),
            (
                ("http://10.0.0.5:8000\"", "https://10.0.0.5:8000\""),
                "http:// URL",
            ),
            (
                ("http://10.0.0.5:8000\"", "http://10.0.0.5:8000/v1\""),
                "base URL",
            ),
            (("fim_template = \"qwen\"\n", ""), "backend.fim_template"),
            (
                (
                    "roles = [\"completion\"]",
                    "roles = [\"completion\", \"chat\"]",
                ),
                "serves `completion`, not `chat`",
            ),
            (
                (
                    "engine = \"openai-completions\"",
                    "engine = \"openai-chat\"",
                ),
                "serves `chat` and `review`, not `completion`",
            ),
            (
                ("roles = [\"completion\"]", "roles = []"),
                "needs its `roles`",
            ),
            (
                (
                    "roles = [\"completion\"]",
                    "roles = [\"completion\"]\npath = \"m.gguf\"",
                ),
                "`path` of model `remote`",
            ),
            (
                (
                    "roles = [\"completion\"]",
                    "roles = [\"completion\"]\nmax_active = 4",
                ),
                "`max_active` of model `remote`",
            ),
            (
                (
                    "api_key_env = \"VLLM_KEY\"",
                    "api_key_env = \"K\"\napi_key_file = \"/k\"",
                ),
                "not both",
            ),
            (
                (
                    "[models.backend]\nreplicas = [\"http://10.0.0.5:8000\", \"http://10.0.0.6:8000/\"]",
                    "[models.backend]\nreplicas = []",
                ),
                "empty",
            ),
        ] {
            let text = REMOTE.replace(change.0, change.1);
            assert_ne!(text, REMOTE, "{change:?}");
            let err = Config::parse(&text).expect_err(named);
            assert!(format!("{err:#}").contains(named), "{named}: {err:#}");
        }
        for (engine, roles) in [
            ("openai-chat", "[\"chat\", \"review\"]"),
            ("ollama", "[\"chat\", \"review\"]"),
        ] {
            let text = format!(
                "[[models]]\nname = \"c\"\nengine = \"{engine}\"\nroles = {roles}\n[models.backend]\nreplicas = [\"http://h:1\"]\nmodel = \"m\"\n"
            );
            Config::parse(&text).unwrap_or_else(|e| panic!("{engine}: {e:#}"));
        }
        let err = Config::parse("[[models]]\nname = \"b\"\nroles = [\"completion\"]\n")
            .expect_err("no path");
        assert!(format!("{err:#}").contains("needs a `path`"), "{err:#}");
        let err = Config::parse(
            "[[models]]\nname = \"b\"\npath = \"m.gguf\"\n[models.backend]\nreplicas = [\"http://h:1\"]\n",
        )
        .expect_err("backend without engine");
        assert!(format!("{err:#}").contains("set `engine`"), "{err:#}");
    }

    #[test]
    fn one_model_serves_every_role() {
        let c = Config::parse("[model]\npath = \"m.gguf\"\n").expect("valid");
        let models = c.served_models();
        assert_eq!(models.len(), 1);
        assert_eq!(models[0].roles, ModelRole::ALL.to_vec());
        assert_eq!(models[0].path, PathBuf::from("m.gguf"));
        assert!(!c.has_named_models());
    }

    #[test]
    fn bad_model_lists_are_refused_by_name() {
        let cases = [
            (
                format!("{TWO_MODELS}\n[model]\npath = \"m.gguf\"\n"),
                "not both",
            ),
            (
                TWO_MODELS.replace("coder-1.5b", "coder-0.5b"),
                "two `[[models]]` are named `coder-0.5b`",
            ),
            (
                TWO_MODELS.replace("name = \"coder-1.5b\"", "name = \"a b\""),
                "a b",
            ),
            (
                format!("{TWO_MODELS}\n[roles]\ncompletion = \"coder-1.5b\"\n"),
                "`roles.completion` names `coder-1.5b`, whose `roles` do not include",
            ),
            (
                format!("{TWO_MODELS}\n[roles]\nchat = \"nope\"\n"),
                "`roles.chat` names `nope`, which is not in `[[models]]`",
            ),
            (
                TWO_MODELS.replace("speculation = \"off\"", "speculation = \"draft\""),
                "model `coder-1.5b` speculates with `draft`, which needs its `draft`",
            ),
            (
                TWO_MODELS.replace("speculation = \"off\"", "sha256 = \"12\""),
                "`sha256` of model `coder-1.5b` must be 64 hex digits",
            ),
            (
                TWO_MODELS.replace("speculation = \"off\"", "unload_after_secs = 0"),
                "`unload_after_secs` of model `coder-1.5b`",
            ),
            (
                "[roles]\nchat = \"x\"\n".to_string(),
                "there is no `[[models]]`",
            ),
            (
                TWO_MODELS.replace("roles = [\"completion\"]", "roles = [\"completions\"]"),
                "completions",
            ),
        ];
        for (text, expected) in cases {
            let err = Config::parse(&text).expect_err(expected);
            assert!(format!("{err:#}").contains(expected), "{expected}: {err:#}");
        }
    }
}

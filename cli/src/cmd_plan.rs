//! `souffleur plan`: how much memory the configured models need and whether they fit.
//!
//! Reads the configuration as `souffleur serve` does, inspects every model file's
//! headers (no weights are loaded) and prints, per model, the weights as the engine
//! keeps them, the key/value state per 1,000 tokens of context, the prefix-cache
//! budget, working memory, the total and how many sequences fit; then whether the
//! whole configuration fits the memory budget. The figures are those of
//! `engine::footprint`; `benches/plan_accuracy.sh` measures them against peak RSS.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use engine::footprint::{Footprint, FootprintSettings, ModelShape, physical_memory};
use serde::Serialize;
use server::config::Config;

use crate::home::Home;
use crate::{cmd_serve, model_store};

/// Options of `souffleur plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// TOML configuration file (default: `<home>/config.toml` if it exists).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Concurrent sequences to plan for, per model (default: each model's `max_active`).
    #[arg(long)]
    users: Option<usize>,
    /// Tokens of context per sequence (default: `limits.max_prompt_tokens` +
    /// `limits.max_tokens`).
    #[arg(long)]
    context: Option<usize>,
    /// Where the models run: `cpu` or `cuda:N` (with `cuda`, `--memory` is required:
    /// the GPU is not queried). The figures are those of the CPU engine's layout.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Memory to plan within, in GiB (default: `memory.budget_mib`, else the
    /// machine's physical memory).
    #[arg(long)]
    memory: Option<f64>,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    json: bool,
}

/// Where the models are planned to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Device {
    Cpu,
    Cuda(usize),
}

impl Device {
    fn parse(text: &str) -> Result<Self> {
        if text == "cpu" {
            return Ok(Self::Cpu);
        }
        if let Some(n) = text.strip_prefix("cuda:")
            && let Ok(n) = n.parse()
        {
            return Ok(Self::Cuda(n));
        }
        bail!("unknown device `{text}`: expected `cpu` or `cuda:N` (N a GPU number, e.g. cuda:0)")
    }

    fn name(self) -> String {
        match self {
            Self::Cpu => "cpu".into(),
            Self::Cuda(n) => format!("cuda:{n}"),
        }
    }
}

/// One model's figures, as printed and as `--json` gives them.
#[derive(Debug, Serialize)]
struct ModelPlan {
    name: String,
    roles: Vec<String>,
    /// The model this one drafts for (draft models only).
    draft_for: Option<String>,
    path: PathBuf,
    architecture: String,
    quantisation: String,
    parameters: usize,
    layers: usize,
    kv_heads: usize,
    head_dim: usize,
    file_bytes: u64,
    weights_bytes: u64,
    kv_bytes_per_token: u64,
    kv_per_1k_tokens_bytes: u64,
    users: usize,
    context_tokens: usize,
    kv_cache_bytes: u64,
    prefix_cache_bytes: u64,
    working_bytes: u64,
    total_bytes: u64,
    /// Sequences of `context_tokens` this model could run in what the budget
    /// leaves after every other model's total.
    sequences_that_fit: usize,
}

/// The whole plan.
#[derive(Debug, Serialize)]
struct Plan {
    device: String,
    memory_bytes: u64,
    memory_source: String,
    context_tokens: usize,
    models: Vec<ModelPlan>,
    total_bytes: u64,
    fits: bool,
    /// How far the total is over the budget (0 when it fits).
    over_by_bytes: u64,
    /// Loading the models in order, the first that no longer fits.
    first_not_fitting: Option<String>,
}

/// Runs the plan; returns the process exit code: 0 when the configuration fits, 1
/// when it does not, 2 on an error (bad option, unreadable config or model file).
pub fn run(home: &Home, args: PlanArgs) -> i32 {
    match plan(home, &args) {
        Ok(plan) => {
            let text = if args.json {
                serde_json::to_string_pretty(&plan).map(|t| t + "\n")
            } else {
                Ok(render(&plan))
            };
            let written = text.map_err(anyhow::Error::from).and_then(|t| {
                let mut out = std::io::stdout().lock();
                out.write_all(t.as_bytes())
                    .and_then(|_| out.flush())
                    .context("cannot write to stdout")
            });
            if let Err(e) = written {
                eprintln!("souffleur plan: error: {e:#}");
                return 2;
            }
            if plan.fits { 0 } else { 1 }
        }
        Err(e) => {
            eprintln!("souffleur plan: error: {e:#}");
            2
        }
    }
}

fn plan(home: &Home, args: &PlanArgs) -> Result<Plan> {
    let device = Device::parse(&args.device)?;
    let config = cmd_serve::read_config(home, args.config.as_deref())?;
    plan_config(home, &config, device, args.memory, args.users, args.context)
}

/// Refuses `config` when its models (at their `max_active`, with the longest prompt and
/// answer the limits allow) do not fit the memory budget (`memory.budget_mib`, else the
/// machine's physical memory): the message names the first model that does not fit and
/// the numbers. What `souffleur serve` checks at start-up and at each reload.
pub fn check_budget(home: &Home, config: &Config) -> Result<()> {
    let plan = plan_config(home, config, Device::Cpu, None, None, None)?;
    if plan.fits {
        return Ok(());
    }
    let per_model = plan
        .models
        .iter()
        .map(|m| format!("{} {}", m.name, size(m.total_bytes)))
        .collect::<Vec<_>>()
        .join(", ");
    bail!(
        "the models need {} ({per_model}), more than the {} of {}: model `{}` does not fit (over by {}); see `souffleur plan`",
        size(plan.total_bytes),
        size(plan.memory_bytes),
        plan.memory_source,
        plan.first_not_fitting.as_deref().unwrap_or("?"),
        size(plan.over_by_bytes),
    )
}

/// The plan of `config` on `device` within `memory` GiB (default: the budget), for
/// `users` sequences per model (default: each model's `max_active`) of `context` tokens
/// (default: the longest prompt and answer the limits allow).
fn plan_config(
    home: &Home,
    config: &Config,
    device: Device,
    memory_gib: Option<f64>,
    users: Option<usize>,
    context: Option<usize>,
) -> Result<Plan> {
    let (memory_bytes, memory_source) = memory(config, device, memory_gib)?;
    let context_tokens =
        context.unwrap_or(config.limits.max_prompt_tokens + config.limits.max_tokens);
    if context_tokens == 0 {
        bail!("--context must be at least 1 token");
    }
    if users == Some(0) {
        bail!("--users must be at least 1");
    }
    let mut planned = Vec::new();
    for entry in config.served_models() {
        if entry.engine.as_deref().is_some_and(|e| e != "builtin") {
            // A remote backend's model takes no memory here.
            continue;
        }
        let path = cmd_serve::entry_path(home, &entry)?;
        let name = if entry.name.is_empty() {
            cmd_serve::model_id(&path)
        } else {
            entry.name.clone()
        };
        let users = users.unwrap_or(entry.max_active.unwrap_or(config.scheduler.max_active));
        let prefix_mib = entry
            .prefix_cache_mib
            .unwrap_or(config.scheduler.prefix_cache_mib);
        let roles = entry.roles.iter().map(|r| r.name().to_string()).collect();
        let settings = FootprintSettings {
            max_active: users,
            context_tokens,
            prefix_cache_bytes: (prefix_mib as u64) << 20,
        };
        planned.push((name.clone(), roles, None, path, settings.clone()));
        if let Some(draft) = &entry.draft {
            let draft_path = model_store::resolve(home, Some(draft))
                .with_context(|| format!("draft model of `{name}`"))?;
            // The prefix cache keeps only the main model's state.
            let settings = FootprintSettings {
                prefix_cache_bytes: 0,
                ..settings
            };
            let draft_name = cmd_serve::model_id(&draft_path);
            planned.push((draft_name, Vec::new(), Some(name), draft_path, settings));
        }
    }
    let mut models = Vec::with_capacity(planned.len());
    let mut shapes = Vec::with_capacity(planned.len());
    for (name, roles, draft_for, path, settings) in planned {
        let shape = ModelShape::inspect(&path)
            .with_context(|| format!("cannot read model `{name}` at {}", path.display()))?;
        let f = Footprint::estimate(&shape, &settings);
        let c = &shape.config;
        models.push(ModelPlan {
            name,
            roles,
            draft_for,
            path,
            architecture: c.arch.name().to_string(),
            quantisation: shape.quantisation.clone(),
            parameters: shape.parameters,
            layers: c.num_layers,
            kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            file_bytes: shape.file_bytes,
            weights_bytes: f.weights,
            kv_bytes_per_token: shape.kv_bytes_per_token(),
            kv_per_1k_tokens_bytes: f.kv_per_1k_tokens,
            users: settings.max_active,
            context_tokens,
            kv_cache_bytes: f.kv_cache,
            prefix_cache_bytes: f.prefix_cache,
            working_bytes: f.working,
            total_bytes: f.total(),
            sequences_that_fit: 0,
        });
        shapes.push((shape, settings));
    }
    let total_bytes: u64 = models.iter().map(|m| m.total_bytes).sum();
    for (m, (shape, settings)) in models.iter_mut().zip(&shapes) {
        let others = total_bytes - m.total_bytes;
        let left = memory_bytes.saturating_sub(others);
        m.sequences_that_fit = Footprint::sequences_that_fit(shape, settings, left);
    }
    let mut running = 0u64;
    let first_not_fitting = models
        .iter()
        .find(|m| {
            running += m.total_bytes;
            running > memory_bytes
        })
        .map(|m| m.name.clone());
    Ok(Plan {
        device: device.name(),
        memory_bytes,
        memory_source,
        context_tokens,
        total_bytes,
        fits: total_bytes <= memory_bytes,
        over_by_bytes: total_bytes.saturating_sub(memory_bytes),
        first_not_fitting,
        models,
    })
}

/// The memory to plan within and where the figure comes from.
fn memory(config: &Config, device: Device, gib: Option<f64>) -> Result<(u64, String)> {
    if let Some(gib) = gib {
        if !gib.is_finite() || gib <= 0.0 {
            bail!("--memory must be a positive number of GiB, not {gib}");
        }
        return Ok(((gib * (1u64 << 30) as f64) as u64, "--memory".into()));
    }
    if let Device::Cuda(_) = device {
        bail!(
            "--device {} needs --memory GiB: the GPU's memory is not queried",
            device.name()
        );
    }
    if let Some(mib) = config.memory.budget_mib {
        return Ok((mib << 20, "memory.budget_mib".into()));
    }
    match physical_memory() {
        Some(bytes) => Ok((bytes, "physical memory".into())),
        None => bail!("cannot read this machine's physical memory; pass --memory GiB"),
    }
}

/// `1.23 GiB`, `456.7 MiB`, `12.0 KiB`.
fn size(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= 1 << 30 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if bytes >= 1 << 20 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else {
        format!("{:.1} KiB", b / 1024.0)
    }
}

fn render(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for m in &plan.models {
        let what = match &m.draft_for {
            Some(main) => format!("draft model of {main}"),
            None => m.roles.join(", "),
        };
        let _ = writeln!(out, "{}  ({what})", m.name);
        let _ = writeln!(
            out,
            "  file          {} ({}, {})",
            m.path.display(),
            size(m.file_bytes),
            m.quantisation
        );
        let _ = writeln!(
            out,
            "  architecture  {}, {:.1} M parameters, {} layers × {} kv heads × {} head dim",
            m.architecture,
            m.parameters as f64 / 1e6,
            m.layers,
            m.kv_heads,
            m.head_dim
        );
        let _ = writeln!(out, "  weights       {}", size(m.weights_bytes));
        let _ = writeln!(
            out,
            "  kv cache      {} per 1k tokens; {} users × {} tokens = {}",
            size(m.kv_per_1k_tokens_bytes),
            m.users,
            m.context_tokens,
            size(m.kv_cache_bytes)
        );
        let _ = writeln!(out, "  prefix cache  {}", size(m.prefix_cache_bytes));
        let _ = writeln!(out, "  working       {}", size(m.working_bytes));
        let _ = writeln!(out, "  total         {}", size(m.total_bytes));
        let _ = writeln!(
            out,
            "  concurrency   {} sequences of {} tokens fit ({} planned)\n",
            m.sequences_that_fit, m.context_tokens, m.users
        );
    }
    let _ = writeln!(
        out,
        "total {} of {} ({}, {}):",
        size(plan.total_bytes),
        size(plan.memory_bytes),
        plan.memory_source,
        plan.device
    );
    if plan.fits {
        let _ = writeln!(
            out,
            "fits, with {} to spare",
            size(plan.memory_bytes - plan.total_bytes)
        );
    } else {
        let _ = writeln!(
            out,
            "does not fit: {} over the budget; loading the models in order, `{}` is the first that does not fit",
            size(plan.over_by_bytes),
            plan.first_not_fitting.as_deref().unwrap_or("?")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_bad_ones_are_named() {
        assert_eq!(Device::parse("cpu").expect("cpu"), Device::Cpu);
        assert_eq!(Device::parse("cuda:1").expect("cuda"), Device::Cuda(1));
        for bad in ["gpu", "cuda", "cuda:x", "CPU"] {
            let e = Device::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(bad) && e.contains("cuda:N"), "{e}");
        }
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(size(3 << 30), "3.00 GiB");
        assert_eq!(size(1536 << 10), "1.5 MiB");
        assert_eq!(size(2048), "2.0 KiB");
    }
}

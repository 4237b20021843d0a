//! `souffleur review`: reviews a change for CI. The diff comes from git
//! (`--base origin/main`) or a file (`--diff FILE`, `-` for stdin); the review runs
//! on a server (`--server URL --token T`) or in this process (`--local`, the default
//! without `--server`); the report goes to stdout in the format the forge reads.
//!
//! Exit codes: 0 no finding reaches `--fail-on`; 1 some finding does; 2 bad input or
//! another error (the message is on stderr).

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, ValueEnum};
use engine::{CancelToken, Engine, SchedulerConfig};
use serde_json::{Value, json};
use server::config::ModelRole;

use crate::catalogue;
use crate::home::Home;
use review::context::{IndexDefinitions, WorktreeFiles};
use review::format::{self, Format};
use review::model::EngineModel;
use review::{self, FileSource, Inputs, Limits, NoFiles, Options, Report, Rules, Severity};

/// The lowest severity that fails the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FailOn {
    /// Fail on errors.
    Error,
    /// Fail on warnings and errors.
    Warning,
    /// Fail on any finding.
    Info,
    /// Never fail because of findings.
    Never,
}

impl FailOn {
    fn severity(self) -> Option<Severity> {
        match self {
            FailOn::Error => Some(Severity::Error),
            FailOn::Warning => Some(Severity::Warning),
            FailOn::Info => Some(Severity::Info),
            FailOn::Never => None,
        }
    }
}

/// Arguments of `souffleur review`.
#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// Review what HEAD (or --head) adds over this ref, like a pull request: the diff
    /// from their merge base. Example: `--base origin/main`.
    #[arg(long, conflicts_with = "diff")]
    pub base: Option<String>,
    /// The head ref with --base.
    #[arg(long, default_value = "HEAD")]
    pub head: String,
    /// A unified diff to review; `-` reads standard input.
    #[arg(long, conflicts_with = "from_report")]
    pub diff: Option<PathBuf>,
    /// Do not review: render a report written earlier with `--format json` in another
    /// format (and apply --fail-on to it), so one review feeds several outputs.
    #[arg(long, conflicts_with = "base")]
    pub from_report: Option<PathBuf>,
    /// The repository (for --base, file context and the index); default: the current directory.
    #[arg(long, default_value = ".")]
    pub repo: PathBuf,
    /// Send the review to this server (e.g. http://souffleur:8347) instead of running it here.
    #[arg(long, env = "SOUFFLEUR_SERVER")]
    pub server: Option<String>,
    /// API token for --server.
    #[arg(long, env = "SOUFFLEUR_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Run in this process with the local model (the default without --server).
    #[arg(long, conflicts_with = "server")]
    pub local: bool,
    /// Output format.
    #[arg(long, default_value = "json", value_parser = format_parser())]
    pub format: Format,
    /// Write the report to this file instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Exit with 1 when a finding has at least this severity.
    #[arg(long, value_enum, default_value = "error")]
    pub fail_on: FailOn,
    /// Static checks only (no model).
    #[arg(long)]
    pub no_model: bool,
    /// Extra instructions for the model.
    #[arg(long)]
    pub instructions: Option<String>,
    /// Rules file (TOML; default: `.souffleur/review.toml` in the repository, if present).
    #[arg(long)]
    pub rules: Option<PathBuf>,
    /// Model path or name for --local (default: the review-role model of the
    /// configuration, else `SOUFFLEUR_MODEL`, else Qwen2.5-Coder-1.5B when installed,
    /// else the built-in default model).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Largest diff accepted, in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub max_diff_bytes: usize,
    /// Most chunks sent to the model; the rest get static checks only.
    #[arg(long, default_value_t = 64)]
    pub max_chunks: usize,
    /// Chunks reviewed at once (the engine batches them; 1 gives bit-for-bit
    /// reproducible model output, more are faster).
    #[arg(long, default_value_t = 1)]
    pub concurrency: usize,
    /// No progress on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `--format`: the review crate's formats by name (listed in `--help`).
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Format::ALL.map(Format::name))
        .map(|name| Format::parse(&name).unwrap_or(Format::Json))
}

/// Runs the review; returns the process exit code (0, 1 or 2).
pub fn run(home: &Home, args: ReviewArgs) -> i32 {
    match run_inner(home, &args) {
        Ok(report) => {
            let text = format::render(&report, args.format);
            let written = match &args.output {
                Some(p) => std::fs::write(p, &text)
                    .with_context(|| format!("cannot write {}", p.display())),
                None => {
                    let mut out = std::io::stdout().lock();
                    out.write_all(text.as_bytes())
                        .and_then(|_| out.flush())
                        .context("cannot write to stdout")
                }
            };
            if let Err(e) = written {
                eprintln!("souffleur review: {e:#}");
                return 2;
            }
            if !args.quiet {
                eprintln!("souffleur review: {}", report.summary.text);
            }
            match args.fail_on.severity() {
                Some(s) if report.reaches(s) => 1,
                _ => 0,
            }
        }
        Err(e) => {
            eprintln!("souffleur review: error: {e:#}");
            2
        }
    }
}

fn read_diff(path: &Path, limit: usize) -> Result<String> {
    let mut bytes = Vec::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit as u64 + 1)
            .read_to_end(&mut bytes)
            .context("cannot read the diff from standard input")
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(limit as u64 + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))
    };
    read?;
    if bytes.len() > limit {
        bail!(review::ReviewError::TooLarge {
            size: bytes.len(),
            limit
        });
    }
    // A diff may hold files in other encodings; their bytes become U+FFFD.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

fn load_rules(args: &ReviewArgs) -> Result<(Rules, Option<String>)> {
    let path = match &args.rules {
        Some(p) => Some(p.clone()),
        None => {
            let p = args.repo.join(".souffleur/review.toml");
            p.is_file().then_some(p)
        }
    };
    match path {
        None => Ok((Rules::default(), None)),
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .with_context(|| format!("cannot read the rules file {}", p.display()))?;
            let rules =
                Rules::parse(&text).with_context(|| format!("rules file {}", p.display()))?;
            Ok((rules, Some(text)))
        }
    }
}

/// The diff to review and the new side's files.
fn obtain_diff(args: &ReviewArgs) -> Result<(String, Box<dyn FileSource>)> {
    match (&args.diff, &args.base) {
        (Some(path), _) => {
            let text = read_diff(path, args.max_diff_bytes)?;
            let files: Box<dyn FileSource> = match review::git::open(&args.repo)
                .ok()
                .and_then(|r| r.workdir().map(Path::to_path_buf))
            {
                // Worktree files are used only where they agree with the diff.
                Some(root) => Box::new(WorktreeFiles::new(root)),
                None => Box::new(NoFiles),
            };
            Ok((text, files))
        }
        (None, Some(base)) => {
            let repo = review::git::open(&args.repo)?;
            let rd = review::git::diff_refs(repo, base, &args.head, args.max_diff_bytes)?;
            Ok((rd.text, Box::new(rd.files)))
        }
        (None, None) => bail!(
            "nothing to review: give --base REF (e.g. origin/main) or --diff FILE (`-` for stdin)"
        ),
    }
}

fn run_inner(home: &Home, args: &ReviewArgs) -> Result<Report> {
    if let Some(path) = &args.from_report {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the report {}", path.display()))?;
        return serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a report of `souffleur review --format json`",
                path.display()
            )
        });
    }
    let (rules, rules_text) = load_rules(args)?;
    let (diff, files) = obtain_diff(args)?;
    match &args.server {
        Some(url) => remote(url, args, &diff, rules_text.as_deref()),
        None => local(home, args, &diff, files.as_ref(), rules),
    }
}

fn progress_printer(quiet: bool) -> impl Fn(review::Progress) + Sync {
    move |p: review::Progress| {
        if quiet {
            return;
        }
        if p.stage == "model" {
            eprintln!(
                "souffleur review: model {}/{}{}",
                p.done,
                p.total,
                p.path.map(|x| format!(" ({x})")).unwrap_or_default()
            );
        }
    }
}

fn local(
    home: &Home,
    args: &ReviewArgs,
    diff: &str,
    files: &dyn FileSource,
    rules: Rules,
) -> Result<Report> {
    let limits = Limits {
        max_diff_bytes: args.max_diff_bytes,
        max_model_chunks: args.max_chunks,
        concurrency: args.concurrency.clamp(1, 16),
        ..Limits::default()
    };
    let options = Options {
        model_review: !args.no_model,
        instructions: args
            .instructions
            .clone()
            .or_else(|| rules.instructions.clone()),
        rules,
        limits: limits.clone(),
        likelihood: review::likelihood::Settings::default(),
    };
    // Bad diffs fail before the model is loaded.
    review::validate(diff, &options.limits)?;
    let model = if args.no_model {
        None
    } else {
        let (path, name, why) = review_model(home, args.model.as_deref())
            .context("no model for the review (or pass --no-model for static checks only)")?;
        if !args.quiet {
            eprintln!("souffleur review: model {name} ({why})");
            let better = catalogue::REVIEW;
            if crate::model_store::catalogue_pin(&path).is_none_or(|m| m.name != better.name)
                && !home.models().join(better.file_name).is_file()
            {
                eprintln!(
                    "souffleur review: findings from a model of this size are weak; `souffleur model fetch {}` installs {}, which reviews use when present",
                    better.name, better.description
                );
            }
        }
        let model = Arc::new(crate::model_store::load_verified(home, &path, None, "")?.0);
        let context = model.info().config.context_length;
        let engine = Engine::start(model, SchedulerConfig::default())?;
        Some(EngineModel::new(
            engine,
            name,
            CancelToken::new(),
            context.saturating_sub(limits.max_new_tokens + 8),
            engine::Speculation::NGRAM,
        ))
    };
    let index = open_index(home, &args.repo);
    let defs = index.as_ref().map(|(i, name)| IndexDefinitions {
        index: i,
        repos: vec![name.clone()],
    });
    let inputs = Inputs {
        files,
        definitions: defs.as_ref().map(|d| d as &dyn review::Definitions),
        judge: model
            .as_ref()
            .filter(|m| m.can_judge())
            .map(|m| m as &dyn review::InfillJudge),
    };
    let report = review::review(
        diff,
        &inputs,
        &options,
        model.as_ref().map(|m| m as &dyn review::ReviewModel),
        &progress_printer(args.quiet),
    )?;
    Ok(report)
}

/// The model a local review uses (its file, its name as the server would call it) and
/// why: `--model`; else the review-role model of the home's configuration; else
/// `SOUFFLEUR_MODEL`; else the catalogue's review model (Qwen2.5-Coder-1.5B) when
/// installed; else the default model.
fn review_model(home: &Home, requested: Option<&Path>) -> Result<(PathBuf, String, String)> {
    let (path, name, why) = review_model_path(home, requested)?;
    let name = name.unwrap_or_else(|| crate::cmd_serve::model_id(&path));
    Ok((path, name, why))
}

fn review_model_path(
    home: &Home,
    requested: Option<&Path>,
) -> Result<(PathBuf, Option<String>, String)> {
    if let Some(m) = requested {
        return Ok((
            crate::model_store::resolve(home, Some(m))?,
            None,
            "--model".into(),
        ));
    }
    let config = crate::cmd_serve::read_config(home, None)?;
    let configured =
        config
            .served_models()
            .into_iter()
            .find(|e| match config.role_default(ModelRole::Review) {
                Some(name) => e.name == name,
                None => e.name.is_empty() && !e.path.as_os_str().is_empty(),
            });
    if let Some(entry) = configured {
        let why = if entry.name.is_empty() {
            "`model.path` of the configuration".to_string()
        } else {
            format!("the review model `{}` of the configuration", entry.name)
        };
        let name = (!entry.name.is_empty()).then(|| entry.name.clone());
        return Ok((crate::cmd_serve::entry_path(home, &entry)?, name, why));
    }
    if std::env::var_os(crate::model_store::MODEL_ENV).is_some_and(|v| !v.is_empty()) {
        let why = crate::model_store::MODEL_ENV.to_string();
        return Ok((crate::model_store::resolve(home, None)?, None, why));
    }
    let review = home.models().join(catalogue::REVIEW.file_name);
    if review.is_file() {
        return Ok((review, None, "the catalogue's review model".into()));
    }
    Ok((
        crate::model_store::resolve(home, None)?,
        None,
        "the default model".into(),
    ))
}

/// The code index and the name of the indexed repository at `repo`, if both exist.
fn open_index(home: &Home, repo: &Path) -> Option<(indexer::CodeIndex, String)> {
    let dir = home.index();
    if !dir.join(indexer::TANTIVY_DIR).exists() {
        return None;
    }
    let root = review::git::open(repo)
        .ok()?
        .workdir()?
        .canonicalize()
        .ok()?;
    let index = indexer::CodeIndex::open(&dir).ok()?;
    let status = index.status().ok()?;
    let name = status
        .repos
        .iter()
        .find(|r| r.record.path.canonicalize().ok().as_deref() == Some(root.as_path()))?
        .record
        .name
        .clone();
    Some((index, name))
}

/// Sends the review to a server and reads its progress stream.
fn remote(url: &str, args: &ReviewArgs, diff: &str, rules: Option<&str>) -> Result<Report> {
    let endpoint = format!("{}/v1/review", url.trim_end_matches('/'));
    let body = json!({
        "diff": diff,
        "instructions": args.instructions,
        "rules": rules,
        "model_review": !args.no_model,
        "max_chunks": args.max_chunks,
        "stream": true,
    });
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(3600)))
        .build()
        .into();
    let mut req = agent
        .post(&endpoint)
        .header("Content-Type", "application/json");
    if let Some(t) = &args.token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let mut resp = req
        .send(body.to_string())
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status().as_u16();
    if status != 200 {
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(String::from))
            .unwrap_or(text);
        bail!("the server answered {status}: {message}");
    }
    let reader = BufReader::new(resp.into_body().into_reader());
    let mut event = String::new();
    for line in reader.lines() {
        let line = line.context("the server's stream broke off")?;
        if let Some(e) = line.strip_prefix("event:") {
            event = e.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            let value: Value = serde_json::from_str(data)
                .with_context(|| format!("the server sent bad JSON: {data}"))?;
            match event.as_str() {
                "progress" if !args.quiet && value["stage"] == "model" => {
                    eprintln!(
                        "souffleur review: model {}/{} ({})",
                        value["done"],
                        value["total"],
                        value["path"].as_str().unwrap_or("")
                    );
                }
                "result" => {
                    let report: Report = serde_json::from_value(value)
                        .context("the server's report has an unexpected shape")?;
                    return Ok(report);
                }
                "error" => {
                    return Err(anyhow!(
                        "the server failed: {}",
                        value["error"]["message"]
                            .as_str()
                            .unwrap_or("unknown error")
                    ));
                }
                _ => {}
            }
        }
    }
    bail!("the server's stream ended without a result")
}

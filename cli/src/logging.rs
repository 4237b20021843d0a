//! The process's log: `tracing` events on standard error, as text or JSON lines, filtered
//! by `[log] level` or the `SOUFFLEUR_LOG` environment variable (which wins).

use std::io::IsTerminal;

use anyhow::{Context, Result};
use server::config::{LogFormat, LogSection};
use tracing_subscriber::EnvFilter;

/// The environment variable that overrides `[log] level`.
pub const LOG_ENV: &str = "SOUFFLEUR_LOG";

/// Installs the global subscriber. Called once, by `souffleur serve` after its
/// configuration is read (other subcommands use [`init_default`]).
pub fn init(config: &LogSection) -> Result<()> {
    let filter = match std::env::var(LOG_ENV) {
        Ok(spec) => EnvFilter::try_new(&spec).with_context(|| format!("invalid {LOG_ENV}"))?,
        Err(_) => EnvFilter::try_new(&config.level)
            .with_context(|| format!("invalid `log.level` `{}`", config.level))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match config.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the logger: {e}"))
}

/// The log for the command-line subcommands: warnings and errors as text, unless
/// `SOUFFLEUR_LOG` says otherwise.
pub fn init_default() -> Result<()> {
    init(&LogSection {
        level: "warn".into(),
        format: LogFormat::Text,
    })
}

//! `souffleur`: the command line of the self-hosted code-completion server. Parses
//! arguments, knows the home directory's layout ([`home::Home`]) and the model store,
//! and starts the server (`serve`), the indexer, reviews and token administration.

mod catalogue;
mod cmd_admin;
mod cmd_complete;
mod cmd_model;
mod cmd_plan;
mod cmd_review;
mod cmd_serve;
mod cmd_token;
mod home;
mod index_cli;
mod logging;
mod model_store;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Souffleur: code completions, reviews and a model API from your own hardware.
#[derive(Debug, Parser)]
#[command(name = "souffleur", version, about)]
struct Cli {
    /// Home directory with config.toml, models/, index/ and souffleur.db.
    #[arg(long, env = "SOUFFLEUR_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Install, list and inspect models.
    #[command(subcommand)]
    Model(cmd_model::ModelCommand),
    /// Complete code from a prefix (and suffix) file; prints only the completion.
    Complete(cmd_complete::CompleteArgs),
    /// Index git repositories for retrieval of context.
    #[command(subcommand)]
    Index(index_cli::IndexCommand),
    /// Serve completions, chat and the model API over HTTP.
    Serve(cmd_serve::ServeArgs),
    /// Create, list and revoke API tokens.
    #[command(subcommand)]
    Token(cmd_token::TokenCommand),
    /// Review a change (pull request) for CI: findings on the changed lines.
    Review(cmd_review::ReviewArgs),
    /// Operate a running server (reload its models).
    #[command(subcommand)]
    Admin(cmd_admin::AdminCommand),
    /// Estimate the memory the configured models need and whether they fit
    /// (exit status 0: fits, 1: does not fit, 2: error).
    Plan(cmd_plan::PlanArgs),
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Errors print as one line (`a: b: c`); `SOUFFLEUR_DEBUG=1` prints the whole report
/// with a backtrace where one was captured.
fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if std::env::var_os("SOUFFLEUR_DEBUG").is_some() => {
            eprintln!("souffleur: {e:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("souffleur: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    home::restrict_new_files();
    let cli = Cli::parse();
    let home = home::Home::resolve(cli.home)?;
    if !matches!(cli.command, Command::Serve(_)) {
        logging::init_default()?;
    }
    match cli.command {
        Command::Model(cmd) => cmd_model::run(&home, cmd),
        Command::Complete(args) => cmd_complete::run(&home, args),
        Command::Index(cmd) => index_cli::run(&home, cmd),
        Command::Serve(args) => cmd_serve::run(&home, args),
        Command::Token(cmd) => cmd_token::run(&home, cmd),
        Command::Review(args) => std::process::exit(cmd_review::run(&home, args)),
        Command::Admin(cmd) => cmd_admin::run(cmd),
        Command::Plan(args) => std::process::exit(cmd_plan::run(&home, args)),
    }
}

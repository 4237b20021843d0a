//! `souffleur token`: create, list and revoke API tokens.

use anyhow::Result;
use clap::Subcommand;

use crate::home::Home;
use server::store::tokens::{RepoScope, Role, TokenStore};

/// Token management.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token; the secret is printed alone on the last line of stdout.
    Create {
        /// Unique name (a person or a pipeline).
        #[arg(long)]
        name: String,
        /// Repositories whose code it may receive as context: `*` or `a,b,c`.
        #[arg(long, default_value = "*")]
        repos: String,
        /// `user` or `admin` (admins also read /metrics).
        #[arg(long, default_value = "user")]
        role: String,
        /// Days until the token stops working (default: it does not expire).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_days: Option<u32>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name; the server stops accepting it within a second.
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// Runs a token command against `<home>/souffleur.db`.
pub fn run(home: &Home, cmd: TokenCommand) -> Result<()> {
    let store = TokenStore::open(&home.db())?;
    match cmd {
        TokenCommand::Create {
            name,
            repos,
            role,
            expires_days,
        } => {
            let role = Role::parse(&role)?;
            let scope = RepoScope::parse(&repos);
            let expires_at =
                expires_days.map(|d| server::store::tokens::now() + i64::from(d) * 86_400);
            let secret = store.create_expiring(&name, role, &scope, expires_at)?;
            let until = expires_days
                .map(|d| format!(", expiring in {d} days"))
                .unwrap_or_default();
            println!("created {role:?} token `{name}` for repositories {repos}{until}");
            println!("{secret}");
        }
        TokenCommand::List { json } => {
            let list = store.list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for t in list {
                    let repos = match &t.repos {
                        RepoScope::All => "*".to_string(),
                        RepoScope::Only(v) => v.join(","),
                    };
                    let state = if t.revoked_at.is_some() {
                        "revoked"
                    } else if t.expired_at(server::store::tokens::now()) {
                        "expired"
                    } else {
                        "active"
                    };
                    println!(
                        "{:<24} {:<6} {:<8} {repos}",
                        t.name,
                        format!("{:?}", t.role).to_lowercase(),
                        state
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            store.revoke(&name)?;
            println!("revoked token `{name}`");
        }
    }
    Ok(())
}

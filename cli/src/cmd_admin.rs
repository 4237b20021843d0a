//! `souffleur admin`: operations on a running server. `reload` asks it to read its
//! configuration again and switch models without dropping requests (what SIGHUP does,
//! with an answer that says what happened).

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::Value;

/// `souffleur admin …`
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Make a running server read its configuration again: new models (or new versions)
    /// are loaded beside the old ones, requests in flight finish on the model they started
    /// on, new requests go to the new defaults.
    Reload(ServerArgs),
}

/// Which server, as whom.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The server's address.
    #[arg(
        long,
        env = "SOUFFLEUR_SERVER",
        default_value = "http://127.0.0.1:8347"
    )]
    server: String,
    /// An admin token (not needed for a server in local mode).
    #[arg(long, env = "SOUFFLEUR_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Runs an admin subcommand.
pub fn run(cmd: AdminCommand) -> Result<()> {
    match cmd {
        AdminCommand::Reload(args) => reload(&args),
    }
}

fn reload(args: &ServerArgs) -> Result<()> {
    let endpoint = format!("{}/v1/admin/reload", args.server.trim_end_matches('/'));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        // Loading a large model can take minutes.
        .timeout_global(Some(std::time::Duration::from_secs(1800)))
        .build()
        .into();
    let mut request = agent.post(&endpoint);
    if let Some(t) = &args.token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut response = request
        .send_empty()
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .context("cannot read the server's answer")?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if status != 200 {
        let message = value["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| value.to_string());
        bail!("the server answered {status}: {message}");
    }
    let list = |key: &str| {
        Some(joined(&value[key]))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "-".into())
    };
    println!("loaded: {}", list("loaded"));
    println!("kept: {}", list("kept"));
    println!("removed: {}", list("removed"));
    if let Some(models) = value["models"].as_array() {
        for m in models {
            let roles = joined(&m["default_for"]);
            println!(
                "model {} ({}) sha256 {}{}",
                m["id"].as_str().unwrap_or("?"),
                m["state"].as_str().unwrap_or("?"),
                m["sha256"].as_str().unwrap_or("?"),
                if roles.is_empty() {
                    String::new()
                } else {
                    format!(", default for {roles}")
                }
            );
        }
    }
    let restart = list("restart_needed");
    if restart != "-" {
        eprintln!(
            "souffleur admin reload: changes to [{restart}] take effect only when the server restarts"
        );
    }
    Ok(())
}

/// The strings of a JSON array, joined with `, ` (empty for anything else).
fn joined(value: &Value) -> String {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

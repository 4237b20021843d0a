//! `souffleur-lsp`: the Souffleur language server. Editors start it and talk LSP over
//! stdin/stdout; see `lsp/README.md` for editor set-up.

use anyhow::Result;

fn main() -> Result<()> {
    if let Some(arg) = std::env::args().nth(1) {
        match arg.as_str() {
            "--version" | "-V" => {
                println!("souffleur-lsp {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            "--stdio" => {}
            _ => {
                println!(
                    "souffleur-lsp {}: the Souffleur language server (LSP over stdio).\n\n\
                     Usage: souffleur-lsp [--stdio]\n\n\
                     Configuration: initializationOptions {{\"url\", \"token\", \"debounceMs\"}}, \
                     settings souffleur.url / souffleur.token, or env SOUFFLEUR_URL / \
                     SOUFFLEUR_TOKEN (default URL http://127.0.0.1:8347).",
                    env!("CARGO_PKG_VERSION")
                );
                return Ok(());
            }
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(lsp::run_stdio());
    // The stdin reader (a blocking thread) may still wait for input the client never
    // sends after `exit`; do not wait for it.
    runtime.shutdown_background();
    Ok(())
}

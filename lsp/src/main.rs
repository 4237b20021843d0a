//! `souffleur-lsp`: the Souffleur language server. Editors start it and talk LSP over
//! stdin/stdout; see `lsp/README.md` for editor set-up.

use std::ffi::OsString;
use std::process::ExitCode;

/// `--help`: every option the command line accepts (lsp/README.md documents the same).
const HELP: &str = "\
Usage: souffleur-lsp [OPTIONS]

Speaks LSP over stdin/stdout; editors start it as a language server.

Options:
      --stdio                  Use stdin/stdout (the default and only transport)
      --clientProcessId <PID>  Accepted and ignored (some LSP clients append it;
                               also as --clientProcessId=<PID>)
  -h, --help                   Print this help and exit
  -V, --version                Print the version and exit

Configuration (later sources win, key by key):
  environment             SOUFFLEUR_URL (default http://127.0.0.1:8347), SOUFFLEUR_TOKEN,
                          SOUFFLEUR_LSP_TRACE=1
  initializationOptions   {\"url\", \"token\", \"debounceMs\", \"timeoutMs\", \"trace\"}
  settings                souffleur.url, souffleur.token (workspace/didChangeConfiguration)
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    /// Run the language server on stdin/stdout.
    Serve,
    /// Print the help on stdout.
    Help,
    /// Print the version on stdout.
    Version,
}

/// Reads the arguments (without the program name). `Err`: the message for stderr.
fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Action, String> {
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            return Err(format!("unknown argument {arg:?}"));
        };
        match text {
            "--help" | "-h" => return Ok(Action::Help),
            "--version" | "-V" => return Ok(Action::Version),
            "--stdio" => {}
            "--clientProcessId" => match args.next() {
                Some(pid) if is_pid(&pid) => {}
                Some(pid) => return Err(format!("--clientProcessId takes a number, not {pid:?}")),
                None => return Err("--clientProcessId needs a process id".into()),
            },
            other => match other.strip_prefix("--clientProcessId=") {
                Some(pid) if is_pid(pid.as_ref()) => {}
                Some(pid) => return Err(format!("--clientProcessId takes a number, not {pid:?}")),
                None => return Err(format!("unknown argument `{other}`")),
            },
        }
    }
    Ok(Action::Serve)
}

/// Whether `value` is a decimal process id.
fn is_pid(value: &std::ffi::OsStr) -> bool {
    value.to_str().is_some_and(|v| v.parse::<u32>().is_ok())
}

fn main() -> ExitCode {
    match parse_args(std::env::args_os().skip(1)) {
        Ok(Action::Serve) => {}
        Ok(Action::Help) => {
            println!(
                "souffleur-lsp {}: the Souffleur language server.\n\n{HELP}",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        Ok(Action::Version) => {
            println!("souffleur-lsp {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            // Nothing on stdout: a client that starts us with a wrong argument must not
            // read help text as an LSP message.
            eprintln!("souffleur-lsp: {message}\n\n{HELP}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("souffleur-lsp: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(lsp::run_stdio());
    // The stdin reader (a blocking thread) may still wait for input the client never
    // sends after `exit`; do not wait for it.
    runtime.shutdown_background();
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn known_arguments() {
        assert_eq!(parse(&[]), Ok(Action::Serve));
        assert_eq!(parse(&["--stdio"]), Ok(Action::Serve));
        assert_eq!(
            parse(&["--stdio", "--clientProcessId=4242"]),
            Ok(Action::Serve)
        );
        assert_eq!(
            parse(&["--clientProcessId", "7", "--stdio"]),
            Ok(Action::Serve)
        );
        assert_eq!(parse(&["--help"]), Ok(Action::Help));
        assert_eq!(parse(&["--stdio", "-h"]), Ok(Action::Help));
        assert_eq!(parse(&["-V"]), Ok(Action::Version));
        assert_eq!(parse(&["--version"]), Ok(Action::Version));
    }

    /// tabby-agent is started as `tabby-agent --lsp --stdio`; the same line pointed at
    /// souffleur-lsp used to print help and exit 0.
    #[test]
    fn unknown_arguments_are_errors() {
        for args in [
            &["--lsp"][..],
            &["--lsp", "--stdio"],
            &["--stdio", "--lsp"],
            &["--clientProcessId"],
            &["--clientProcessId", "x"],
            &["--clientProcessId=-1"],
            &["stdio"],
            &["-"],
        ] {
            let error = parse(args).expect_err("an error");
            assert!(!error.is_empty(), "{args:?}");
        }
        assert_eq!(parse(&["--lsp"]), Err("unknown argument `--lsp`".into()));
    }
}

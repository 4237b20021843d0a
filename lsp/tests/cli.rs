//! The command line of the real `souffleur-lsp` binary: what goes to stdout, what goes to
//! stderr, exit statuses, and that lsp/README.md documents every option `--help` lists.

use std::process::{Command, Output, Stdio};

/// Every option `--help` must list (and lsp/README.md document).
const OPTIONS: [&str; 5] = ["--stdio", "--clientProcessId", "--help", "--version", "-V"];

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_souffleur-lsp"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run souffleur-lsp")
}

/// The options named in the `Options:` section of the help text.
fn options_in_help(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Options:"))
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .flat_map(|l| l.split([' ', ',', '=']))
        .filter(|w| w.starts_with('-') && w.len() > 1)
        .map(str::to_string)
        .collect()
}

/// tabby-agent's command line (`--lsp`) used to print help on stdout and exit 0.
#[test]
fn an_unknown_argument_is_an_error_on_stderr_with_status_2() {
    for args in [
        &["--lsp"][..],
        &["--lsp", "--stdio"],
        &["--stdio", "--bogus"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: stdout {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let unknown = args.iter().find(|a| **a != "--stdio").expect("unknown");
        assert!(
            stderr.contains(&format!("unknown argument `{unknown}`")),
            "{stderr}"
        );
        assert!(stderr.contains("Usage: souffleur-lsp"), "{stderr}");
    }
}

#[test]
fn help_lists_every_option_and_the_readme_documents_them() {
    for flag in ["--help", "-h"] {
        let out = run(&[flag]);
        assert!(out.status.success(), "{out:?}");
        assert!(out.stderr.is_empty(), "{out:?}");
        let help = String::from_utf8(out.stdout).expect("utf-8");
        let listed = options_in_help(&help);
        for option in OPTIONS {
            assert!(listed.iter().any(|o| o == option), "{option} in:\n{help}");
        }
        for option in &listed {
            assert!(
                OPTIONS.contains(&option.as_str()) || option == "-h",
                "{option} is listed but not tested: {help}"
            );
        }
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("lsp/README.md");
    for option in OPTIONS.iter().chain(&["-h"]) {
        assert!(
            readme.contains(&format!("`{option}")),
            "lsp/README.md does not document `{option}`"
        );
    }
}

#[test]
fn version_and_accepted_transport_arguments() {
    let out = run(&["--version"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("souffleur-lsp {}", env!("CARGO_PKG_VERSION"))
    );
    // With stdin closed at once, a server started with accepted arguments ends cleanly
    // and writes nothing but LSP (here: nothing) on stdout.
    for args in [&["--stdio"][..], &["--stdio", "--clientProcessId=1"], &[]] {
        let out = run(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {out:?}");
    }
}

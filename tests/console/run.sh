#!/usr/bin/env bash
# End-to-end test of the web console in headless Chromium (tests/console/drive.mjs).
#   bash tests/console/run.sh
# Installs what it needs: Debian's chromium (if missing), playwright-core from package-lock.json;
# builds target/debug/souffleur if missing and fetches the tiny model if missing.
# Screenshots: tests/console/out/ (out/usage.png is docs/console-usage.png in the README).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(cd ../.. && pwd)
if ! command -v chromium >/dev/null; then
  echo "== apt: chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi
[ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund --loglevel=error
if [ -z "${SOUFFLEUR_BIN:-}" ] && [ ! -x "$ROOT/target/debug/souffleur" ]; then
  (cd "$ROOT" && cargo build -p cli)
fi
BIN=${SOUFFLEUR_BIN:-$ROOT/target/debug/souffleur}
MODELS=${SOUFFLEUR_MODELS:-${SOUFFLEUR_HOME:-$HOME/.souffleur}/models}
if [ ! -f "$MODELS/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  "$BIN" model fetch smollm2-135m
fi
SOUFFLEUR_BIN=$BIN SOUFFLEUR_MODELS=$MODELS exec node drive.mjs

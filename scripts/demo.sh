#!/usr/bin/env bash
# README's first command: set up a fresh machine and run the main job.
# Builds the release binary, installs and verifies the built-in default model,
# indexes a real git repository (this one, or REPO=path), shows retrieval over it,
# and completes code from an example file with the default model.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUFFLEUR_HOME=${SOUFFLEUR_HOME:-$HOME/.souffleur}
REPO=${REPO:-$PWD}
cargo build --release -p server
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
echo "--- completing $example:"
cat "$example"
$bin complete --prefix-file "$example" --max-tokens 48 --stats

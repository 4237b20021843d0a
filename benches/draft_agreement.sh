#!/usr/bin/env bash
# How well drafts made from block subsets of the default model agree with it (issue 7).
# Usage: benches/draft_agreement.sh [BLOCKS …]   (default: a spread of block lists)
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUFFLEUR_HOME=${SOUFFLEUR_HOME:-$HOME/.souffleur}
cargo build --release -p cli -p souffleur-benches --bin souffleur --bin draft_agreement
target/release/souffleur model fetch smollm2-135m >/dev/null
model="$SOUFFLEUR_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
if [ $# -eq 0 ]; then
  set -- "0-5" "0-2,27-29" "0-3,26-29" "0-1,4,8,12,16,20,24,28-29" "0-9,25-29" "0-19,25-29" "0-28" "0-14,16-29"
fi
target/release/draft_agreement "$model" engine/tests/fixtures/corpus "$out" "$@"

#!/usr/bin/env bash
# Speculative decoding and prefix-cache benchmark on the default model (issue 7).
# Usage: benches/spec_bench.sh [OUT.json]
# Knobs: SPEC_BENCH_MODES (comma-separated speculation spellings, default `ngram`),
# SPEC_BENCH_DRAFT (a draft model for `draft` modes, e.g. from `souffleur model
# make-draft`), SPEC_BENCH_CLIENTS (default `1,4`), SPEC_BENCH_COST_ONLY=1 (only the
# verification-cost table).
set -euo pipefail
cd "$(dirname "$0")/.."
export SOUFFLEUR_HOME=${SOUFFLEUR_HOME:-$HOME/.souffleur}
cargo build --release -p cli -p souffleur-benches --bin souffleur --bin spec_bench
target/release/souffleur model fetch smollm2-135m >/dev/null
model="$SOUFFLEUR_HOME/models/SmolLM2-135M-Instruct.Q4_1.gguf"
out=${1:-/dev/stdout}
target/release/spec_bench "$model" engine/tests/fixtures/corpus > "$out"

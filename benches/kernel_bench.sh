#!/usr/bin/env bash
# Throughput of the quantised matrix products on the default model's own weights, per
# format, row count and CPU kernel (benches/src/bin/kernel_bench.rs); one JSON line each.
#   bash benches/kernel_bench.sh                  # the default model
#   MODEL=path/to/model.gguf bash benches/kernel_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${SOUFFLEUR_HOME:-$HOME/.souffleur}
MODEL=${MODEL:-$HOME_DIR/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
cargo build --release -q -p souffleur-benches --bin kernel_bench
target/release/kernel_bench "$MODEL"

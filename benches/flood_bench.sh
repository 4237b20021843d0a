#!/usr/bin/env bash
# The hardening issue's attack: one token sends prompts just under the 1 MiB body limit
# from many clients at once while /v1/health is polled and another token completes code.
# Builds the server and the bench (release), runs benches/src/bin/flood_bench.rs.
# Usage: benches/flood_bench.sh [SECONDS (default 20)] [CLIENTS (default 24)]
# Environment: MODEL (GGUF), PROFILE: release (default) or debug (the test build)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="${MODEL:-${SOUFFLEUR_HOME:-$HOME/.souffleur}/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
cd "$root"
source "$root/benches/build_bins.sh"
"$bin_dir/flood_bench" "$bin_dir/souffleur" "$model" "${1:-20}" "${2:-24}"

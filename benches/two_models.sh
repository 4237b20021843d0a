#!/usr/bin/env bash
# Two models in one server under mixed load, with a reload in the middle.
#
# One `souffleur serve --local --port 0 --config CFG` with `coder-0.5b`
# (Qwen2.5-Coder-0.5B, roles ["completion"]) and `coder-1.5b` (Qwen2.5-Coder-1.5B,
# roles ["chat", "review"]). For DURATION seconds, at the same time: 2 clients send
# Tabby completions (random cursors in this repository's Python files), 1 client sends
# chat requests (a coding question, max_tokens 48), 1 client reviews a small real diff
# (`git show REVIEW_COMMIT` of this repository). At RELOAD_AT seconds the config file
# gets a third model, `coder-0.5b-chat` (the 0.5B again, roles ["chat"]) and
# `[roles] chat = "coder-0.5b-chat"`, and `souffleur admin reload --server URL` runs.
#
# Reports per kind: count, failures, p50/p95 latency, the model that answered each
# request (audit table of the home's souffleur.db, joined by x-request-id: name and
# SHA-256); chat answers before and after the reload; the server's peak RSS (VmHWM)
# against `souffleur plan --json --config` of the initial and the reloaded config.
# Exits non-zero if any request failed, went to an unexpected model, or the reload
# was refused. Driver: benches/two_models.py (standard-library Python).
#
# Usage: benches/two_models.sh [OUT.json]
# Environment:
#   DURATION (default 60) seconds of load; RELOAD_AT (default DURATION/2; RELOAD_AT=off
#   for no reload); REVIEW_COMMIT (default a336501, 7 changed lines); SEED (42)
#   SOUFFLEUR  the binary (default: target/release/souffleur, built here with
#              `cargo build --release -p cli` unless NO_BUILD=1)
#   SCHEDULER  extra `[scheduler]` keys, e.g. 'speculation = "off"'
# Linux only (reads /proc). Needs python3 and git.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
models_dir="${SOUFFLEUR_HOME:-$HOME/.souffleur}/models"
souffleur="${SOUFFLEUR:-${CARGO_TARGET_DIR:-$root/target}/release/souffleur}"
duration="${DURATION:-60}"
reload_at="${RELOAD_AT:-$((duration / 2))}"
review_commit="${REVIEW_COMMIT:-a336501}"
seed="${SEED:-42}"
out="${1:-}"

if [[ -z "${SOUFFLEUR:-}" && "${NO_BUILD:-0}" != 1 ]]; then
    (cd "$root" && cargo build --release -p cli >&2)
fi
[[ -x "$souffleur" ]] || { echo "no binary at $souffleur: cargo build --release -p cli" >&2; exit 1; }
for f in qwen2.5-coder-0.5b-instruct-q4_k_m.gguf qwen2.5-coder-1.5b-instruct-q4_k_m.gguf; do
    [[ -f "$models_dir/$f" ]] || { echo "missing $models_dir/$f (souffleur model fetch)" >&2; exit 1; }
done

work="$(mktemp -d -t souffleur-two-models.XXXXXX)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
export SOUFFLEUR_HOME="$work/home"
mkdir -p "$SOUFFLEUR_HOME/models"
for f in "$models_dir"/*.gguf; do ln -s "$(realpath "$f")" "$SOUFFLEUR_HOME/models/"; done
# The verified hashes, so that start-up does not hash the files again.
cp "$models_dir/.sha256-cache" "$SOUFFLEUR_HOME/models/" 2>/dev/null || true

base_config() {
    cat <<EOF
[scheduler]
${SCHEDULER:-}

[[models]]
name = "coder-0.5b"
path = "qwen2.5-coder-0.5b"
roles = ["completion"]

[[models]]
name = "coder-1.5b"
path = "qwen2.5-coder-1.5b"
roles = ["chat", "review"]
EOF
}
cfg="$work/config.toml"
base_config >"$cfg"
{ base_config; cat <<EOF

[[models]]
name = "coder-0.5b-chat"
path = "qwen2.5-coder-0.5b"
roles = ["chat"]

[roles]
chat = "coder-0.5b-chat"
EOF
} >"$work/config-reload.toml"

"$souffleur" plan --json --config "$cfg" >"$work/plan-initial.json"
"$souffleur" plan --json --config "$work/config-reload.toml" >"$work/plan-reload.json"
# The same with the concurrency this load has (2 sequences per model at most).
"$souffleur" plan --json --config "$cfg" --users 2 >"$work/plan-initial-u2.json"
"$souffleur" plan --json --config "$work/config-reload.toml" --users 2 >"$work/plan-reload-u2.json"
git -C "$root" show --format= --no-color "$review_commit" >"$work/review.diff"
echo "review diff: $review_commit, $(grep -c '^[-+][^-+]' "$work/review.diff") changed lines" >&2

"$souffleur" serve --local --port 0 --config "$cfg" >"$work/serve.out" 2>"$work/serve.err" &
server_pid=$!
url=""
for _ in $(seq 1200); do
    url="$(grep -o 'http://[0-9.:]*' "$work/serve.out" 2>/dev/null | head -n 1 || true)"
    [[ -n "$url" ]] && break
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.5
done
[[ -n "$url" ]] || { echo "server did not start" >&2; exit 1; }
echo "server $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet 2>/dev/null || echo ' + uncommitted changes') at $url, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2

args=(mixed --url "$url" --pid "$server_pid" --db "$SOUFFLEUR_HOME/souffleur.db" --root "$root"
      --diff "$work/review.diff" --souffleur "$souffleur" --config "$cfg" --duration "$duration"
      --seed "$seed"
      --plan "initial config=$work/plan-initial.json" --plan "reloaded config=$work/plan-reload.json"
      --plan "initial config, --users 2=$work/plan-initial-u2.json"
      --plan "reloaded config, --users 2=$work/plan-reload-u2.json")
if [[ "$reload_at" != off ]]; then
    args+=(--reload-config "$work/config-reload.toml" --reload-at "$reload_at")
else
    args+=(--expect-chat-after coder-1.5b)
fi
[[ -n "$out" ]] && args+=(--json "$out")
rc=0
python3 "$root/benches/two_models.py" "${args[@]}" || rc=$?
echo "load average at end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if [[ $rc -ne 0 ]]; then
    echo "--- server log (last 30 lines) ---" >&2
    tail -n 30 "$work/serve.err" >&2
fi
exit $rc

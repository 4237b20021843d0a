#!/usr/bin/env bash
# How close `souffleur plan`'s memory estimate is to the server's real peak memory.
#
# For each model the script writes a config with `scheduler.max_active = USERS`,
# `limits.max_prompt_tokens + limits.max_tokens = CONTEXT`, speculation off and a
# prefix cache of two sequences' key/value state, asks `souffleur plan --json` for
# the estimate, starts `souffleur serve --local --port 0` on it, and sends two waves
# of USERS concurrent `/v1/completions` requests whose prompts are CONTEXT - MAX_TOKENS
# random token ids (distinct, so no prefix is reused). The first wave leaves the
# prefix cache full; during the second every sequence's cache fills to CONTEXT
# positions while the prefix cache is full, which is the state the estimate
# describes. Then it reads the process's peak resident memory (VmHWM of
# /proc/PID/status) and prints estimate, measured peak and their ratio, and the
# resident memory after loading (VmRSS before the first request) for reference.
#
# Usage: benches/plan_accuracy.sh [MODEL.gguf ...]
#   (default: SmolLM2-135M, Qwen2.5-Coder-0.5B and -1.5B from ~/.souffleur/models)
# Environment:
#   SOUFFLEUR  the binary (default: $CARGO_TARGET_DIR/release/souffleur, built by
#              `cargo build --release -p cli`; CARGO_TARGET_DIR defaults to target)
#   USERS      concurrent sequences (default 4); CONTEXT tokens per sequence
#              (default 1024); MAX_TOKENS generated per request (default 16)
# Linux only (reads /proc). Needs python3.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
model_home="${SOUFFLEUR_HOME:-$HOME/.souffleur}"
souffleur="${SOUFFLEUR:-${CARGO_TARGET_DIR:-$root/target}/release/souffleur}"
users="${USERS:-4}"
context="${CONTEXT:-1024}"
max_tokens="${MAX_TOKENS:-16}"
prompt_tokens=$((context - max_tokens))
if [[ $# -gt 0 ]]; then
    models=("$@")
else
    models=(
        "$model_home/models/SmolLM2-135M-Instruct.Q4_1.gguf"
        "$model_home/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
        "$model_home/models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    )
fi
[[ -x "$souffleur" ]] || { echo "no binary at $souffleur: cargo build --release -p cli" >&2; exit 1; }

work="$(mktemp -d -t souffleur-plan-accuracy.XXXXXX)"
server_pid=""
cleanup() {
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export SOUFFLEUR_HOME="$work/home"
mkdir -p "$SOUFFLEUR_HOME/models"
# The verified hashes, so that start-up does not hash the files again.
cp "$model_home/models/.sha256-cache" "$SOUFFLEUR_HOME/models/" 2>/dev/null || true

config() { # prefix_cache_mib
    cat <<EOF
[scheduler]
max_active = $users
prefix_cache_mib = $1
speculation = "off"

[limits]
max_prompt_tokens = $prompt_tokens
max_tokens = $max_tokens

[completion]
prefix_tokens = 64
suffix_tokens = 32
snippet_tokens = 32
EOF
}

# Sends two waves of $users concurrent requests of $prompt_tokens random token ids.
drive() { # address
    python3 - "$1" "$users" "$prompt_tokens" "$max_tokens" <<'EOF'
import json, random, sys, threading, urllib.request
addr, users, prompt_tokens, max_tokens = sys.argv[1], *map(int, sys.argv[2:5])
def one(seed, out):
    rng = random.Random(seed)
    # Ids every vocabulary here has as ordinary tokens.
    prompt = [rng.randrange(1000, 20000) for _ in range(prompt_tokens)]
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}).encode()
    req = urllib.request.Request(f"http://{addr}/v1/completions", body,
                                 {"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=1800) as r:
        out.append(json.load(r)["usage"])
for wave in range(2):
    out = []
    threads = [threading.Thread(target=one, args=(wave * 1000 + i, out)) for i in range(users)]
    for t in threads: t.start()
    for t in threads: t.join()
    if len(out) != users:
        sys.exit(f"wave {wave}: {users - len(out)} requests failed")
EOF
}

kib() { awk -v k="$1:" '$1 == k {print $2}' "/proc/$2/status"; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f", b / 1048576}'; }

printf '%-42s %5s %7s %10s %10s %10s %7s\n' model users context "rss-idle" estimate "peak-rss" ratio
for model in "${models[@]}"; do
    [[ -f "$model" ]] || { echo "skipped (missing): $model" >&2; continue; }
    name="$(basename "$model" .gguf)"
    cfg="$work/$name.toml"
    { printf '[model]\npath = "%s"\n\n' "$model"; config 0; } >"$cfg"
    per_token="$("$souffleur" plan --config "$cfg" --memory 1024 --json | python3 -c \
        'import json,sys; print(json.load(sys.stdin)["models"][0]["kv_bytes_per_token"])')"
    # A prefix cache of two sequences' state (whole MiB), which the first wave fills.
    positions=$(( (context + 255) / 256 * 256 ))
    { printf '[model]\npath = "%s"\n\n' "$model"
      config $(( (2 * positions * per_token + 1048575) / 1048576 )); } >"$cfg"
    plan="$("$souffleur" plan --config "$cfg" --memory 1024 --json)"
    estimate="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["total_bytes"])' <<<"$plan")"
    fifo="$work/out"; rm -f "$fifo"; mkfifo "$fifo"
    "$souffleur" serve --local --port 0 --config "$cfg" --model "$model" >"$fifo" 2>"$work/$name.log" &
    server_pid=$!
    exec 3<"$fifo"
    addr=""
    while read -r line <&3; do
        if [[ "$line" =~ on\ http://([^ ]+) ]]; then addr="${BASH_REMATCH[1]}"; break; fi
    done
    [[ -n "$addr" ]] || { cat "$work/$name.log" >&2; exit 1; }
    idle=$(( $(kib VmRSS "$server_pid") * 1024 ))
    drive "$addr"
    peak=$(( $(kib VmHWM "$server_pid") * 1024 ))
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
    exec 3<&-
    ratio="$(awk -v e="$estimate" -v p="$peak" 'BEGIN {printf "%.3f", e / p}')"
    printf '%-42s %5s %7s %10s %10s %10s %7s\n' "$name" "$users" "$context" \
        "$(mib "$idle")M" "$(mib "$estimate")M" "$(mib "$peak")M" "$ratio"
    python3 -c 'import json,sys; m=json.load(sys.stdin)["models"][0]; print("   ", ", ".join(f"{k} {m[k]/1048576:.1f}M" for k in ("weights_bytes","kv_cache_bytes","prefix_cache_bytes","working_bytes")))' <<<"$plan"
done

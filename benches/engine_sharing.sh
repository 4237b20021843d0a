#!/usr/bin/env bash
# Do two engines in one server share the CPU fairly? One `souffleur serve` with two
# engines of the same model (`a` and `b`), chat answers of MAX_TOKENS tokens (greedy,
# speculation off): each model alone, then both at once; prints tokens/s per request.
#
# Usage: benches/engine_sharing.sh [MODEL]   (default: qwen2.5-coder-0.5b, in $SOUFFLEUR_HOME)
# Environment: SOUFFLEUR (default target/release/souffleur), MAX_TOKENS (default 96).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
souffleur="${SOUFFLEUR:-$root/target/release/souffleur}"
model="${1:-qwen2.5-coder-0.5b}"
work="$(mktemp -d)"
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.toml" <<TOML
[[models]]
name = "a"
path = "$model"
roles = ["completion", "chat", "review"]
speculation = "off"

[[models]]
name = "b"
path = "$model"
roles = []
speculation = "off"
TOML
"$souffleur" serve --local --port 0 --config "$work/config.toml" > "$work/out" 2> "$work/err" &
pid=$!
for _ in $(seq 1 120); do
  url=$(grep -o "http://[0-9.:]*" "$work/out" | head -n 1 || true)
  [ -n "$url" ] && break
  sleep 1
done
[ -n "${url:-}" ] || { cat "$work/err" >&2; exit 1; }
python3 - "$url" "${MAX_TOKENS:-96}" <<'PY'
import json, sys, threading, time, urllib.request
url, max_tokens = sys.argv[1], int(sys.argv[2])
def chat(model, out):
    body = {"model": model, "max_tokens": max_tokens, "temperature": 0, "messages": [
        {"role": "user", "content": "Write a Python function that parses a CSV line with quoted fields, with comments."}]}
    request = urllib.request.Request(url + "/v1/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t = time.monotonic()
    answer = json.loads(urllib.request.urlopen(request).read())
    out.append((model, answer["usage"]["completion_tokens"], time.monotonic() - t))
for label, models in [("alone", ["a"]), ("alone", ["b"]), ("both", ["a", "b"]), ("alone", ["a"]), ("both", ["a", "b"])]:
    out = []
    threads = [threading.Thread(target=chat, args=(m, out)) for m in models]
    [t.start() for t in threads]
    [t.join() for t in threads]
    print("%-6s %s" % (label, "  ".join("%s: %d tokens in %.1f s = %.1f tok/s" % (m, n, dt, n / dt) for m, n, dt in sorted(out))), flush=True)
PY

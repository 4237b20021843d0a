#!/usr/bin/env bash
# The completion server under load (issue 4): simulated developers typing in real
# files of an indexed repository not written here, one Tabby completion request per
# keystroke, at 1, 4 and 16 concurrent clients (see benches/src/bin/load_gen.rs).
#
# The script builds the server and the load generator (release), copies the corpus
# into a temporary git repository and commits it, makes a temporary SOUFFLEUR_HOME
# with the default model linked in, indexes the corpus there, creates one API token
# per simulated developer (each token has its own concurrent-request limit, as each
# developer would), and runs load_gen, which starts a fresh server for every level.
# Prints a table; with an argument, also writes the JSON report to that file.
#
# Usage: benches/load_bench.sh [OUT.json]
# Environment:
#   MODEL      GGUF to serve (default: the default model, Qwen2.5-Coder-0.5B, in
#              $SOUFFLEUR_HOME/models or ~/.souffleur/models)
#   CORPUS     repository source to copy (default: regex-automata from ~/.cargo/registry/src)
#   LEVELS     client counts (default 1,4,16); DURATION of each measurement window in seconds
#              (default 60); WARMUP: least warm-up in seconds (default 10; it also lasts until
#              every client has had a response, at most MAX_WARMUP, default 240)
#   SEED       (default 42); TOKENS: number of distinct tokens (default: the largest level;
#              TOKENS=1 makes every client share one token and its limit)
#   TRACE      file for one JSON line per measured request (latency, cursor, completion)
#   SPECULATION  the server's `scheduler.speculation` (default: the server's default)
#   COMPLETION_CONFIG  keys for the server's `[completion]` section, e.g. "suffix_tokens = 64"
#   CARGO_TARGET_DIR (default: target); PROFILE: release (default) or debug
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
model_home="${SOUFFLEUR_HOME:-$HOME/.souffleur}"
model="${MODEL:-$model_home/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
corpus_src="${CORPUS:-$(ls -d "$HOME"/.cargo/registry/src/*/regex-automata-0.4.* | sort -V | tail -n 1)}"
levels="${LEVELS:-1,4,16}"
warmup="${WARMUP:-10}"
max_warmup="${MAX_WARMUP:-240}"
duration="${DURATION:-60}"
seed="${SEED:-42}"
max_level="$(tr ',' '\n' <<<"$levels" | sort -n | tail -n 1)"
tokens="${TOKENS:-$max_level}"
out="${1:-}"

if [[ ! -f "$model" ]]; then
    echo "model not found: $model (run \`souffleur model fetch-default\` or set MODEL)" >&2
    exit 1
fi

cd "$root"
source "$root/benches/build_bins.sh"
souffleur="$bin_dir/souffleur"

work="$(mktemp -d -t souffleur-load-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT
export SOUFFLEUR_HOME="$work/home"
mkdir -p "$SOUFFLEUR_HOME/models"
ln -s "$(realpath "$model")" "$SOUFFLEUR_HOME/models/$(basename "$model")"
# The servers load_gen starts serve this model (it need not be the catalogue default).
export SOUFFLEUR_MODEL="$(basename "$model")"
# Its verified hash, so that start-up does not hash the file again.
cp "$model_home/models/.sha256-cache" "$SOUFFLEUR_HOME/models/" 2>/dev/null || true
if [[ -n "${SPECULATION:-}" ]]; then
    printf '[scheduler]\nspeculation = "%s"\n' "$SPECULATION" >"$SOUFFLEUR_HOME/config.toml"
fi
if [[ -n "${COMPLETION_CONFIG:-}" ]]; then
    printf '[completion]\n%s\n' "$COMPLETION_CONFIG" >>"$SOUFFLEUR_HOME/config.toml"
fi

name="$(basename "$corpus_src")"
mkdir -p "$work/$name"
tar -C "$corpus_src" -cf - --exclude=.git --exclude=target . | tar -C "$work/$name" -xf -
git -C "$work/$name" init -q
git -C "$work/$name" add -A -f
git -C "$work/$name" -c user.name=bench -c user.email=bench@localhost commit -q -m "corpus snapshot"
echo "corpus $name: $(git -C "$work/$name" ls-files | wc -l) files, $(du -sh --exclude=.git "$work/$name" | cut -f1)" >&2
"$souffleur" index add "$work/$name" --name "$name" >&2

for i in $(seq 0 $((tokens - 1))); do
    "$souffleur" token create --name "bench-$i" --role admin | tail -n 1 >>"$work/tokens"
done

args=(--souffleur "$souffleur" --home "$SOUFFLEUR_HOME" --corpus "$work/$name"
      --tokens "$work/tokens" --levels "$levels" --warmup "$warmup" --max-warmup "$max_warmup" --duration "$duration"
      --seed "$seed")
if [[ -n "$out" ]]; then
    args+=(--json "$out")
fi
if [[ -n "${TRACE:-}" ]]; then
    args+=(--trace "$TRACE")
fi
echo "server $(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$root" diff --quiet 2>/dev/null || echo ' + uncommitted changes'), speculation ${SPECULATION:-default}, $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)" >&2
"$bin_dir/load_gen" "${args[@]}"

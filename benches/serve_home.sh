# Sourced by the bench scripts that talk to a real `souffleur serve`: a temporary
# SOUFFLEUR_HOME ($work/home) with the installed models linked in (and their verified
# hashes, so start-up does not hash again), and `serve` / `stop` for a local-mode server
# on a free port (its base URL in $url). Expects $bin_dir (from build_bins.sh); removes
# $work and stops the server on exit.
models_dir="${SOUFFLEUR_HOME:-$HOME/.souffleur}/models"
work="$(mktemp -d -t souffleur-bench.XXXXXX)"
server_pid=""
cleanup() { [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
export SOUFFLEUR_HOME="$work/home"
mkdir -p "$SOUFFLEUR_HOME/models"
for f in "$models_dir"/*.gguf; do ln -s "$(realpath "$f")" "$SOUFFLEUR_HOME/models/"; done
cp "$models_dir/.sha256-cache" "$SOUFFLEUR_HOME/models/" 2>/dev/null || true

# Starts `souffleur serve --local --port 0` and waits for its address in $url.
serve() {
  "$bin_dir/souffleur" serve --local --port 0 >"$work/serve.out" 2>"$work/serve.err" &
  server_pid=$!
  url=""
  for _ in $(seq 600); do
    url="$(grep -o 'http://[0-9.:]*' "$work/serve.out" 2>/dev/null | head -n 1 || true)"
    [[ -n "$url" ]] && return 0
    kill -0 "$server_pid" 2>/dev/null || { cat "$work/serve.err" >&2; exit 1; }
    sleep 0.5
  done
  echo "server did not start" >&2; exit 1
}

# Stops the server `serve` started.
stop() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

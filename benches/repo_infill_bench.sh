#!/usr/bin/env bash
# Repository-level line completion (benches/repo_infill/run.py) through a real
# `souffleur serve` (release) on real repositories nobody here wrote, each copied into a
# git repository and indexed: the Python standard library's `email` package and the
# `ignore` crate from the local cargo registry. Runs retrieval on and off with the
# model's repository-level prompt format, then retrieval on with snippets as comments
# (`[completion] repository_format = false`).
#
#   bash benches/repo_infill_bench.sh            # default model, 50 positions per repository
# Environment: MODEL (catalogue name), PER_REPO, SEED, LOG (per-task JSON lines), PROFILE,
# COMMENTS (1 = also the comment-style run, the default; 0 = skip it), MODES (retrieval
# modes of the repository-format run: on,off by default), CURSOR (line, the default, or
# mid: the line half typed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${MODEL:-qwen2.5-coder-0.5b}"
per_repo="${PER_REPO:-50}"
seed="${SEED:-7}"
source "$root/benches/build_bins.sh"
souffleur="$bin_dir/souffleur"

source "$root/benches/serve_home.sh"
export SOUFFLEUR_MODEL="$model"

email_src="$(python3 -c 'import email, os; print(os.path.dirname(email.__file__))')"
ignore_src="$(ls -d "$HOME"/.cargo/registry/src/*/ignore-0.4.* | sort -V | tail -n 1)"
repos=()
for src in "$email_src" "$ignore_src"; do
  name="$(basename "$src")"
  mkdir -p "$work/$name"
  tar -C "$src" -cf - --exclude=.git --exclude=target --exclude=__pycache__ . | tar -C "$work/$name" -xf -
  git -C "$work/$name" init -q
  git -C "$work/$name" add -A -f
  git -C "$work/$name" -c user.name=bench -c user.email=bench@localhost commit -q -m snapshot
  "$souffleur" index add "$work/$name" --name "$name" >&2
  repos+=(--repo "$work/$name")
done

log_args=()
[[ -n "${LOG:-}" ]] && log_args=(--log "$LOG")
echo "$(date -u +%FT%TZ) $model, $per_repo positions per repository, seed $seed, $(nproc) cores" >&2

serve
"${PYTHON:-python3}" benches/repo_infill/run.py --server "$url" "${repos[@]}" --per-repo "$per_repo" \
  --seed "$seed" --cursor "${CURSOR:-line}" --modes "${MODES:-on,off}" --label "repository format" "${log_args[@]}"
stop
[[ "${COMMENTS:-1}" == 1 ]] || exit 0
printf '[completion]\nrepository_format = false\n' >"$SOUFFLEUR_HOME/config.toml"
serve
"${PYTHON:-python3}" benches/repo_infill/run.py --server "$url" "${repos[@]}" --per-repo "$per_repo" \
  --seed "$seed" --cursor "${CURSOR:-line}" --modes on --label "comment snippets" "${log_args[@]}"
stop

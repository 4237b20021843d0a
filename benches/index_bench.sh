#!/usr/bin/env bash
# Benchmark of the code index (issue 3) on real code not written here:
#   - the crate sources in ~/.cargo/registry/src (Rust and C),
#   - the Python standard library (without site-packages and __pycache__).
# Each corpus is copied into a temporary git repository and committed, then
# index_bench (release build) indexes both, syncs after changing 10 files,
# and measures retrieval latency. Prints JSON; with an argument, also writes
# it to that file.
#
# Usage: benches/index_bench.sh [OUT.json]
# Environment: CARGO_TARGET_DIR (default: target), QUERIES (default 2000),
#   CRATES_SRC, PYTHON_LIB to point at other corpora, ALLOCATOR=system to
#   measure with the system allocator instead of mimalloc.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
crates_src="${CRATES_SRC:-$(ls -d "$HOME"/.cargo/registry/src/*/ | head -n 1)}"
python_lib="${PYTHON_LIB:-/root/.pyenv/versions/3.11.7/lib/python3.11}"
queries="${QUERIES:-2000}"
out="${1:-}"

work="$(mktemp -d -t souffleur-index-bench.XXXXXX)"
trap 'rm -rf "$work"' EXIT

make_repo() { # make_repo NAME SOURCE [tar excludes...]
    local name="$1" src="$2"
    shift 2
    mkdir -p "$work/$name"
    tar -C "$src" -cf - "$@" . | tar -C "$work/$name" -xf -
    git -C "$work/$name" init -q
    git -C "$work/$name" add -A -f
    git -C "$work/$name" -c user.name=bench -c user.email=bench@localhost \
        commit -q -m "corpus snapshot"
    echo "$name: $(git -C "$work/$name" ls-files | wc -l) files, $(du -sh --exclude=.git "$work/$name" | cut -f1)" >&2
}

echo "preparing corpora in $work" >&2
make_repo crates "$crates_src" --exclude=.git
make_repo pystdlib "$python_lib" --exclude=__pycache__ --exclude=site-packages --exclude=.git

cd "$root"
features=()
if [[ "${ALLOCATOR:-mimalloc}" == "system" ]]; then
    features=(--no-default-features)
fi
cargo build --release -p souffleur-benches --bin index_bench "${features[@]}" >&2
bin="${CARGO_TARGET_DIR:-$root/target}/release/index_bench"

args=(--index "$work/index" --repo "crates=$work/crates" --repo "pystdlib=$work/pystdlib"
      --queries "$queries" --changed 10)
if [[ -n "$out" ]]; then
    args+=(--json "$out")
fi
"$bin" "${args[@]}"

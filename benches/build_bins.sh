# Sourced by the bench scripts: builds the server and the bench binaries for $PROFILE
# (release by default; debug = the test build, same package set as scripts/test.sh) and
# sets bin_dir to where they are. Expects $root (the repository) and runs there.
profile="${PROFILE:-release}"
if [[ "$profile" == release ]]; then
    (cd "$root" && cargo build --release -p cli -p souffleur-benches >&2)
else
    (cd "$root" && cargo build --workspace --all-targets >&2)
fi
bin_dir="${CARGO_TARGET_DIR:-$root/target}/$profile"

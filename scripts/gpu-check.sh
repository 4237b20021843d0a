#!/usr/bin/env bash
# The device check (issue 19): one command on an NVIDIA GPU machine (H100/H200, CUDA 13
# driver), no network, no Rust. Under 8 minutes.
#
#   here:       bash scripts/cuda-build.sh --bundle      (release build + target/gpu-bundle/)
#   on the GPU: bash scripts/gpu-check.sh                (with target/gpu-bundle carried)
#
# 1. Kernel checks on the device: every check of engine::kernel_checks (what CI runs on
#    the grid emulator) against the engine's CPU implementations.
# 2. Engine reference tests on the device: the tiny llama/qwen2/starcoder2 checkpoints and
#    the tiny qwen2 GGUF against their transformers / llama.cpp fixtures (reference_tiny).
# 3. Measurements for Qwen2.5-Coder 0.5B and 1.5B (Q4_K_M): greedy output GPU vs CPU,
#    batch-1 decode tokens/s and its fraction of the bandwidth roofline (bandwidth measured
#    with the copy kernel), aggregate tokens/s at 1/8/32/64 concurrent requests, speculative
#    speedup with n-gram drafts.
#
# Models: $SOUFFLEUR_HOME/models (default ~/.souffleur/models) when the GGUFs are there;
# otherwise rebuilt from the headers in the bundle with random weights of the same types
# and sizes (benches/gpu/synth_gguf.py; the device tool carries at most 64 MiB), and the
# report says so. Output: $OUT (or ./gpu-check-out): gpu-check.json, gpu-check.md and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
out=${OUT:-$PWD/gpu-check-out}
mkdir -p "$out"
bundle=target/gpu-bundle
if [ ! -f "$bundle/gpu_check.xz" ] || [ ! -f "$bundle/reference_tiny.xz" ]; then
  echo "no device bundle in $bundle: run 'bash scripts/cuda-build.sh --bundle' and carry target/gpu-bundle" >&2
  exit 2
fi
b=$(mktemp -d)
for f in gpu_check reference_tiny; do
  python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$bundle/$f.xz" "$b/$f"
  chmod +x "$b/$f"
done

# The CUDA libraries the binaries link: the driver's libcuda, and cuBLAS, cuRAND and the
# runtime from the machine's CUDA 13 wheels (PyTorch's) or toolkit.
libs=$(python3 - <<'PY'
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()] + sys.path
dirs = []
for r in roots:
    for pattern in ("nvidia/cu13/lib", "nvidia/*/lib"):
        for d in glob.glob(os.path.join(r, pattern)):
            if d not in dirs and glob.glob(os.path.join(d, "lib*.so*")):
                dirs.append(d)
for d in ("/usr/local/cuda/lib64", "/usr/local/nvidia/lib64", "/usr/lib/x86_64-linux-gnu"):
    if os.path.isdir(d):
        dirs.append(d)
print(":".join(dirs))
PY
)
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$b/gpu_check" | grep "not found"; then
  echo "CUDA libraries missing (searched $libs)" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$out/device.txt"

echo "== models"
home=${SOUFFLEUR_HOME:-$HOME/.souffleur}
models=$(mktemp -d)
for m in qwen2.5-coder-0.5b-instruct-q4_k_m qwen2.5-coder-1.5b-instruct-q4_k_m; do
  if [ -f "$home/models/$m.gguf" ]; then
    ln -s "$home/models/$m.gguf" "$models/$m.gguf"
    echo "$m: real weights"
  else
    python3 benches/gpu/synth_gguf.py "$bundle/$m.head.gguf.gz" "$models/$m.gguf"
    touch "$models/$m.gguf.synthetic"
    echo "$m: synthetic weights (same shapes and types)"
  fi
done

echo "== engine reference tests on the device (reference_tiny)"
# The test binary reads its fixtures where it was built (/work/main/engine/tests/fixtures).
if [ ! -e /work/main/engine/tests/fixtures ]; then
  mkdir -p /work
  ln -sfn "$PWD" /work/main
fi
set +e
SOUFFLEUR_DEVICE=cuda "$b/reference_tiny" --test-threads=1 >"$out/reference_tiny.log" 2>&1
tiny=$?
set -e
tail -n 3 "$out/reference_tiny.log"

echo "== kernel checks and measurements (gpu_check)"
set +e
"$b/gpu_check" --models "$models" --corpus engine/tests/fixtures/corpus \
  --json "$out/gpu-check.json" --markdown "$out/gpu-check.md" 2>&1 | tee "$out/gpu_check.log"
check=${PIPESTATUS[0]}
set -e
python3 - "$out" "$tiny" "$models" "$((SECONDS - started))" <<'PY'
import json, os, sys
out, tiny, models, secs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
path = os.path.join(out, "gpu-check.json")
report = json.load(open(path)) if os.path.exists(path) else {}
log = open(os.path.join(out, "reference_tiny.log")).read().strip().splitlines()
summary = next((l for l in reversed(log) if l.startswith("test result")), log[-1] if log else "")
report["engine_reference_tests"] = {"passed": tiny == 0, "summary": summary}
report["weights"] = {m: ("synthetic" if os.path.exists(os.path.join(models, m + ".synthetic")) else "real")
                     for m in sorted(os.listdir(models)) if m.endswith(".gguf")}
report["seconds"] = secs
json.dump(report, open(path, "w"), indent=2)
with open(os.path.join(out, "gpu-check.md"), "a") as md:
    md.write(f"\nEngine reference tests on the device: {'ok' if tiny == 0 else 'FAILED'} ({summary})\n")
    md.write("Weights: " + ", ".join(f"{k}: {v}" for k, v in report["weights"].items()) + "\n")
    md.write(f"Total: {secs} s\n")
PY
rm -rf "$models" "$b"
echo "gpu-check: $((SECONDS - started)) s; report in $out/gpu-check.json and $out/gpu-check.md"
[ "$tiny" -eq 0 ] && [ "$check" -eq 0 ]

#!/usr/bin/env bash
# Builds the benchmark peer, llama.cpp through llama-cpp-python 0.3.36 (from source),
# into <repo>/.venv-peer (git-ignored). No torch: only what the peer scripts import.
#
#   bash benches/setup_peer.sh        # ~10-15 min on 2 cores, once per machine
#
# Built without -march=native and with AMX off: on CPUs with AMX-INT8 a native
# build crashes in the first decode (see ../shared/FACTS.md).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv-peer}"
if "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "llama-cpp-python already in $VENV"; exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install -q "numpy==2.4.6" "gguf==0.19.0"
# The AVX-512 flags follow this CPU: a build with them on dies with SIGILL on CPUs
# without AVX-512 (some machines of this kind are AMD EPYC with AVX2 only).
flag() { if grep -qw "$1" /proc/cpuinfo; then echo ON; else echo OFF; fi; }
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_AVX512=$(flag avx512f) -DGGML_AVX512_VNNI=$(flag avx512_vnni) \
-DGGML_AVX512_VBMI=$(flag avx512vbmi) -DGGML_AVX512_BF16=$(flag avx512_bf16) \
-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF \
-DGGML_CUDA=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$VENV/bin/pip" install -q --no-binary llama-cpp-python "llama-cpp-python==0.3.36" \
  "diskcache==5.6.3" "Jinja2==3.1.6" "MarkupSafe==3.0.4" "typing_extensions==4.16.0"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__)"

#!/usr/bin/env bash
# Builds llama.cpp's own HTTP server, `llama-server`, the upstream engine the remote
# backends are tested against, into <repo>/.llama-server/bin (git-ignored).
#
#   bash scripts/setup_llama_server.sh     # ~10 min on 2 cores, once per machine
#
# The sources come from the llama-cpp-python 0.3.36 sdist on PyPI (it vendors the
# whole llama.cpp tree, tools/server included); cmake and ninja from their PyPI
# wheels. Built without the web UI (no download at build time), without OpenSSL, CPU
# only, without -march=native and with AMX off: on CPUs with AMX-INT8 a native build
# crashes in the first decode (../shared/FACTS.md); the AVX-512 flags follow this CPU.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${LLAMA_SERVER_HOME:-$ROOT/.llama-server}"
VERSION=0.3.36
if [ -x "$DEST/bin/llama-server" ] && "$DEST/bin/llama-server" --version >/dev/null 2>&1; then
  echo "llama-server already in $DEST/bin"; exit 0
fi
mkdir -p "$DEST/src" "$DEST/bin"
if [ ! -x "$DEST/tools/bin/cmake" ]; then
  python3 -m venv "$DEST/tools"
  "$DEST/tools/bin/pip" install -q "cmake==4.4.5" "ninja==1.13.2"
fi
export PATH="$DEST/tools/bin:$PATH"
SDIST="$DEST/src/llama_cpp_python-$VERSION.tar.gz"
if [ ! -f "$SDIST" ]; then
  "$DEST/tools/bin/pip" download -q --no-deps --no-binary llama-cpp-python \
    "llama-cpp-python==$VERSION" -d "$DEST/src"
fi
SRC="$DEST/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
[ -d "$SRC" ] || tar xzf "$SDIST" -C "$DEST/src"
flag() { if grep -qw "$1" /proc/cpuinfo; then echo ON; else echo OFF; fi; }
cmake -S "$SRC" -B "$DEST/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
  -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_CURL=OFF \
  -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
  -DGGML_AVX512="$(flag avx512f)" -DGGML_AVX512_VNNI="$(flag avx512_vnni)" \
  -DGGML_AVX512_VBMI="$(flag avx512vbmi)" -DGGML_AVX512_BF16="$(flag avx512_bf16)" \
  -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DGGML_OPENMP=OFF \
  -DGGML_CUDA=OFF -DGGML_BLAS=OFF >"$DEST/cmake.log"
cmake --build "$DEST/build" --target llama-server -j "$(nproc)" >"$DEST/build.log"
cp "$DEST/build/bin/llama-server" "$DEST/bin/llama-server"
"$DEST/bin/llama-server" --version 2>&1 | head -2

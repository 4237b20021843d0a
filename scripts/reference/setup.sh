#!/usr/bin/env bash
# Create the reference-fixture virtualenv at <repo>/.venv-ref (gitignored) and
# install the pinned tools. Only needed to REGENERATE fixtures; never by CI.
#
#   bash scripts/reference/setup.sh
#
# Takes ~11-16 min on 2 cores: torch from PyPI pulls its CUDA wheels (~3 GB,
# unused here: everything runs on CPU) and llama-cpp-python 0.3.36 is compiled
# from source (~10-15 min, 193 ninja steps).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${VENV:-$ROOT/.venv-ref}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x /root/.pyenv/versions/3.11.7/bin/python3.11 ]; then
    PY=/root/.pyenv/versions/3.11.7/bin/python3.11
  else
    PY=python3
  fi
fi

"$PY" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip==25.3
"$VENV/bin/pip" install -r "$HERE/requirements.txt" -c "$HERE/constraints.txt"

# llama.cpp via llama-cpp-python, CPU only. Built with the default
# GGML_NATIVE=ON (-march=native); OpenMP off (ggml's own thread pool), no
# GPU/BLAS backends, no libcurl.
CMAKE_ARGS="-DGGML_OPENMP=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DGGML_BLAS=OFF -DLLAMA_CURL=OFF" \
CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$VENV/bin/pip" install --no-binary llama-cpp-python llama-cpp-python==0.3.36 -c "$HERE/constraints.txt"

"$VENV/bin/pip" check
"$VENV/bin/python" -c "import llama_cpp, torch, transformers, tokenizers, gguf; print('llama-cpp-python', llama_cpp.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__, '| tokenizers', tokenizers.__version__)"

#!/usr/bin/env bash
# CUDA toolkit from PyPI wheels, for machines without a system CUDA install
# (including GPU-less ones: enough to compile kernels and to link a
# candle-core `cuda` build).
#
#   bash scripts/cuda-toolchain.sh      install (idempotent) and print the exports
#   source scripts/cuda-toolchain.sh    install if needed and export them here
#
# Installs into .cuda/ at the repository root (git-ignored):
#   .cuda/venv/        python venv holding the pinned nvidia-* wheels
#   .cuda/cuda         symlink -> .cuda/venv/lib/python3.X/site-packages/nvidia/cu13,
#                      a normal CUDA_HOME layout: bin/{nvcc,ptxas,...}, include/,
#                      include/cccl/, lib/, lib/stubs/, nvvm/
#   .cuda/stamp        pins of the last successful install (fast path)
#
# The wheels ship only versioned sonames (libcublas.so.13, ...); the unversioned
# link names (libcublas.so -> libcublas.so.13) are added to $CUDA_HOME/lib.
# No PyPI wheel ships the driver stub libcuda.so, so one is generated with the
# host C compiler from the entry points declared in cuda.h and put in
# $CUDA_HOME/lib/stubs/libcuda.so (soname libcuda.so.1, every function returns
# CUDA_ERROR_NO_DEVICE). It is for the linker only: lib/stubs is put on
# LIBRARY_PATH, never on LD_LIBRARY_PATH, so a real driver's libcuda.so.1 is
# the one loaded at run time.
#
# Exports: CUDA_HOME CUDA_ROOT CUDA_PATH PATH LIBRARY_PATH LD_LIBRARY_PATH
#          CUDARC_CUDA_VERSION (unless set) CUDA_COMPUTE_CAP (90 unless set).
# RUSTFLAGS is deliberately left alone (changing it rebuilds every crate);
# cudarc's build script adds $CUDA_HOME/lib and lib/stubs to the link search
# itself and gcc honours LIBRARY_PATH for the rest.

_souffleur_cuda_main() {
    local root
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    local dir="$root/.cuda"
    local venv="$dir/venv"
    local home_link="$dir/cuda"
    local stamp="$dir/stamp"

    # CUDA 13.0 (= the cuda-toolkit 13.0.2 meta-package's pins). PTX carries the ISA
    # version of the nvcc that made it, and a driver loads only ISAs it knows: 13.0
    # PTX loads on every CUDA 13 driver (the lent GPU machines have CUDA 13.0), where
    # 13.4 PTX would need a 13.4 driver. cudarc 0.19.10 accepts 13.0 to 13.4.
    local pins=(
        nvidia-cuda-nvcc==13.0.88
        nvidia-cuda-crt==13.0.88
        nvidia-nvvm==13.0.88
        nvidia-cuda-runtime==13.0.96
        "nvidia-cuda-cccl==13.0.85.*"
        nvidia-cuda-nvrtc==13.0.88
        nvidia-cublas==13.1.0.3
        nvidia-curand==10.4.0.35
    )
    local cudarc_version=13000
    local stamp_key="v1 ${pins[*]}"

    if [[ -f "$stamp" && "$(cat "$stamp")" == "$stamp_key" && -x "$home_link/bin/nvcc" \
          && -e "$home_link/lib/stubs/libcuda.so" ]]; then
        :
    else
        echo "cuda-toolchain: installing CUDA wheels into $venv" >&2
        mkdir -p "$dir" || return 1
        # A fresh venv: wheels of other pins leave files and links behind.
        rm -rf "$venv" "$home_link"
        python3 -m venv "$venv" || return 1
        "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
            "${pins[@]}" >&2 || return 1

        local cu
        cu=$("$venv/bin/python" -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13"))') || return 1
        if [[ ! -x "$cu/bin/nvcc" ]]; then
            echo "cuda-toolchain: no nvcc under $cu" >&2
            return 1
        fi
        ln -sfn "$cu" "$home_link" || return 1

        # Unversioned link names for the shared libraries.
        local f base
        for f in "$cu"/lib/lib*.so.*; do
            [[ -f "$f" ]] || continue
            base=$(basename "$f")
            base=${base%%.so.*}.so
            [[ -e "$cu/lib/$base" ]] || ln -sfn "$(basename "$f")" "$cu/lib/$base" || return 1
        done

        # Driver stub libcuda.so for linking (see header).
        mkdir -p "$cu/lib/stubs" || return 1
        local tmp
        tmp=$(mktemp -d) || return 1
        {
            local defs
            for defs in "" -DCUDA_API_PER_THREAD_DEFAULT_STREAM -D__CUDA_API_VERSION_INTERNAL; do
                ${CC:-cc} -E -P $defs -I"$cu/include" "$cu/include/cuda.h"
            done | grep -oE '\bcu[A-Za-z0-9_]+[[:space:]]*\(' | tr -d ' \t('
            # cudaProfiler.h is not in the wheels; its three entry points live in libcuda too.
            printf '%s\n' cuProfilerInitialize cuProfilerStart cuProfilerStop
        } | sort -u | awk '{ printf "int %s(void) { return 100; }\n", $1 }' > "$tmp/stub.c"
        if [[ $(wc -l < "$tmp/stub.c") -lt 300 ]]; then
            echo "cuda-toolchain: too few driver entry points found in cuda.h" >&2
            rm -rf "$tmp"; return 1
        fi
        ${CC:-cc} -shared -fPIC -O0 -Wl,-soname,libcuda.so.1 -o "$tmp/libcuda.so" "$tmp/stub.c" || { rm -rf "$tmp"; return 1; }
        mv -f "$tmp/libcuda.so" "$cu/lib/stubs/libcuda.so" || { rm -rf "$tmp"; return 1; }
        rm -rf "$tmp"

        "$cu/bin/nvcc" --version >/dev/null || return 1
        printf '%s\n' "$stamp_key" > "$stamp" || return 1
    fi

    local home="$home_link"
    export CUDA_HOME="$home" CUDA_ROOT="$home" CUDA_PATH="$home"
    case ":$PATH:" in
        *":$home/bin:"*) ;;
        *) export PATH="$home/bin:$PATH" ;;
    esac
    case ":${LIBRARY_PATH:-}:" in
        *":$home/lib:"*) ;;
        *) export LIBRARY_PATH="$home/lib:$home/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}" ;;
    esac
    case ":${LD_LIBRARY_PATH:-}:" in
        *":$home/lib:"*) ;;
        *) export LD_LIBRARY_PATH="$home/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ;;
    esac
    export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-$cudarc_version}"
    export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
}

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
    # Sourced: export into the caller's shell; never exit it.
    if _souffleur_cuda_main; then
        unset -f _souffleur_cuda_main
    else
        unset -f _souffleur_cuda_main
        echo "cuda-toolchain: failed" >&2
        return 1
    fi
else
    set -euo pipefail
    _souffleur_cuda_main
    for v in CUDA_HOME CUDA_ROOT CUDA_PATH PATH LIBRARY_PATH LD_LIBRARY_PATH CUDARC_CUDA_VERSION CUDA_COMPUTE_CAP; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
fi

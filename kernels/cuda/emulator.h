// The grid emulator: CUDA's built-ins for kernels compiled by the host C++ compiler.
//
// A launch runs its blocks one after another on the calling thread. Each CUDA thread
// of a block is a fiber (ucontext) with its own stack; fibers run in turn until they
// reach a barrier: `__syncthreads` (the whole block) or a warp shuffle (its warp,
// which exchanges values through a slot per lane). `__shared__` variables are
// thread-local statics, so the fibers of one block share them while launches on
// other OS threads do not. A barrier some threads never reach is reported as an
// error, as is a shuffle in a warp with finished lanes.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

/// Grid and block sizes, as in CUDA.
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

namespace sf_emu {
dim3 thread_idx();
dim3 block_idx();
dim3 block_dim();
dim3 grid_dim();
void sync_block();
/// Exchanges `bits` within the warp: returns the bits lane `src` offered.
uint64_t warp_exchange(uint64_t bits, unsigned src);
unsigned lane();

template <typename T>
T shfl(T v, unsigned src) {
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    uint64_t got = warp_exchange(bits, src);
    T out;
    memcpy(&out, &got, sizeof(T));
    return out;
}

/// Runs `kernel(args)` over the grid; returns null, or an error message (static storage
/// per thread) when the kernel broke a barrier rule.
const char* launch(dim3 grid, dim3 block, void (*kernel)(void*), void* args);
}  // namespace sf_emu

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static thread_local
#define threadIdx (sf_emu::thread_idx())
#define blockIdx (sf_emu::block_idx())
#define blockDim (sf_emu::block_dim())
#define gridDim (sf_emu::grid_dim())
#define __syncthreads() sf_emu::sync_block()

template <typename T>
inline T __shfl_xor_sync(unsigned, T v, int mask) {
    return sf_emu::shfl(v, sf_emu::lane() ^ (unsigned)mask);
}

template <typename T>
inline T __shfl_down_sync(unsigned, T v, unsigned delta) {
    unsigned src = sf_emu::lane() + delta;
    return sf_emu::shfl(v, src < 32 ? src : sf_emu::lane());
}

template <typename T>
inline T __shfl_sync(unsigned, T v, int src) {
    return sf_emu::shfl(v, (unsigned)src & 31u);
}

inline int __float2int_rn(float v) { return (int)nearbyintf(v); }
inline float rsqrtf(float v) { return 1.0f / sqrtf(v); }

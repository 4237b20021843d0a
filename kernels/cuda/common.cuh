// Shared by every kernel: the same source compiles with nvcc for the device and with
// the host C++ compiler for the grid emulator (emulator.h), which defines the CUDA
// built-ins (threadIdx, __syncthreads, warp shuffles) for host fibers.
#pragma once

#ifdef __CUDACC__
#include <cuda_fp16.h>
#include <stdint.h>
#define SF_HD __host__ __device__ __forceinline__
#else
#include "emulator.h"
#define SF_HD inline
#endif

// Threads per warp.
#define SF_WARP 32

// IEEE half (as bits) to float, exactly.
SF_HD float sf_f16(uint16_t h) {
#ifdef __CUDA_ARCH__
    return __half2float(__ushort_as_half(h));
#else
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        float v = (float)man * (1.0f / 16777216.0f);
        return sign ? -v : v;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
#endif
}

// Little-endian u16 at byte offset `at` (block layouts are only 2-byte aligned).
SF_HD uint16_t sf_u16(const uint8_t* p, int at) {
    return (uint16_t)(p[at] | (p[at + 1] << 8));
}

// Little-endian u32 from four bytes at `at`.
SF_HD uint32_t sf_u32(const uint8_t* p, int at) {
    return (uint32_t)sf_u16(p, at) | ((uint32_t)sf_u16(p, at + 2) << 16);
}

// Sum of a float over the warp (every lane gets it), in a fixed butterfly order.
SF_HD float sf_warp_sum(float v) {
    for (int o = SF_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Maximum of a float over the warp (every lane gets it).
SF_HD float sf_warp_max(float v) {
    for (int o = SF_WARP / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum of an int over the warp (every lane gets it).
SF_HD int sf_warp_sum_int(int v) {
    for (int o = SF_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Dot product of four signed bytes packed in `a` and `b`, added to `c` (dp4a).
SF_HD int sf_dp4a(int a, int b, int c) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 610
    return __dp4a(a, b, c);
#else
    for (int i = 0; i < 4; i++) c += (int)(int8_t)(a >> (8 * i)) * (int)(int8_t)(b >> (8 * i));
    return c;
#endif
}

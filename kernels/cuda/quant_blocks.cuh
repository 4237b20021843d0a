// GGUF weight blocks as integer products against 8-bit activation blocks.
//
// Every 32 weights (a Q5_0 or Q8_0 block, or a sub-block of a 256-weight Q4_K / Q6_K
// super-block) are unsigned or signed integers u with a scale per half of 16 (a0, a1)
// and an offset b: w = a_h * (u - o) + b. Against activations x = dx * q (8-bit q,
// sx = dx * sum q) the product is dx * (a0 * S0 + a1 * S1) + b * sx, where S_h is the
// integer sum over half h of (u - o) * q: the same form as the engine's CPU kernels
// (engine/src/model/quant_matmul/kquants.rs), so the integer sums agree exactly.
#pragma once

#include "common.cuh"

// Formats, numbered as in the Rust API (kernels::Format).
#define SF_Q4K 0
#define SF_Q5_0 1
#define SF_Q6K 2
#define SF_Q8_0 3

// Bytes per block of a format.
template <int F> struct SfBlock;
template <> struct SfBlock<SF_Q4K> { static const int BYTES = 144, SUBS = 8; };
template <> struct SfBlock<SF_Q5_0> { static const int BYTES = 22, SUBS = 1; };
template <> struct SfBlock<SF_Q6K> { static const int BYTES = 210, SUBS = 8; };
template <> struct SfBlock<SF_Q8_0> { static const int BYTES = 34, SUBS = 1; };

// Scales a0, a1 and offset b of sub-block j of block `blk`.
template <int F>
SF_HD void sf_sub_scales(const uint8_t* blk, int j, float* a0, float* a1, float* b) {
    if (F == SF_Q4K) {
        float d = sf_f16(sf_u16(blk, 0)), dmin = sf_f16(sf_u16(blk, 2));
        const uint8_t* q = blk + 4;
        int sc, m;
        if (j < 4) {
            sc = q[j] & 63;
            m = q[j + 4] & 63;
        } else {
            sc = (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4);
            m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
        }
        *a0 = *a1 = d * (float)sc;
        *b = -dmin * (float)m;
    } else if (F == SF_Q5_0) {
        float d = sf_f16(sf_u16(blk, 0));
        *a0 = *a1 = d;
        *b = -16.0f * d;
    } else if (F == SF_Q6K) {
        float d = sf_f16(sf_u16(blk, 208));
        *a0 = d * (float)(int8_t)blk[192 + 2 * j];
        *a1 = d * (float)(int8_t)blk[193 + 2 * j];
        *b = 0.0f;
    } else {
        float d = sf_f16(sf_u16(blk, 0));
        *a0 = *a1 = d;
        *b = 0.0f;
    }
}

// Weights 4i..4i+3 of sub-block j as four bytes (u before the offset).
template <int F>
SF_HD int sf_weight4(const uint8_t* blk, int j, int i) {
    if (F == SF_Q4K) {
        uint32_t v = sf_u32(blk, 16 + 32 * (j / 2) + 4 * i);
        return (int)((j & 1) ? (v >> 4) & 0x0f0f0f0fu : v & 0x0f0f0f0fu);
    } else if (F == SF_Q5_0) {
        int l = 4 * i;
        uint32_t qh = sf_u32(blk, 2);
        uint32_t v = l < 16 ? sf_u32(blk, 6 + l) & 0x0f0f0f0fu
                            : (sf_u32(blk, 6 + l - 16) >> 4) & 0x0f0f0f0fu;
        for (int k = 0; k < 4; k++) v |= ((qh >> (l + k)) & 1u) << (8 * k + 4);
        return (int)v;
    } else if (F == SF_Q6K) {
        int n = j / 4, k = j % 4;
        uint32_t lo = sf_u32(blk, 64 * n + 32 * (k & 1) + 4 * i);
        lo = k < 2 ? lo & 0x0f0f0f0fu : (lo >> 4) & 0x0f0f0f0fu;
        uint32_t hi = (sf_u32(blk, 128 + 32 * n + 4 * i) >> (2 * k)) & 0x03030303u;
        return (int)(lo | (hi << 4));
    } else {
        return (int)sf_u32(blk, 2 + 4 * i);
    }
}

// Integer sums s[r] = {S0, S1} of sub-block j of `blk` against R rows of 32
// activations, row r at `q + r * stride` (4-byte aligned); each group of four weights
// is unpacked once for all rows.
template <int F, int R>
SF_HD void sf_sub_sums(const uint8_t* blk, int j, const int8_t* q, size_t stride, int s[R][2]) {
    int qsum[R][2];
    for (int r = 0; r < R; r++) s[r][0] = s[r][1] = qsum[r][0] = qsum[r][1] = 0;
    for (int i = 0; i < 8; i++) {
        int w4 = sf_weight4<F>(blk, j, i);
        for (int r = 0; r < R; r++) {
            int x4 = ((const int*)(q + r * stride))[i];
            s[r][i / 4] = sf_dp4a(w4, x4, s[r][i / 4]);
            if (F == SF_Q6K) qsum[r][i / 4] = sf_dp4a(0x01010101, x4, qsum[r][i / 4]);
        }
    }
    if (F == SF_Q6K)
        for (int r = 0; r < R; r++) {
            s[r][0] -= 32 * qsum[r][0];
            s[r][1] -= 32 * qsum[r][1];
        }
}

// Activation quantisation and quantised matrix-vector products (decode: one row;
// speculative verification: up to SF_MAX_ROWS rows), y = x * W^T.
#include "quant_blocks.cuh"

// Most activation rows one product launch takes.
#define SF_MAX_ROWS 8
// Output features (one per warp) per thread block of the products.
#define SF_GEMV_WARPS 4

// x[n * 32] -> 8-bit blocks: q (32 per block), scale d = amax / 127 and sum s = d * sum q,
// rounding v / d to nearest-even like the engine. One warp per block.
extern "C" __global__ void sf_quantize_q8(const float* x, int8_t* q, float* d, float* s, int blocks) {
    int block = blockIdx.x * (blockDim.x / SF_WARP) + threadIdx.x / SF_WARP;
    if (block >= blocks) return;
    int lane = threadIdx.x % SF_WARP;
    float v = x[block * 32 + lane];
    float amax = sf_warp_max(fabsf(v));
    float dd = amax / 127.0f;
    float id = dd != 0.0f ? 1.0f / dd : 0.0f;
    int qi = __float2int_rn(v * id);
    qi = qi > 127 ? 127 : (qi < -128 ? -128 : qi);
    int sum = sf_warp_sum_int(qi);
    q[block * 32 + lane] = (int8_t)qi;
    if (lane == 0) {
        d[block] = dd;
        s[block] = dd * (float)sum;
    }
}

// y[r * out + o] = sum over the row's sub-blocks; one warp per output feature o, lanes
// striding over the row's 32-weight sub-blocks, R activation rows at once.
template <int F, int R>
__device__ void sf_gemv(const uint8_t* w, const int8_t* xq, const float* xd, const float* xs,
                        float* y, int out, int in) {
    int o = blockIdx.x * SF_GEMV_WARPS + threadIdx.x / SF_WARP;
    if (o >= out) return;
    int lane = threadIdx.x % SF_WARP;
    int subs = in / 32;
    const uint8_t* row = w + (size_t)o * (in / (32 * SfBlock<F>::SUBS)) * SfBlock<F>::BYTES;
    float acc[R];
    for (int r = 0; r < R; r++) acc[r] = 0.0f;
    for (int sb = lane; sb < subs; sb += SF_WARP) {
        const uint8_t* blk = row + (sb / SfBlock<F>::SUBS) * SfBlock<F>::BYTES;
        int j = sb % SfBlock<F>::SUBS;
        float a0, a1, b;
        sf_sub_scales<F>(blk, j, &a0, &a1, &b);
        int s[R][2];
        sf_sub_sums<F, R>(blk, j, xq + (size_t)sb * 32, (size_t)subs * 32, s);
        for (int r = 0; r < R; r++) {
            size_t a = (size_t)r * subs + sb;
            acc[r] += xd[a] * (a0 * (float)s[r][0] + a1 * (float)s[r][1]) + b * xs[a];
        }
    }
    for (int r = 0; r < R; r++) {
        float v = sf_warp_sum(acc[r]);
        if (lane == 0) y[(size_t)r * out + o] = v;
    }
}

// The integer sums S0, S1 of every (output feature, sub-block) against activation
// row 0: what the products add up, for exact comparison with the CPU's. One thread each.
template <int F>
__device__ void sf_block_sums(const uint8_t* w, const int8_t* xq, int* sums, int out, int in) {
    int subs = in / 32;
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= out * subs) return;
    int o = i / subs, sb = i % subs;
    const uint8_t* blk = w + (size_t)o * (subs / SfBlock<F>::SUBS) * SfBlock<F>::BYTES +
                         (sb / SfBlock<F>::SUBS) * SfBlock<F>::BYTES;
    int s[1][2];
    sf_sub_sums<F, 1>(blk, sb % SfBlock<F>::SUBS, xq + (size_t)sb * 32, 0, s);
    sums[2 * i] = s[0][0];
    sums[2 * i + 1] = s[0][1];
}

#define SF_GEMV_ENTRY(NAME, F, R)                                                                  \
    extern "C" __global__ void sf_gemv_##NAME##_r##R(const uint8_t* w, const int8_t* xq,           \
                                                     const float* xd, const float* xs, float* y,    \
                                                     int out, int in) {                             \
        sf_gemv<F, R>(w, xq, xd, xs, y, out, in);                                                   \
    }

#define SF_FORMAT_ENTRIES(NAME, F)                                                                 \
    SF_GEMV_ENTRY(NAME, F, 1)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 2)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 3)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 4)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 5)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 6)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 7)                                                                      \
    SF_GEMV_ENTRY(NAME, F, 8)                                                                      \
    extern "C" __global__ void sf_block_sums_##NAME(const uint8_t* w, const int8_t* xq, int* sums, \
                                                    int out, int in) {                              \
        sf_block_sums<F>(w, xq, sums, out, in);                                                     \
    }

SF_FORMAT_ENTRIES(q4k, SF_Q4K)
SF_FORMAT_ENTRIES(q5_0, SF_Q5_0)
SF_FORMAT_ENTRIES(q6k, SF_Q6K)
SF_FORMAT_ENTRIES(q8_0, SF_Q8_0)

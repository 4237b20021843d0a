// Decode attention: a few query rows per sequence against its cached keys and values.
#include "common.cuh"

// Warps per (row, head) block; each takes every SF_ATTN_WARPS-th position.
#define SF_ATTN_WARPS 4
// Largest head dimension (values per lane: SF_MAX_HEAD_DIM / 32).
#define SF_MAX_HEAD_DIM 256

// out[row, head * hd + d] for queries q laid out [heads, rows, hd] and keys/values laid
// out [kv_heads, capacity, hd] (the KV cache); row i attends to positions 0..=pos + i.
// Grid (heads, rows), SF_ATTN_WARPS warps per block. Each warp keeps a running maximum,
// sum and weighted value sum over its positions (online softmax); the warps are then
// merged through shared memory. hd must be a multiple of 32, at most SF_MAX_HEAD_DIM.
extern "C" __global__ void sf_decode_attention(const float* q, const float* keys, const float* values,
                                               float* out, int heads, int kv_heads, int hd,
                                               int capacity, int pos, int rows) {
    __shared__ float part_m[SF_ATTN_WARPS];
    __shared__ float part_l[SF_ATTN_WARPS];
    __shared__ float part_acc[SF_ATTN_WARPS][SF_MAX_HEAD_DIM];
    int head = blockIdx.x, row = blockIdx.y;
    int warp = threadIdx.x / SF_WARP, lane = threadIdx.x % SF_WARP;
    int groups = heads / kv_heads;
    int kv = head / groups;
    int per_lane = hd / SF_WARP;
    int len = pos + row + 1;
    float scale = 1.0f / sqrtf((float)hd);
    const float* query = q + ((size_t)head * rows + row) * hd;
    const float* k = keys + (size_t)kv * capacity * hd;
    const float* v = values + (size_t)kv * capacity * hd;
    float qv[SF_MAX_HEAD_DIM / SF_WARP], acc[SF_MAX_HEAD_DIM / SF_WARP];
    // Loops run to the constant bound (guarded) so the arrays stay in registers.
#pragma unroll
    for (int i = 0; i < SF_MAX_HEAD_DIM / SF_WARP; i++) {
        qv[i] = i < per_lane ? query[lane + SF_WARP * i] : 0.0f;
        acc[i] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    for (int t = warp; t < len; t += SF_ATTN_WARPS) {
        const float* kt = k + (size_t)t * hd;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < SF_MAX_HEAD_DIM / SF_WARP; i++)
            if (i < per_lane) dot += qv[i] * kt[lane + SF_WARP * i];
        float score = sf_warp_sum(dot) * scale;
        float m_new = fmaxf(m, score);
        float corr = expf(m - m_new), p = expf(score - m_new);
        l = l * corr + p;
        const float* vt = v + (size_t)t * hd;
#pragma unroll
        for (int i = 0; i < SF_MAX_HEAD_DIM / SF_WARP; i++)
            if (i < per_lane) acc[i] = acc[i] * corr + p * vt[lane + SF_WARP * i];
        m = m_new;
    }
    if (lane == 0) {
        part_m[warp] = m;
        part_l[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < SF_MAX_HEAD_DIM / SF_WARP; i++)
        if (i < per_lane) part_acc[warp][lane + SF_WARP * i] = acc[i];
    __syncthreads();
    float top = -INFINITY;
    for (int w = 0; w < SF_ATTN_WARPS; w++) top = fmaxf(top, part_m[w]);
    float den = 0.0f;
    for (int w = 0; w < SF_ATTN_WARPS; w++)
        if (part_l[w] > 0.0f) den += part_l[w] * expf(part_m[w] - top);
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float num = 0.0f;
        for (int w = 0; w < SF_ATTN_WARPS; w++)
            if (part_l[w] > 0.0f) num += part_acc[w][d] * expf(part_m[w] - top);
        out[(size_t)row * heads * hd + (size_t)head * hd + d] = num / den;
    }
}

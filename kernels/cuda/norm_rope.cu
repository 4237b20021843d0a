// RMSNorm; rotary embedding of the new rows' queries and keys fused with their optional
// per-head RMSNorm (QK-norm models) and with the write of keys and values into the KV
// cache; and a copy kernel that measures memory bandwidth.
#include "common.cuh"

// Threads per RMSNorm block (one block per row).
#define SF_NORM_THREADS 256

// y[row] = x[row] / sqrt(mean(x[row]^2) + eps) * w. One block of SF_NORM_THREADS per row.
extern "C" __global__ void sf_rms_norm(const float* x, const float* w, float* y, int cols, float eps) {
    __shared__ float partial[SF_NORM_THREADS / SF_WARP];
    const float* xr = x + (size_t)blockIdx.x * cols;
    float* yr = y + (size_t)blockIdx.x * cols;
    float sum = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) sum += xr[c] * xr[c];
    sum = sf_warp_sum(sum);
    if (threadIdx.x % SF_WARP == 0) partial[threadIdx.x / SF_WARP] = sum;
    __syncthreads();
    float total = 0.0f;
    for (int i = 0; i < (int)(blockDim.x / SF_WARP); i++) total += partial[i];
    float inv = rsqrtf(total / (float)cols + eps);
    for (int c = threadIdx.x; c < cols; c += blockDim.x) yr[c] = xr[c] * inv * w[c];
}

// For t new rows at positions pos..pos+t: query heads of q_in [t, heads * hd] are
// normalised (when q_norm is not null), rotated and written to q_out [heads, t, hd];
// key heads of k_in [t, kv_heads * hd] likewise (k_norm) into keys [kv_heads, capacity, hd]
// at their positions; value heads of v_in are copied into values. cos/sin are
// [positions, hd / 2]; interleaved != 0 rotates pairs (2i, 2i + 1), else (i, i + hd / 2).
// Grid (heads + 2 * kv_heads, t), one warp per block.
extern "C" __global__ void sf_rope_qk(const float* q_in, const float* k_in, const float* v_in,
                                      const float* cos, const float* sin, const float* q_norm,
                                      const float* k_norm, float eps, float* q_out, float* keys,
                                      float* values, int heads, int kv_heads, int hd, int capacity,
                                      int pos, int t, int interleaved) {
    int h = blockIdx.x, row = blockIdx.y, lane = threadIdx.x;
    int half = hd / 2;
    const float* src;
    float* dst;
    const float* norm;
    bool rotate = true;
    if (h < heads) {
        src = q_in + (size_t)row * heads * hd + (size_t)h * hd;
        dst = q_out + ((size_t)h * t + row) * hd;
        norm = q_norm;
    } else if (h < heads + kv_heads) {
        int kh = h - heads;
        src = k_in + (size_t)row * kv_heads * hd + (size_t)kh * hd;
        dst = keys + ((size_t)kh * capacity + pos + row) * hd;
        norm = k_norm;
    } else {
        int vh = h - heads - kv_heads;
        src = v_in + (size_t)row * kv_heads * hd + (size_t)vh * hd;
        dst = values + ((size_t)vh * capacity + pos + row) * hd;
        norm = 0;
        rotate = false;
    }
    float inv = 1.0f;
    if (norm) {
        float sum = 0.0f;
        for (int c = lane; c < hd; c += SF_WARP) sum += src[c] * src[c];
        inv = rsqrtf(sf_warp_sum(sum) / (float)hd + eps);
    }
    if (!rotate) {
        for (int c = lane; c < hd; c += SF_WARP) dst[c] = src[c];
        return;
    }
    const float* cr = cos + (size_t)(pos + row) * half;
    const float* sr = sin + (size_t)(pos + row) * half;
    for (int p = lane; p < half; p += SF_WARP) {
        int a = interleaved ? 2 * p : p, b = interleaved ? 2 * p + 1 : p + half;
        float x0 = src[a] * inv, x1 = src[b] * inv;
        if (norm) {
            x0 *= norm[a];
            x1 *= norm[b];
        }
        dst[a] = x0 * cr[p] - x1 * sr[p];
        dst[b] = x1 * cr[p] + x0 * sr[p];
    }
}

// dst[i] = src[i] for n floats, grid-stride: the bandwidth yardstick of the device check.
extern "C" __global__ void sf_copy(const float* src, float* dst, size_t n) {
    size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) dst[i] = src[i];
}

// The kernels compiled for the host and run by the grid emulator: one C entry point per
// kernel, taking the launch geometry the Rust side computes (kernels/src/launch.rs).
#include <tuple>

#include "attention.cu"
#include "gemv.cu"
#include "norm_rope.cu"

namespace {

template <typename... A>
const char* run(unsigned gx, unsigned gy, unsigned bx, void (*kernel)(A...), A... args) {
    struct Call {
        void (*kernel)(A...);
        std::tuple<A...> args;
    } call{kernel, std::tuple<A...>(args...)};
    return sf_emu::launch(dim3(gx, gy), dim3(bx),
                          [](void* p) {
                              Call* c = (Call*)p;
                              std::apply(c->kernel, c->args);
                          },
                          &call);
}

typedef void (*Gemv)(const uint8_t*, const int8_t*, const float*, const float*, float*, int, int);
typedef void (*Sums)(const uint8_t*, const int8_t*, int*, int, int);

#define SF_ROWS(NAME) \
    {sf_gemv_##NAME##_r1, sf_gemv_##NAME##_r2, sf_gemv_##NAME##_r3, sf_gemv_##NAME##_r4, \
     sf_gemv_##NAME##_r5, sf_gemv_##NAME##_r6, sf_gemv_##NAME##_r7, sf_gemv_##NAME##_r8}

const Gemv GEMV[4][SF_MAX_ROWS] = {SF_ROWS(q4k), SF_ROWS(q5_0), SF_ROWS(q6k), SF_ROWS(q8_0)};
const Sums SUMS[4] = {sf_block_sums_q4k, sf_block_sums_q5_0, sf_block_sums_q6k, sf_block_sums_q8_0};

// Self-tests of the emulator: a kernel where only some threads reach the barrier, and
// a warp sum whose result every lane writes.
void broken_barrier(int* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1;
}

void warp_sums(const float* x, float* out) {
    out[threadIdx.x] = sf_warp_sum(x[threadIdx.x]) + (float)__shfl_down_sync(0xffffffffu, (int)threadIdx.x, 3);
}

}  // namespace

extern "C" {

const char* sf_emu_selftest_broken_barrier(int* out) { return run(1, 1, 64, broken_barrier, out); }

const char* sf_emu_selftest_warp_sums(const float* x, float* out) {
    return run(1, 1, 64, warp_sums, x, out);
}

const char* sf_emu_quantize_q8(unsigned gx, unsigned bx, const float* x, int8_t* q, float* d, float* s,
                               int blocks) {
    return run(gx, 1, bx, sf_quantize_q8, x, q, d, s, blocks);
}

const char* sf_emu_gemv(unsigned gx, unsigned bx, int format, int rows, const uint8_t* w, const int8_t* xq,
                        const float* xd, const float* xs, float* y, int out, int in) {
    if (format < 0 || format > 3 || rows < 1 || rows > SF_MAX_ROWS) return "no such product";
    return run(gx, 1, bx, GEMV[format][rows - 1], w, xq, xd, xs, y, out, in);
}

const char* sf_emu_block_sums(unsigned gx, unsigned bx, int format, const uint8_t* w, const int8_t* xq,
                              int* sums, int out, int in) {
    if (format < 0 || format > 3) return "no such format";
    return run(gx, 1, bx, SUMS[format], w, xq, sums, out, in);
}

const char* sf_emu_decode_attention(unsigned gx, unsigned gy, unsigned bx, const float* q,
                                    const float* keys, const float* values, float* out, int heads,
                                    int kv_heads, int hd, int capacity, int pos, int rows) {
    return run(gx, gy, bx, sf_decode_attention, q, keys, values, out, heads, kv_heads, hd, capacity,
               pos, rows);
}

const char* sf_emu_rms_norm(unsigned gx, unsigned bx, const float* x, const float* w, float* y, int cols,
                            float eps) {
    return run(gx, 1, bx, sf_rms_norm, x, w, y, cols, eps);
}

const char* sf_emu_rope_qk(unsigned gx, unsigned gy, unsigned bx, const float* q_in, const float* k_in,
                           const float* v_in, const float* cos, const float* sin, const float* q_norm,
                           const float* k_norm, float eps, float* q_out, float* keys, float* values,
                           int heads, int kv_heads, int hd, int capacity, int pos, int t,
                           int interleaved) {
    return run(gx, gy, bx, sf_rope_qk, q_in, k_in, v_in, cos, sin, q_norm, k_norm, eps, q_out, keys,
               values, heads, kv_heads, hd, capacity, pos, t, interleaved);
}

const char* sf_emu_copy(unsigned gx, unsigned bx, const float* src, float* dst, size_t n) {
    return run(gx, 1, bx, sf_copy, src, dst, n);
}
}

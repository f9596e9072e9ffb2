// Affine (min-max) int8 quantization of float32 data, the GPU twin of
// ferrolm-core's comm::minmax. Compiled by NVRTC with --fmad=false so every
// code and every dequantized value is bit-identical to the CPU path.
//
// Pipeline on one stream: minmax_partial_f32 (one min/max/non-finite triple per
// block) -> minmax_finalize_f32 (params = [min, scale, 1/scale, non_finite])
// -> quantize_minmax_f32 / dequantize_minmax_f32 / dequantize_accumulate_minmax_f32.

#include "reduce.cuh"

extern "C" __global__ void minmax_partial_f32(const float* __restrict__ x,
                                              unsigned long long n,
                                              ferrolm_range* __restrict__ partial) {
    __shared__ ferrolm_range shared[FERROLM_BLOCK];
    ferrolm_range r = ferrolm_range_empty();
    FERROLM_GRID_STRIDE_LOOP(i, n) r = ferrolm_range_add(r, x[i]);
    r = ferrolm_block_range(r, shared);
    if (threadIdx.x == 0) partial[blockIdx.x] = r;
}

// One block folds the per-block triples into params = [min, scale, 1/scale, non_finite].
extern "C" __global__ void minmax_finalize_f32(const ferrolm_range* __restrict__ partial,
                                               unsigned int parts,
                                               float* __restrict__ params) {
    __shared__ ferrolm_range shared[FERROLM_BLOCK];
    ferrolm_range r = ferrolm_range_empty();
    for (unsigned int i = threadIdx.x; i < parts; i += blockDim.x) {
        r = ferrolm_range_merge{}(r, partial[i]);
    }
    r = ferrolm_block_range(r, shared);
    if (threadIdx.x == 0) {
        float scale = (r.hi - r.lo) / 255.0f;
        params[0] = r.lo;
        params[1] = scale;
        params[2] = scale > 0.0f ? 1.0f / scale : 0.0f;
        params[3] = r.bad;
    }
}

extern "C" __global__ void quantize_minmax_f32(const float* __restrict__ x,
                                               unsigned long long n,
                                               const float* __restrict__ params,
                                               unsigned char* __restrict__ q) {
    float mn = params[0];
    float inv = params[2];
    FERROLM_GRID_STRIDE_LOOP(i, n) {
        float t = (x[i] - mn) * inv + 0.5f;
        q[i] = t >= 255.0f ? (unsigned char)255 : (unsigned char)(unsigned int)t;
    }
}

// min + q * scale into out (written, or added when accumulate).
__device__ __forceinline__ void dequantize_minmax(const unsigned char* __restrict__ q,
                                                  unsigned long long n,
                                                  const float* __restrict__ params,
                                                  float* __restrict__ out,
                                                  int accumulate) {
    float mn = params[0];
    float scale = params[1];
    FERROLM_GRID_STRIDE_LOOP(i, n) ferrolm_store(out, i, mn + (float)q[i] * scale, accumulate);
}

extern "C" __global__ void dequantize_minmax_f32(const unsigned char* __restrict__ q,
                                                 unsigned long long n,
                                                 const float* __restrict__ params,
                                                 float* __restrict__ out) {
    dequantize_minmax(q, n, params, out, 0);
}

extern "C" __global__ void dequantize_accumulate_minmax_f32(const unsigned char* __restrict__ q,
                                                            unsigned long long n,
                                                            const float* __restrict__ params,
                                                            float* __restrict__ acc) {
    dequantize_minmax(q, n, params, acc, 1);
}

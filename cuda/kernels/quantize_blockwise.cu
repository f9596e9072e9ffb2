// Block-wise affine int8 quantization of float32 data, the GPU twin of ferrolm-core's
// comm::blockwise, writing the packed wire format: params = [min_0, scale_0, min_1, ...]
// (2 floats per block) followed by the codes. Compiled with --fmad=false so codes and decoded
// values are bit-identical to the CPU path.
//
// quantize_blockwise_f32: one CUDA block per quantization block (grid-stride over blocks):
// a shared-memory min/max reduction, then the same threads encode the (cached) values.

#include "reduce.cuh"

extern "C" __global__ void quantize_blockwise_f32(const float* __restrict__ x,
                                                  unsigned long long n,
                                                  unsigned int block,
                                                  float* __restrict__ params,
                                                  unsigned char* __restrict__ q,
                                                  unsigned int* __restrict__ bad) {
    __shared__ ferrolm_range shared[FERROLM_BLOCK];
    unsigned long long blocks = (n + block - 1) / block;
    for (unsigned long long b = blockIdx.x; b < blocks; b += gridDim.x) {
        unsigned long long start = b * block;
        unsigned long long stop = start + block < n ? start + block : n;
        ferrolm_range r = ferrolm_range_empty();
        for (unsigned long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
            r = ferrolm_range_add(r, x[i]);
        }
        // Ends on a barrier, so the next quantization block may refill `shared`.
        r = ferrolm_block_range(r, shared);
        float mn = r.lo;
        float scale = (r.hi - mn) / 255.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (threadIdx.x == 0) {
            params[2 * b] = mn;
            params[2 * b + 1] = scale;
            if (r.bad != 0.0f || !isfinite(scale)) atomicOr(bad, 1u);
        }
        for (unsigned long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
            float t = (x[i] - mn) * inv + 0.5f;
            t = fminf(fmaxf(t, 0.0f), 255.0f);  // fmaxf maps NaN to 0, like the CPU path
            q[i] = (unsigned char)(unsigned int)t;
        }
    }
}

extern "C" __global__ void dequantize_blockwise_f32(const unsigned char* __restrict__ q,
                                                    unsigned long long n,
                                                    unsigned int block,
                                                    const float* __restrict__ params,
                                                    float* __restrict__ out,
                                                    int accumulate) {
    FERROLM_GRID_STRIDE_LOOP(i, n) {
        // A 64-bit division is a long software routine on the GPU: it made this decoder twice
        // as slow as the same math in torch ops. Indices below 2^32 divide in 32 bits.
        unsigned long long b = i <= 0xFFFFFFFFull ? (unsigned long long)((unsigned int)i / block)
                                                  : i / block;
        ferrolm_store(out, i, params[2 * b] + (float)q[i] * params[2 * b + 1], accumulate);
    }
}

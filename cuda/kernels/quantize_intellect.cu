// INTELLECT-1's int8 code on the GPU (twin of ferrolm-core's comm::intellect), writing the
// packed wire format: a 256-float codebook followed by the codes.
//
// sumsq_partial_f64 (per-block sum of squares in double + non-finite flag)
// -> intellect_scale_f32 (stats = [scale, 1/scale, non_finite])
// -> quantize_intellect_f32 (codes + per-bucket sums and counts: shared-memory histograms
//    merged with atomics) -> intellect_codebook_f32 (bucket means; empty bucket = grid centre)
// -> dequantize_intellect_f32 (table lookup, optionally accumulating).
// The bucket sums are added in a nondeterministic order, so codebook entries can differ from
// the CPU's in the last bits; codes can differ where a value sits on a bucket edge.

#include "reduce.cuh"

#define LEVELS 256

// A sum of squares and 1.0 if a summand was NaN or infinite; the layout of the per-block
// partials in global memory.
struct sumsq {
    double sum;
    double bad;
};

struct sumsq_merge {
    __device__ sumsq operator()(sumsq a, sumsq b) const {
        return {a.sum + b.sum, fmax(a.bad, b.bad)};
    }
};

extern "C" __global__ void sumsq_partial_f64(const float* __restrict__ x,
                                             unsigned long long n,
                                             sumsq* __restrict__ partial) {
    __shared__ sumsq shared[FERROLM_BLOCK];
    sumsq acc = {0.0, 0.0};
    FERROLM_GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        if (!isfinite(v)) acc.bad = 1.0;
        acc.sum += (double)v * (double)v;
    }
    acc = ferrolm_block_reduce(acc, shared, sumsq_merge{});
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void intellect_scale_f32(const sumsq* __restrict__ partial,
                                               unsigned int parts,
                                               unsigned long long n,
                                               float* __restrict__ stats) {
    __shared__ sumsq shared[FERROLM_BLOCK];
    sumsq acc = {0.0, 0.0};
    for (unsigned int i = threadIdx.x; i < parts; i += blockDim.x) {
        acc = sumsq_merge{}(acc, partial[i]);
    }
    acc = ferrolm_block_reduce(acc, shared, sumsq_merge{});
    if (threadIdx.x == 0) {
        double rms = sqrt(acc.sum / (double)n);
        float scale = (float)(6.0 * rms / 256.0);
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (!isfinite(inv)) inv = 0.0f;
        stats[0] = scale;
        stats[1] = inv;
        stats[2] = (acc.bad != 0.0 || !isfinite(scale)) ? 1.0f : 0.0f;
    }
}

extern "C" __global__ void quantize_intellect_f32(const float* __restrict__ x,
                                                  unsigned long long n,
                                                  const float* __restrict__ stats,
                                                  unsigned char* __restrict__ q,
                                                  double* __restrict__ sums,
                                                  unsigned long long* __restrict__ counts) {
    __shared__ float hsum[LEVELS];
    __shared__ unsigned int hcount[LEVELS];
    for (unsigned int c = threadIdx.x; c < LEVELS; c += blockDim.x) {
        hsum[c] = 0.0f;
        hcount[c] = 0u;
    }
    __syncthreads();
    float inv = stats[1];
    FERROLM_GRID_STRIDE_LOOP(i, n) {
        float v = x[i];
        float t = v * inv + 128.5f;
        t = fminf(fmaxf(t, 0.0f), 255.0f);
        unsigned int c = (unsigned int)t;
        q[i] = (unsigned char)c;
        atomicAdd(&hsum[c], v);
        atomicAdd(&hcount[c], 1u);
    }
    __syncthreads();
    for (unsigned int c = threadIdx.x; c < LEVELS; c += blockDim.x) {
        if (hcount[c]) {
            atomicAdd(&sums[c], (double)hsum[c]);
            atomicAdd(&counts[c], (unsigned long long)hcount[c]);
        }
    }
}

extern "C" __global__ void intellect_codebook_f32(const double* __restrict__ sums,
                                                  const unsigned long long* __restrict__ counts,
                                                  const float* __restrict__ stats,
                                                  float* __restrict__ codebook) {
    unsigned int c = threadIdx.x;
    if (c < LEVELS) {
        codebook[c] = counts[c] ? (float)(sums[c] / (double)counts[c])
                                : ((float)c - 128.0f) * stats[0];
    }
}

extern "C" __global__ void dequantize_intellect_f32(const unsigned char* __restrict__ q,
                                                    unsigned long long n,
                                                    const float* __restrict__ codebook,
                                                    float* __restrict__ out,
                                                    int accumulate) {
    __shared__ float table[LEVELS];
    for (unsigned int c = threadIdx.x; c < LEVELS; c += blockDim.x) table[c] = codebook[c];
    __syncthreads();
    FERROLM_GRID_STRIDE_LOOP(i, n) ferrolm_store(out, i, table[q[i]], accumulate);
}

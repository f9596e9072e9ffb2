// Block-wide reductions in shared memory, shared by the quantizers and DivPrune.
//
// The tree pairs thread t with t + s for s = blockDim.x / 2, ..., 1. The order is fixed, so a
// floating-point sum gives the same bits on every run; it is also the order these kernels
// always used, so a warp-shuffle tree (another order) would change the last bits of the
// INTELLECT-1 scale.

#ifndef FERROLM_REDUCE_CUH
#define FERROLM_REDUCE_CUH

#include "common.cuh"

// Combines one value per thread over the block with combine(a, b); every thread gets the result.
// shared holds blockDim.x elements and blockDim.x must be a power of two. The trailing barrier
// lets the caller reuse shared (or call again) right away.
template <typename T, typename Combine>
__device__ T ferrolm_block_reduce(T v, T* shared, Combine combine) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            shared[threadIdx.x] = combine(shared[threadIdx.x], shared[threadIdx.x + s]);
        }
        __syncthreads();
    }
    T result = shared[0];
    __syncthreads();
    return result;
}

// fminf as a combine: NaN loses to any number.
struct ferrolm_min {
    __device__ float operator()(float a, float b) const { return fminf(a, b); }
};

// Smallest and largest value of a set of floats, and 1.0f if one of them was NaN or infinite
// (fminf and fmaxf skip NaN, so the flag is what reports it). Stored in the order lo, hi, bad,
// which is the layout of the per-block partials in global memory.
struct ferrolm_range {
    float lo;
    float hi;
    float bad;
};

__device__ __forceinline__ ferrolm_range ferrolm_range_empty() {
    return {ferrolm_inf(), ferrolm_neg_inf(), 0.0f};
}

__device__ __forceinline__ ferrolm_range ferrolm_range_add(ferrolm_range r, float v) {
    if (!isfinite(v)) r.bad = 1.0f;
    r.lo = fminf(r.lo, v);
    r.hi = fmaxf(r.hi, v);
    return r;
}

struct ferrolm_range_merge {
    __device__ ferrolm_range operator()(ferrolm_range a, ferrolm_range b) const {
        return {fminf(a.lo, b.lo), fmaxf(a.hi, b.hi), fmaxf(a.bad, b.bad)};
    }
};

// The block's range of the values each thread gathered; shared holds blockDim.x entries.
__device__ __forceinline__ ferrolm_range ferrolm_block_range(ferrolm_range r,
                                                             ferrolm_range* shared) {
    return ferrolm_block_reduce(r, shared, ferrolm_range_merge{});
}

#endif

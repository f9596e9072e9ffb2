// Definitions every ferrolm kernel shares. The host hands this file to NVRTC as a named header
// (see cuda/src/kernels.rs), since a run-time compile has no include path into the source tree.

#ifndef FERROLM_COMMON_CUH
#define FERROLM_COMMON_CUH

// Threads per block of the one-dimensional kernels; must equal `BLOCK` in cuda/src/launch.rs,
// since it sizes the shared arrays of their block reductions.
#define FERROLM_BLOCK 256

// i runs over this thread's elements of [0, n): its global index, then steps of the whole grid,
// so any grid size covers any n.
#define FERROLM_GRID_STRIDE_LOOP(i, n)                                                  \
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; \
         i < (n); i += (unsigned long long)gridDim.x * blockDim.x)

// Infinities by bit pattern: the kernels compile without the host headers that define INFINITY.
__device__ __forceinline__ float ferrolm_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ float ferrolm_neg_inf() { return __int_as_float(0xff800000); }

// Writes v to out[i], or adds it when accumulate is set (the decoders' two modes).
__device__ __forceinline__ void ferrolm_store(float* out, unsigned long long i, float v,
                                              int accumulate) {
    if (accumulate) {
        out[i] += v;
    } else {
        out[i] = v;
    }
}

#endif

// Affine (min-max) int8 quantization of float32 data, the GPU twin of
// ferrolm-core's comm::minmax. Compiled by NVRTC with --fmad=false so every
// code and every dequantized value is bit-identical to the CPU path.
//
// Pipeline on one stream: minmax_partial_f32 (one min/max/non-finite triple per
// block) -> minmax_finalize_f32 (params = [min, scale, 1/scale, non_finite])
// -> quantize_minmax_f32 / dequantize_minmax_f32 / dequantize_accumulate_minmax_f32.

#define FERROLM_BLOCK 256

extern "C" __global__ void minmax_partial_f32(const float* __restrict__ x,
                                              unsigned long long n,
                                              float* __restrict__ partial) {
    __shared__ float smin[FERROLM_BLOCK];
    __shared__ float smax[FERROLM_BLOCK];
    __shared__ float sbad[FERROLM_BLOCK];
    float lo = __int_as_float(0x7f800000);   // +inf
    float hi = __int_as_float(0xff800000);   // -inf
    float bad = 0.0f;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float v = x[i];
        if (!isfinite(v)) bad = 1.0f;
        lo = fminf(lo, v);
        hi = fmaxf(hi, v);
    }
    smin[threadIdx.x] = lo;
    smax[threadIdx.x] = hi;
    sbad[threadIdx.x] = bad;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
            smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
            sbad[threadIdx.x] = fmaxf(sbad[threadIdx.x], sbad[threadIdx.x + s]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        partial[3 * blockIdx.x + 0] = smin[0];
        partial[3 * blockIdx.x + 1] = smax[0];
        partial[3 * blockIdx.x + 2] = sbad[0];
    }
}

// One block folds the per-block triples into params = [min, scale, 1/scale, non_finite].
extern "C" __global__ void minmax_finalize_f32(const float* __restrict__ partial,
                                               unsigned int parts,
                                               float* __restrict__ params) {
    __shared__ float smin[FERROLM_BLOCK];
    __shared__ float smax[FERROLM_BLOCK];
    __shared__ float sbad[FERROLM_BLOCK];
    float lo = __int_as_float(0x7f800000);
    float hi = __int_as_float(0xff800000);
    float bad = 0.0f;
    for (unsigned int i = threadIdx.x; i < parts; i += blockDim.x) {
        lo = fminf(lo, partial[3 * i + 0]);
        hi = fmaxf(hi, partial[3 * i + 1]);
        bad = fmaxf(bad, partial[3 * i + 2]);
    }
    smin[threadIdx.x] = lo;
    smax[threadIdx.x] = hi;
    sbad[threadIdx.x] = bad;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
            smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
            sbad[threadIdx.x] = fmaxf(sbad[threadIdx.x], sbad[threadIdx.x + s]);
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float mn = smin[0];
        float scale = (smax[0] - mn) / 255.0f;
        params[0] = mn;
        params[1] = scale;
        params[2] = scale > 0.0f ? 1.0f / scale : 0.0f;
        params[3] = sbad[0];
    }
}

extern "C" __global__ void quantize_minmax_f32(const float* __restrict__ x,
                                               unsigned long long n,
                                               const float* __restrict__ params,
                                               unsigned char* __restrict__ q) {
    float mn = params[0];
    float inv = params[2];
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float t = (x[i] - mn) * inv + 0.5f;
        q[i] = t >= 255.0f ? (unsigned char)255 : (unsigned char)(unsigned int)t;
    }
}

extern "C" __global__ void dequantize_minmax_f32(const unsigned char* __restrict__ q,
                                                 unsigned long long n,
                                                 const float* __restrict__ params,
                                                 float* __restrict__ out) {
    float mn = params[0];
    float scale = params[1];
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = mn + (float)q[i] * scale;
    }
}

extern "C" __global__ void dequantize_accumulate_minmax_f32(const unsigned char* __restrict__ q,
                                                            unsigned long long n,
                                                            const float* __restrict__ params,
                                                            float* __restrict__ acc) {
    float mn = params[0];
    float scale = params[1];
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        acc[i] += mn + (float)q[i] * scale;
    }
}

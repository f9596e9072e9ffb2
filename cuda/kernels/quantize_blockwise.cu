// Block-wise affine int8 quantization of float32 data, the GPU twin of ferrolm-core's
// comm::blockwise, writing the packed wire format: params = [min_0, scale_0, min_1, ...]
// (2 floats per block) followed by the codes. Compiled with --fmad=false so codes and decoded
// values are bit-identical to the CPU path.
//
// quantize_blockwise_f32: one CUDA block per quantization block (grid-stride over blocks):
// a shared-memory min/max reduction, then the same threads encode the (cached) values.

#define FERROLM_BLOCK 256

extern "C" __global__ void quantize_blockwise_f32(const float* __restrict__ x,
                                                  unsigned long long n,
                                                  unsigned int block,
                                                  float* __restrict__ params,
                                                  unsigned char* __restrict__ q,
                                                  unsigned int* __restrict__ bad) {
    __shared__ float smin[FERROLM_BLOCK];
    __shared__ float smax[FERROLM_BLOCK];
    __shared__ int sbad[FERROLM_BLOCK];
    unsigned long long blocks = (n + block - 1) / block;
    for (unsigned long long b = blockIdx.x; b < blocks; b += gridDim.x) {
        unsigned long long start = b * block;
        unsigned long long stop = start + block < n ? start + block : n;
        float lo = __int_as_float(0x7f800000);
        float hi = __int_as_float(0xff800000);
        int nonfinite = 0;
        for (unsigned long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
            float v = x[i];
            if (!isfinite(v)) nonfinite = 1;
            lo = fminf(lo, v);
            hi = fmaxf(hi, v);
        }
        smin[threadIdx.x] = lo;
        smax[threadIdx.x] = hi;
        sbad[threadIdx.x] = nonfinite;
        __syncthreads();
        for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
            if (threadIdx.x < s) {
                smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
                smax[threadIdx.x] = fmaxf(smax[threadIdx.x], smax[threadIdx.x + s]);
                sbad[threadIdx.x] |= sbad[threadIdx.x + s];
            }
            __syncthreads();
        }
        float mn = smin[0];
        float scale = (smax[0] - mn) / 255.0f;
        float inv = scale > 0.0f ? 1.0f / scale : 0.0f;
        if (threadIdx.x == 0) {
            params[2 * b] = mn;
            params[2 * b + 1] = scale;
            if (sbad[0] || !isfinite(scale)) atomicOr(bad, 1u);
        }
        for (unsigned long long i = start + threadIdx.x; i < stop; i += blockDim.x) {
            float t = (x[i] - mn) * inv + 0.5f;
            t = fminf(fmaxf(t, 0.0f), 255.0f);  // fmaxf maps NaN to 0, like the CPU path
            q[i] = (unsigned char)(unsigned int)t;
        }
        __syncthreads();  // the shared arrays are reused by the next block
    }
}

extern "C" __global__ void dequantize_blockwise_f32(const unsigned char* __restrict__ q,
                                                    unsigned long long n,
                                                    unsigned int block,
                                                    const float* __restrict__ params,
                                                    float* __restrict__ out,
                                                    int accumulate) {
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        unsigned long long b = i / block;
        float v = params[2 * b] + (float)q[i] * params[2 * b + 1];
        if (accumulate) {
            out[i] += v;
        } else {
            out[i] = v;
        }
    }
}

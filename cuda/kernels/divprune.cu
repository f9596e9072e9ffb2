// DivPrune greedy max-min selection on a precomputed cosine-distance matrix, the GPU twin of
// ferrolm-core's prune::gram. The distance matrices D = 1 - Xn Xn^T ([batch, n, n], float32)
// come from cuBLAS (torch.bmm); these kernels do the first pick and the sequential greedy loop,
// one thread block per image, so a whole batch of images is one launch.
//
// Rules (identical to the CPU path): the first pick is argmax_i min_{j != i} D[i, j] unless a
// first index is given; then repeatedly the unchosen token whose running minimum distance to
// the chosen set is largest; chosen tokens hold -inf in the running minimum (the mask); ties go
// to the lowest index; everything is float32.

#define FERROLM_DIVPRUNE_BLOCK 1024

// Best (value, index) of two: larger value, then lower index.
__device__ __forceinline__ void divprune_better(float& v, long long& i, float v2, long long i2) {
    if (v2 > v || (v2 == v && i2 < i)) {
        v = v2;
        i = i2;
    }
}

// Block-wide argmax of (v, i); every thread gets the result. blockDim.x must be a power of two.
__device__ void divprune_block_argmax(float& v, long long& i, float* sv, long long* si) {
    sv[threadIdx.x] = v;
    si[threadIdx.x] = i;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float a = sv[threadIdx.x];
            long long ai = si[threadIdx.x];
            divprune_better(a, ai, sv[threadIdx.x + s], si[threadIdx.x + s]);
            sv[threadIdx.x] = a;
            si[threadIdx.x] = ai;
        }
        __syncthreads();
    }
    v = sv[0];
    i = si[0];
    __syncthreads();
}

// nn[b * n + r] = min over j != r of dist[b][r][j] (+inf when n == 1). Grid (n, batch).
extern "C" __global__ void divprune_nearest_f32(const float* __restrict__ dist,
                                                unsigned int n,
                                                float* __restrict__ nn) {
    __shared__ float smin[256];
    unsigned int r = blockIdx.x;
    unsigned long long b = blockIdx.y;
    const float* row = dist + (b * n + r) * (unsigned long long)n;
    float m = __int_as_float(0x7f800000);
    for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
        if (j != r) m = fminf(m, row[j]);
    }
    smin[threadIdx.x] = m;
    __syncthreads();
    for (unsigned int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) smin[threadIdx.x] = fminf(smin[threadIdx.x], smin[threadIdx.x + s]);
        __syncthreads();
    }
    if (threadIdx.x == 0) nn[b * n + r] = smin[0];
}

// The greedy loop for image blockIdx.x. first[b] >= 0 fixes the first pick, otherwise it is the
// argmax of nn[b]. mind is [batch, n] scratch; out is [batch, k] (greedy order); objective[b]
// is the minimum distance between two picks (+inf when k == 1).
extern "C" __global__ void divprune_greedy_f32(const float* __restrict__ dist,
                                               const float* __restrict__ nn,
                                               const long long* __restrict__ first,
                                               unsigned int n,
                                               unsigned int k,
                                               float* __restrict__ mind,
                                               long long* __restrict__ out,
                                               float* __restrict__ objective) {
    __shared__ float sv[FERROLM_DIVPRUNE_BLOCK];
    __shared__ long long si[FERROLM_DIVPRUNE_BLOCK];
    const float inf = __int_as_float(0x7f800000);
    const float neg_inf = __int_as_float(0xff800000);
    unsigned long long b = blockIdx.x;
    const float* d = dist + b * n * (unsigned long long)n;
    float* m = mind + b * n;
    long long pick = first[b];
    if (pick < 0) {
        float v = neg_inf;
        long long vi = 0x7fffffffffffffffLL;
        for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
            divprune_better(v, vi, nn[b * n + j], (long long)j);
        }
        divprune_block_argmax(v, vi, sv, si);
        pick = vi;
    }
    for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) m[j] = inf;
    __syncthreads();
    float obj = inf;
    for (unsigned int t = 0;; ++t) {
        if (threadIdx.x == 0) {
            out[b * k + t] = pick;
            m[pick] = neg_inf;
        }
        __syncthreads();
        if (t + 1 == k) break;
        const float* row = d + (unsigned long long)pick * n;
        float v = neg_inf;
        long long vi = 0x7fffffffffffffffLL;
        for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
            float cur = m[j];
            float r = row[j];
            if (r < cur) {
                cur = r;
                m[j] = cur;
            }
            divprune_better(v, vi, cur, (long long)j);
        }
        divprune_block_argmax(v, vi, sv, si);
        obj = fminf(obj, v);
        pick = vi;
    }
    if (threadIdx.x == 0) objective[b] = obj;
}

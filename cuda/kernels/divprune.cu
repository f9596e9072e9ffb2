// DivPrune greedy max-min selection on a precomputed cosine-distance matrix, the GPU twin of
// ferrolm-core's prune::gram. The distance matrices D = 1 - Xn Xn^T ([batch, n, n], float32)
// come from cuBLAS (torch.bmm); these kernels do the first pick and the sequential greedy loop,
// one thread block per image, so a whole batch of images is one launch.
//
// Rules (identical to the CPU path): the first pick is argmax_i min_{j != i} D[i, j] unless a
// first index is given; then repeatedly the unchosen token whose running minimum distance to
// the chosen set is largest; chosen tokens hold -inf in the running minimum (the mask); ties go
// to the lowest index; everything is float32.

#include "reduce.cuh"

#define FERROLM_DIVPRUNE_BLOCK 1024

// A candidate token and its score.
struct divprune_pick {
    float v;
    long long i;
};

// The better of two candidates: larger score, then lower index.
struct divprune_better {
    __device__ divprune_pick operator()(divprune_pick a, divprune_pick b) const {
        return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
    }
};

// nn[b * n + r] = min over j != r of dist[b][r][j] (+inf when n == 1). Grid (n, batch) of
// FERROLM_BLOCK threads.
extern "C" __global__ void divprune_nearest_f32(const float* __restrict__ dist,
                                                unsigned int n,
                                                float* __restrict__ nn) {
    __shared__ float shared[FERROLM_BLOCK];
    unsigned int r = blockIdx.x;
    unsigned long long b = blockIdx.y;
    const float* row = dist + (b * n + r) * (unsigned long long)n;
    float m = ferrolm_inf();
    for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
        if (j != r) m = fminf(m, row[j]);
    }
    m = ferrolm_block_reduce(m, shared, ferrolm_min{});
    if (threadIdx.x == 0) nn[b * n + r] = m;
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
    __shared__ divprune_pick shared[FERROLM_DIVPRUNE_BLOCK];
    const divprune_pick none = {ferrolm_neg_inf(), 0x7fffffffffffffffLL};
    unsigned long long b = blockIdx.x;
    const float* d = dist + b * n * (unsigned long long)n;
    float* m = mind + b * n;
    long long pick = first[b];
    if (pick < 0) {
        divprune_pick best = none;
        for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
            best = divprune_better{}(best, {nn[b * n + j], (long long)j});
        }
        pick = ferrolm_block_reduce(best, shared, divprune_better{}).i;
    }
    for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) m[j] = ferrolm_inf();
    __syncthreads();
    float obj = ferrolm_inf();
    for (unsigned int t = 0;; ++t) {
        if (threadIdx.x == 0) {
            out[b * k + t] = pick;
            m[pick] = ferrolm_neg_inf();
        }
        __syncthreads();
        if (t + 1 == k) break;
        const float* row = d + (unsigned long long)pick * n;
        divprune_pick best = none;
        for (unsigned int j = threadIdx.x; j < n; j += blockDim.x) {
            float cur = m[j];
            float r = row[j];
            if (r < cur) {
                cur = r;
                m[j] = cur;
            }
            best = divprune_better{}(best, {cur, (long long)j});
        }
        best = ferrolm_block_reduce(best, shared, divprune_better{});
        obj = fminf(obj, best.v);
        pick = best.i;
    }
    if (threadIdx.x == 0) objective[b] = obj;
}

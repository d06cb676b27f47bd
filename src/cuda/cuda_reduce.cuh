/* Warp and block reductions shared by the CUDA kernels. */
#ifndef MODPO_CUDA_REDUCE_CUH
#define MODPO_CUDA_REDUCE_CUH

#include <cuda_bf16.h>
#include <math.h>

#define FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, o));
    return v;
}

__device__ __forceinline__ double warp_sum_d(double v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL_MASK, v, o);
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the result.  `sh` is 32 floats of shared memory. */
__device__ __forceinline__ float block_sum(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0f;
    return warp_sum(v);
}

__device__ __forceinline__ float block_max(float v, float *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : -INFINITY;
    return warp_max(v);
}

__device__ __forceinline__ double block_sum_d(double v, double *sh)
{
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum_d(v);
    __syncthreads();
    if (lane == 0) sh[w] = v;
    __syncthreads();
    v = lane < nw ? sh[lane] : 0.0;
    return warp_sum_d(v);
}

/* Folds U keys into a warp's online softmax (running max m, sum l, output
 * o, NT dims a lane): key u, the warp's j0 + u * STRIDE, has the lane's
 * partial dot product part[u] and value dims vv[u]; keys past `last` count
 * as absent.  The decode kernels share it.  Its shape, and merge_warps',
 * is session 5's inline code: written as a score loop and then a max loop
 * (with a merge that skipped dims past head_dim), attn_decode_kernel got
 * another schedule, and its batch-64 step ran 13.6 against 10.35 ms on an
 * H200 (bench/NOTES-gpu.md step 20). */
template <int NT, int U, int STRIDE>
__device__ __forceinline__ void softmax_update(const float *part, float vv[][NT], int j0, int last,
                                               float scale, float &m, float &l, float *o)
{
    float sc[U], mn = m;
#pragma unroll
    for (int u = 0; u < U; u++) {
        sc[u] = j0 + u * STRIDE <= last ? warp_sum(part[u]) * scale : -INFINITY;
        mn = fmaxf(mn, sc[u]);
    }
    const float corr = expf(m - mn);
    float pr[U];
    l *= corr;
#pragma unroll
    for (int u = 0; u < U; u++) {
        pr[u] = expf(sc[u] - mn);
        l += pr[u];
    }
#pragma unroll
    for (int t = 0; t < NT; t++) {
        float acc = o[t] * corr;
#pragma unroll
        for (int u = 0; u < U; u++) acc += pr[u] * vv[u][t];
        o[t] = acc;
    }
    m = mn;
}

/* Merges n (m, l, o) partials into M, L and acc (the lane's dims): m and l
 * are `ms` apart, o rows `os` apart.  GLOBAL: other blocks wrote them in
 * this launch, so they are read past L1. */
template <bool GLOBAL>
__device__ __forceinline__ float merge_load(const float *p) { return GLOBAL ? __ldcg(p) : *p; }

template <int NT, bool GLOBAL>
__device__ __forceinline__ void merge_partials(const float *m_of, const float *l_of, const float *o_of,
                                               int n, int ms, int os, int hd, float &M, float &L,
                                               float *acc)
{
    const int lane = threadIdx.x & 31;
    M = -INFINITY;
    for (int w = 0; w < n; w++) M = fmaxf(M, merge_load<GLOBAL>(m_of + (size_t)w * ms));
    L = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int w = 0; w < n; w++) {
        float mw = merge_load<GLOBAL>(m_of + (size_t)w * ms);
        if (mw == -INFINITY) continue; /* a part that saw no key */
        float f = expf(mw - M);
        L += merge_load<GLOBAL>(l_of + (size_t)w * ms) * f;
#pragma unroll
        for (int t = 0; t < NT; t++) {
            int d = lane + 32 * t;
            if (d < hd) acc[t] += merge_load<GLOBAL>(o_of + (size_t)w * os + d) * f;
        }
    }
}

/* Each warp's (m, l, o) through shared memory into warp 0's M, L, acc;
 * false in the other warps, which have nothing left to do.  o_s rows hold
 * NT * 32 dims, those past head_dim zero, so all are summed. */
template <int NT, int WARPS>
__device__ __forceinline__ bool merge_warps(float m, float l, const float *o, float *m_s, float *l_s,
                                            float (*o_s)[NT * 32], float &M, float &L, float *acc)
{
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) {
        m_s[warp] = m;
        l_s[warp] = l;
    }
#pragma unroll
    for (int t = 0; t < NT; t++) o_s[warp][lane + 32 * t] = o[t];
    __syncthreads();
    if (warp != 0) return false;
    M = -INFINITY;
    for (int w = 0; w < WARPS; w++) M = fmaxf(M, m_s[w]);
    L = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int w = 0; w < WARPS; w++) {
        if (m_s[w] == -INFINITY) continue; /* a warp that saw no key */
        const float f = expf(m_s[w] - M);
        L += l_s[w] * f;
#pragma unroll
        for (int t = 0; t < NT; t++) acc[t] += o_s[w][lane + 32 * t] * f;
    }
    return true;
}

static inline unsigned cu_blocks(size_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

/* One row of RMSNorm, y = bf16(w * (x * r)), r = rsqrt(mean(x^2) + eps), by
 * the whole block; returns r.  The norm kernel and the GEMVs that form
 * their normed rows themselves (cuda_gemm.cu) share it, so both give the
 * same bits.  `sh` is 32 floats of shared memory. */
/* Loads a thread has in flight at once in the row loops below.  One at a
 * time, a 4096-wide row was 16 round trips to L2 per loop, ~10 us of a
 * GEMV that forms its normed x itself, before any weight streamed (kernel
 * trace, bench/NOTES-gpu.md step 18).  The sums keep their order. */
#define ROW_BATCH 8

/* A row of at most NORM_BATCH values a thread (4096 at 256 threads, the
 * 7B width) is read once, x and w together, and kept in registers for the
 * output: one round trip to L2 where the loops below take four.  A thread
 * sums the same elements in the same order either way, so the bits are
 * the same. */
#define NORM_BATCH 16

__device__ __forceinline__ float rmsnorm_row_held(const float *__restrict__ xi, const float *__restrict__ w,
                                                  int d, float eps, __nv_bfloat16 *__restrict__ yi, float *sh)
{
    const int step = blockDim.x;
    float xv[NORM_BATCH], wv[NORM_BATCH], ss = 0.0f;
#pragma unroll
    for (int u = 0; u < NORM_BATCH; u++) {
        const int j = threadIdx.x + u * step;
        xv[u] = j < d ? xi[j] : 0.0f;
        wv[u] = j < d ? w[j] : 0.0f;
    }
#pragma unroll
    for (int u = 0; u < NORM_BATCH; u++)
        if (threadIdx.x + u * step < d) ss += xv[u] * xv[u];
    ss = block_sum(ss, sh);
    const float r = rsqrtf(ss / (float)d + eps);
#pragma unroll
    for (int u = 0; u < NORM_BATCH; u++) {
        const int j = threadIdx.x + u * step;
        if (j < d) yi[j] = __float2bfloat16(wv[u] * (xv[u] * r));
    }
    return r;
}

__device__ __forceinline__ float rmsnorm_row(const float *__restrict__ xi, const float *__restrict__ w,
                                             int d, float eps, __nv_bfloat16 *__restrict__ yi, float *sh)
{
    const int step = blockDim.x;
    if (d <= NORM_BATCH * step) return rmsnorm_row_held(xi, w, d, eps, yi, sh);
    float ss = 0.0f;
    for (int j0 = threadIdx.x; j0 < d; j0 += ROW_BATCH * step) {
        float v[ROW_BATCH];
#pragma unroll
        for (int u = 0; u < ROW_BATCH; u++) v[u] = j0 + u * step < d ? xi[j0 + u * step] : 0.0f;
#pragma unroll
        for (int u = 0; u < ROW_BATCH; u++)
            if (j0 + u * step < d) ss += v[u] * v[u];
    }
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)d + eps);
    for (int j0 = threadIdx.x; j0 < d; j0 += ROW_BATCH * step) {
        float xv[ROW_BATCH], wv[ROW_BATCH];
#pragma unroll
        for (int u = 0; u < ROW_BATCH; u++) {
            bool in = j0 + u * step < d;
            xv[u] = in ? xi[j0 + u * step] : 0.0f;
            wv[u] = in ? w[j0 + u * step] : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < ROW_BATCH; u++)
            if (j0 + u * step < d) yi[j0 + u * step] = __float2bfloat16(wv[u] * (xv[u] * r));
    }
    return r;
}

#endif

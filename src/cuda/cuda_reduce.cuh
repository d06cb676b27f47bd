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

static inline unsigned cu_blocks(size_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

/* One row of RMSNorm, y = bf16(w * (x * r)), r = rsqrt(mean(x^2) + eps), by
 * the whole block; returns r.  The norm kernel and the GEMVs that form
 * their normed rows themselves (cuda_gemm.cu) share it, so both give the
 * same bits.  `sh` is 32 floats of shared memory. */
__device__ __forceinline__ float rmsnorm_row(const float *__restrict__ xi, const float *__restrict__ w,
                                             int d, float eps, __nv_bfloat16 *__restrict__ yi, float *sh)
{
    float ss = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) ss += xi[j] * xi[j];
    ss = block_sum(ss, sh);
    float r = rsqrtf(ss / (float)d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) yi[j] = __float2bfloat16(w[j] * (xi[j] * r));
    return r;
}

#endif

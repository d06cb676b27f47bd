/* RMSNorm as HF's LlamaRMSNorm in fp32 (cpu_rmsnorm.c):
 *     r = rsqrt(mean(x^2) + eps),  y = w * (x * r)
 * Backward with g = w * dy:  dx += r * g - x * r^3 * mean(g * x).
 * One block per row; x and dx are the fp32 residual stream, y is bf16 (the
 * next GEMM's operand).  An optional row map lets the LM head norm only the
 * labelled rows. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#define THREADS 256

__global__ void rmsnorm_fwd_kernel(int d, const float *__restrict__ x,
                                   const int32_t *__restrict__ rows, const float *__restrict__ w,
                                   float eps, bf16 *__restrict__ y, float *__restrict__ rstd)
{
    __shared__ float sh[32];
    pdl_trigger(); /* the GEMV after it may start streaming its weights */
    int i = blockIdx.x;
    const float *xi = x + (size_t)(rows ? rows[i] : i) * d;
    float r = rmsnorm_row(xi, w, d, eps, y + (size_t)i * d, sh);
    if (rstd && threadIdx.x == 0) rstd[i] = r;
}

__global__ void rmsnorm_bwd_kernel(int d, const float *__restrict__ x,
                                   const int32_t *__restrict__ rows, const float *__restrict__ w,
                                   const float *__restrict__ rstd, const float *__restrict__ dy,
                                   const float *__restrict__ scale, float *__restrict__ dx)
{
    __shared__ float sh[32];
    int i = blockIdx.x;
    size_t r0 = (size_t)(rows ? rows[i] : i) * d;
    const float *xi = x + r0, *dyi = dy + (size_t)i * d;
    float *dxi = dx + r0;
    float sc = scale ? scale[i] : 1.0f;
    float dot = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) dot += w[j] * dyi[j] * xi[j];
    dot = block_sum(dot, sh) * sc;
    float r = rstd[i];
    float c = dot / (float)d * r * r * r;
    for (int j = threadIdx.x; j < d; j += blockDim.x)
        dxi[j] += r * (w[j] * dyi[j] * sc) - c * xi[j];
}

int cu_rmsnorm_forward(CuState *st, int n, int d, const float *x, const int32_t *rows,
                       const float *w, float eps, bf16 *y, float *rstd, Error *err)
{
    if (n <= 0) return 0;
    rmsnorm_fwd_kernel<<<n, THREADS, 0, st->stream>>>(d, x, rows, w, eps, y, rstd);
    CU_LAUNCHED();
    return 0;
}

int cu_rmsnorm_backward(CuState *st, int n, int d, const float *x, const int32_t *rows,
                        const float *w, const float *rstd, const float *dy, const float *scale,
                        float *dx, Error *err)
{
    if (n <= 0) return 0;
    rmsnorm_bwd_kernel<<<n, THREADS, 0, st->stream>>>(d, x, rows, w, rstd, dy, scale, dx);
    CU_LAUNCHED();
    return 0;
}

/* The optimizer on the device (BackendOps adamw_step / adamw_pull /
 * adamw_push): the gradient sum over the ranks (NCCL, queued by the
 * trainer's callback), the global norm, torch's clipping and AdamW with the
 * per-element arithmetic of optimizer_math.h, so the device step gives the
 * host optimizer's bits (check_cuda_backend compares them).  The moments
 * live next to the adapter's fp32 master weights; the only wait is for the
 * norm, which the trainer logs and must see finite. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

extern "C" {
#include "optimizer_math.h"
}

#define NORM_BLOCKS 264 /* two per SM of an H100: enough to stream 8M floats */
#define NORM_THREADS 256

/* partial[block] = sum of g^2 over the block's grid-stride share, in double. */
__global__ void __launch_bounds__(NORM_THREADS)
    sum_squares_kernel(const float *__restrict__ g, size_t n, double *__restrict__ partial)
{
    __shared__ double sh[NORM_THREADS / 32];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)g[i] * (double)g[i];
    s = warp_sum_d(s);
    int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    if (lane == 0) sh[w] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
        double t = 0.0;
        for (int k = 0; k < NORM_THREADS / 32; k++) t += sh[k];
        partial[blockIdx.x] = t;
    }
}

/* The partial sums in a fixed order (the same bits every run), the norm and
 * the clip coefficient: norm_coef = {norm, coef}. */
__global__ void clip_coef_kernel(const double *__restrict__ partial, double max_norm,
                                 double *__restrict__ norm_coef)
{
    double t = 0.0;
    for (int k = 0; k < NORM_BLOCKS; k++) t += partial[k];
    double norm = sqrt(t);
    norm_coef[0] = norm;
    norm_coef[1] = clip_coef_of(norm, max_norm); /* a float, exact in the double */
}

/* AdamW on every element, the bf16 compute copy refreshed on the way; does
 * nothing when the norm is not finite (the host reports it). */
__global__ void adamw_kernel(AdamWScalars s, const double *__restrict__ norm_coef, size_t n,
                             float *__restrict__ p, const float *__restrict__ g,
                             float *__restrict__ m, float *__restrict__ v, bf16 *__restrict__ pbf)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    double norm = norm_coef[0];
    if (i >= n || !isfinite(norm)) return;
    float coef = (float)norm_coef[1], gi = g[i];
    if (coef < 1.0f) gi = OPT_MUL(gi, coef); /* torch clips the gradient in place first */
    adamw_update_one(&s, gi, &p[i], &m[i], &v[i]);
    pbf[i] = __float2bfloat16(p[i]);
}

/* The moments and the norm's scratch, made zero on first use. */
static int moments_of(CuState *st, CuAdapter *ca, Error *err)
{
    if (ca->m) return 0;
    size_t n = ca->n ? ca->n : 1;
    CU_TRY(cudaMalloc((void **)&ca->m, n * sizeof(float)));
    CU_TRY(cudaMalloc((void **)&ca->v, n * sizeof(float)));
    CU_TRY(cudaMalloc((void **)&ca->norm_work, (NORM_BLOCKS + 2) * sizeof(double)));
    CU_TRY(cudaMemsetAsync(ca->m, 0, n * sizeof(float), st->stream));
    CU_TRY(cudaMemsetAsync(ca->v, 0, n * sizeof(float), st->stream));
    return 0;
}

void cu_adamw_free(CuAdapter *ca)
{
    if (ca->m) cudaFree(ca->m);
    if (ca->v) cudaFree(ca->v);
    if (ca->norm_work) cudaFree(ca->norm_work);
    ca->m = ca->v = NULL;
    ca->norm_work = NULL;
}

int cu_adamw_step(Backend *b, BackendAdapter *a, const BackendAdamWStep *step, double *grad_norm,
                  Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    TRY(moments_of(st, ca, err));
    if (step->sum.fn && step->sum.fn(step->sum.ctx, ca->grads, ca->n, st->stream, err)) return -1;
    double *partial = ca->norm_work, *norm_coef = ca->norm_work + NORM_BLOCKS;
    sum_squares_kernel<<<NORM_BLOCKS, NORM_THREADS, 0, st->stream>>>(ca->grads, ca->n, partial);
    clip_coef_kernel<<<1, 1, 0, st->stream>>>(partial, step->max_grad_norm, norm_coef);
    AdamWScalars s = adamw_scalars(&step->cfg, step->t, step->lr);
    if (ca->n)
        adamw_kernel<<<cu_blocks(ca->n, 256), 256, 0, st->stream>>>(s, norm_coef, ca->n, ca->params,
                                                                     ca->grads, ca->m, ca->v, ca->pbf);
    CU_LAUNCHED();
    CU_TRY(cudaMemcpyAsync(grad_norm, norm_coef, sizeof(double), cudaMemcpyDeviceToHost, st->stream));
    CU_TRY(cudaStreamSynchronize(st->stream));
    if (!isfinite(*grad_norm)) return error_set(err, "the gradient norm is not finite (%g)", *grad_norm);
    return 0;
}

int cu_adamw_pull(Backend *b, BackendAdapter *a, float *m, float *v, Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    size_t bytes = ca->n * sizeof(float);
    TRY(moments_of(st, ca, err));
    CU_TRY(cudaMemcpyAsync(a->host->params, ca->params, bytes, cudaMemcpyDeviceToHost, st->stream));
    if (m) CU_TRY(cudaMemcpyAsync(m, ca->m, bytes, cudaMemcpyDeviceToHost, st->stream));
    if (v) CU_TRY(cudaMemcpyAsync(v, ca->v, bytes, cudaMemcpyDeviceToHost, st->stream));
    CU_TRY(cudaStreamSynchronize(st->stream));
    return 0;
}

int cu_adamw_push(Backend *b, BackendAdapter *a, const float *m, const float *v, Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    size_t bytes = ca->n * sizeof(float);
    TRY(moments_of(st, ca, err));
    CU_TRY(cudaMemcpyAsync(ca->m, m, bytes, cudaMemcpyHostToDevice, st->stream));
    CU_TRY(cudaMemcpyAsync(ca->v, v, bytes, cudaMemcpyHostToDevice, st->stream));
    CU_TRY(cudaStreamSynchronize(st->stream)); /* the caller's buffers may go away */
    return 0;
}

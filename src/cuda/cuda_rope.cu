/* Rotary position embeddings in HF Llama's rotate_half convention
 * (cpu_rope.c): out = x * cos + rotate_half(x) * sin, rotate_half([x1, x2])
 * = [-x2, x1].  The cos/sin tables are computed on the host exactly as the
 * CPU reference does (fp32 inverse frequencies and angles) and uploaded once
 * per size; the backward is the rotation by -angle. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#include <math.h>
#include <stdlib.h>

int cu_rope_tables(CuState *st, int n_pos, Error *err)
{
    if (n_pos <= st->rope_npos) return 0;
    int hd = llama_head_dim(&st->c), half = hd / 2;
    size_t n = (size_t)n_pos * half;
    float *h = (float *)malloc(2 * n * sizeof(float));
    if (!h) return error_set(err, "out of memory for rope tables");
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)hd;
        float inv_freq = 1.0f / powf(st->c.rope_theta, expo);
        for (int p = 0; p < n_pos; p++) {
            float ang = (float)p * inv_freq;
            h[(size_t)p * half + i] = cosf(ang);
            h[n + (size_t)p * half + i] = sinf(ang);
        }
    }
    /* Growing is rare (a longer sequence than ever before): the old tables may
     * still be read by queued kernels, so wait before freeing them. */
    cudaError_t e = cudaStreamSynchronize(st->stream);
    if (e == cudaSuccess && st->rope_cos) e = cudaFree(st->rope_cos);
    st->rope_cos = st->rope_sin = NULL;
    st->rope_npos = 0;
    float *dev = NULL;
    if (e == cudaSuccess) e = cudaMalloc((void **)&dev, 2 * n * sizeof(float));
    if (e == cudaSuccess) e = cudaMemcpy(dev, h, 2 * n * sizeof(float), cudaMemcpyHostToDevice);
    free(h);
    if (e != cudaSuccess) {
        if (dev) cudaFree(dev);
        return error_set(err, "rope tables for %d positions: %s", n_pos, cudaGetErrorString(e));
    }
    st->rope_cos = dev;
    st->rope_sin = dev + n;
    st->rope_npos = n_pos;
    return 0;
}

__global__ void rope_fwd_kernel(int n, int n_heads, int half, const int32_t *__restrict__ pos,
                                const float *__restrict__ cs, const float *__restrict__ sn,
                                bf16 *__restrict__ x)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)n * n_heads * half;
    if (idx >= total) return;
    int j = (int)(idx % half);
    size_t rh = idx / half; /* row * n_heads + head */
    int row = (int)(rh / n_heads);
    size_t t = (size_t)pos[row] * half + j;
    float c = cs[t], s = sn[t];
    bf16 *x1 = x + rh * 2 * half + j, *x2 = x1 + half;
    float a = __bfloat162float(*x1), b = __bfloat162float(*x2);
    *x1 = __float2bfloat16(a * c - b * s);
    *x2 = __float2bfloat16(b * c + a * s);
}

__global__ void rope_bwd_kernel(int n, int n_heads, int half, const int32_t *__restrict__ pos,
                                const float *__restrict__ cs, const float *__restrict__ sn,
                                const float *__restrict__ dx, bf16 *__restrict__ out)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    size_t total = (size_t)n * n_heads * half;
    if (idx >= total) return;
    int j = (int)(idx % half);
    size_t rh = idx / half;
    int row = (int)(rh / n_heads);
    size_t t = (size_t)pos[row] * half + j;
    float c = cs[t], s = -sn[t];
    size_t o1 = rh * 2 * half + j, o2 = o1 + half;
    float a = dx[o1], b = dx[o2];
    out[o1] = __float2bfloat16(a * c - b * s);
    out[o2] = __float2bfloat16(b * c + a * s);
}

int cu_rope_forward(CuState *st, int n, const int32_t *pos, int n_heads, bf16 *x, Error *err)
{
    int half = llama_head_dim(&st->c) / 2;
    size_t total = (size_t)n * n_heads * half;
    if (!total) return 0;
    rope_fwd_kernel<<<cu_blocks(total, 256), 256, 0, st->stream>>>(n, n_heads, half, pos,
                                                                  st->rope_cos, st->rope_sin, x);
    CU_LAUNCHED();
    return 0;
}

/* Decode and prefill with a cache: q and k rotated in place as
 * rope_fwd_kernel does (the same arithmetic, so the same bits), and each
 * row's rotated k and its v written to the row's cache row: one launch
 * where there were four. */
__global__ void rope_cache_kernel(int n, int n_heads, int n_kv_heads, int half,
                                  const int32_t *__restrict__ pos,
                                  const int32_t *__restrict__ cache_row,
                                  const float *__restrict__ cs, const float *__restrict__ sn,
                                  bf16 *__restrict__ q, bf16 *__restrict__ k,
                                  const bf16 *__restrict__ v, bf16 *__restrict__ kc,
                                  bf16 *__restrict__ vc)
{
    int q_pairs = n_heads * half, k_pairs = n_kv_heads * half, kvd = 2 * k_pairs;
    int per_row = q_pairs + k_pairs + kvd;
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * per_row) return;
    int row = (int)(idx / per_row), i = (int)(idx % per_row);
    size_t crow = (size_t)cache_row[row] * kvd;
    if (i >= q_pairs + k_pairs) { /* v: copied */
        int e = i - q_pairs - k_pairs;
        vc[crow + e] = v[(size_t)row * kvd + e];
        return;
    }
    int is_k = i >= q_pairs, p = is_k ? i - q_pairs : i;
    int head = p / half, j = p % half;
    size_t t = (size_t)pos[row] * half + j;
    float c = cs[t], s = sn[t];
    size_t o1 = (size_t)head * 2 * half + j, o2 = o1 + half;
    bf16 *x = is_k ? k + (size_t)row * kvd : q + (size_t)row * n_heads * 2 * half;
    float a = __bfloat162float(x[o1]), b = __bfloat162float(x[o2]);
    bf16 r1 = __float2bfloat16(a * c - b * s), r2 = __float2bfloat16(b * c + a * s);
    x[o1] = r1;
    x[o2] = r2;
    if (is_k) {
        kc[crow + o1] = r1;
        kc[crow + o2] = r2;
    }
}

int cu_rope_into_cache(CuState *st, int n, const int32_t *pos, const int32_t *cache_row, bf16 *q,
                       bf16 *k, const bf16 *v, bf16 *k_cache, bf16 *v_cache, Error *err)
{
    const LlamaConfig *c = &st->c;
    int half = llama_head_dim(c) / 2;
    size_t per_row = (size_t)(c->num_attention_heads + c->num_key_value_heads) * half +
                     (size_t)llama_kv_dim(c);
    size_t total = (size_t)n * per_row;
    if (!total) return 0;
    rope_cache_kernel<<<cu_blocks(total, 256), 256, 0, st->stream>>>(
        n, c->num_attention_heads, c->num_key_value_heads, half, pos, cache_row, st->rope_cos,
        st->rope_sin, q, k, v, k_cache, v_cache);
    CU_LAUNCHED();
    return 0;
}

int cu_rope_backward(CuState *st, int n, const int32_t *pos, int n_heads, const float *dx,
                     bf16 *out, Error *err)
{
    int half = llama_head_dim(&st->c) / 2;
    size_t total = (size_t)n * n_heads * half;
    if (!total) return 0;
    rope_bwd_kernel<<<cu_blocks(total, 256), 256, 0, st->stream>>>(n, n_heads, half, pos,
                                                                  st->rope_cos, st->rope_sin, dx,
                                                                  out);
    CU_LAUNCHED();
    return 0;
}

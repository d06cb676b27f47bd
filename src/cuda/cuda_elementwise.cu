/* The small element-wise kernels: embedding lookup, SwiGLU
 * (act = silu(gate) * up, as cpu_mlp.c), fp32 -> bf16 and the KV-cache
 * row scatter. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

__global__ void embed_kernel(int n, int d, const int32_t *__restrict__ tok,
                             const bf16 *__restrict__ table, float *__restrict__ x)
{
    size_t idx = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (idx >= (size_t)n * d) return;
    size_t row = idx / d, j = idx % d;
    x[idx] = __bfloat162float(table[(size_t)tok[row] * d + j]);
}

int cu_embed(CuState *st, int n, const int32_t *tok, float *x, Error *err)
{
    size_t total = (size_t)n * st->c.hidden_size;
    if (!total) return 0;
    embed_kernel<<<cu_blocks(total, 256), 256, 0, st->stream>>>(n, st->c.hidden_size, tok,
                                                               st->embed, x);
    CU_LAUNCHED();
    return 0;
}

/* Two values a thread (bf16x2 loads); n is even whenever the intermediate
 * size is, and an odd tail is handled by the last thread. */

__global__ void swiglu_fwd_kernel(size_t n, const bf16 *__restrict__ gate,
                                  const bf16 *__restrict__ up, bf16 *__restrict__ act)
{
    pdl_trigger(); /* the GEMV after it may start streaming its weights */
    size_t i = 2 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 1 < n) {
        *(__nv_bfloat162 *)(act + i) =
            swiglu_pair(*(const __nv_bfloat162 *)(gate + i), *(const __nv_bfloat162 *)(up + i));
    } else if (i < n) {
        act[i] = swiglu_one(gate[i], up[i]);
    }
}

__device__ __forceinline__ void swiglu_grad(float g, float u, float da, float *dg, float *du)
{
    float sig = 1.0f / (1.0f + expf(-g));
    *du = da * g * sig;
    *dg = da * u * sig * (1.0f + g * (1.0f - sig));
}

__global__ void swiglu_bwd_kernel(size_t n, const bf16 *__restrict__ gate,
                                  const bf16 *__restrict__ up, const float *__restrict__ dact,
                                  bf16 *__restrict__ dgate, bf16 *__restrict__ dup)
{
    size_t i = 2 * ((size_t)blockIdx.x * blockDim.x + threadIdx.x);
    if (i + 1 < n) {
        float2 g = __bfloat1622float2(*(const __nv_bfloat162 *)(gate + i));
        float2 u = __bfloat1622float2(*(const __nv_bfloat162 *)(up + i));
        float2 da = *(const float2 *)(dact + i);
        float dg0, du0, dg1, du1;
        swiglu_grad(g.x, u.x, da.x, &dg0, &du0);
        swiglu_grad(g.y, u.y, da.y, &dg1, &du1);
        *(__nv_bfloat162 *)(dgate + i) = __floats2bfloat162_rn(dg0, dg1);
        *(__nv_bfloat162 *)(dup + i) = __floats2bfloat162_rn(du0, du1);
    } else if (i < n) {
        float dg, du;
        swiglu_grad(__bfloat162float(gate[i]), __bfloat162float(up[i]), dact[i], &dg, &du);
        dgate[i] = __float2bfloat16(dg);
        dup[i] = __float2bfloat16(du);
    }
}

int cu_swiglu_forward(CuState *st, size_t n, const bf16 *gate, const bf16 *up, bf16 *act,
                      Error *err)
{
    if (!n) return 0;
    swiglu_fwd_kernel<<<cu_blocks((n + 1) / 2, 256), 256, 0, st->stream>>>(n, gate, up, act);
    CU_LAUNCHED();
    return 0;
}

int cu_swiglu_backward(CuState *st, size_t n, const bf16 *gate, const bf16 *up,
                       const float *dact, bf16 *dgate, bf16 *dup, Error *err)
{
    if (!n) return 0;
    swiglu_bwd_kernel<<<cu_blocks((n + 1) / 2, 256), 256, 0, st->stream>>>(n, gate, up, dact, dgate,
                                                                           dup);
    CU_LAUNCHED();
    return 0;
}

__global__ void to_bf16_kernel(size_t n, const float *__restrict__ x, bf16 *__restrict__ y)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = __float2bfloat16(x[i]);
}

int cu_to_bf16(CuState *st, size_t n, const float *x, bf16 *y, Error *err)
{
    if (!n) return 0;
    to_bf16_kernel<<<cu_blocks(n, 256), 256, 0, st->stream>>>(n, x, y);
    CU_LAUNCHED();
    return 0;
}

/* splitmix64 of (seed, i): independent of the launch shape, so a tensor's
 * values depend only on its seed. */
__device__ __forceinline__ uint64_t mix64(uint64_t z)
{
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

__global__ void fill_normal_kernel(bf16 *x, size_t n, uint64_t seed, float std)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    uint64_t h = mix64(seed * 0x100000001b3ull ^ mix64(i));
    float u1 = ((h >> 40) + 1.0f) * (1.0f / 16777217.0f); /* (0, 1] */
    float u2 = ((h & 0xffffff) + 0.5f) * (1.0f / 16777216.0f);
    x[i] = __float2bfloat16(std * sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2));
}

__global__ void fill_const_kernel(float *x, size_t n, float value)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = value;
}

int cu_fill_normal(CuState *st, bf16 *x, size_t n, uint64_t seed, float std, Error *err)
{
    if (!n) return 0;
    fill_normal_kernel<<<cu_blocks(n, 256), 256, 0, st->stream>>>(x, n, seed, std);
    CU_LAUNCHED();
    return 0;
}

int cu_fill_const(CuState *st, float *x, size_t n, float value, Error *err)
{
    if (!n) return 0;
    fill_const_kernel<<<cu_blocks(n, 256), 256, 0, st->stream>>>(x, n, value);
    CU_LAUNCHED();
    return 0;
}

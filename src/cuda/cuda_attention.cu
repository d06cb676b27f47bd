/* Causal scaled-dot-product attention with grouped-query heads over packed
 * rows (the maths of cpu_attention.c), flash style: nothing [T x T] is ever
 * stored.
 *
 * Forward: a block is WARPS query rows of one (sequence, head); each warp
 * owns one query row.  Key/value tiles of 32 rows are staged in shared
 * memory as fp32; a lane scores one key of the tile, the warp updates an
 * online softmax (running max m, sum l) and each lane accumulates head_dim/32
 * output dimensions.  out = o / l (bf16), lse = m + log l (fp32).
 *
 * Backward (recomputing P = exp(S - lse)), in two kernels so that no atomics
 * are needed:
 *   dq:     per query row (warp): delta = rowsum(dO * O), then over key tiles
 *           dS = P * (dO V^T - delta), dQ = scale * dS K.
 *   dk, dv: per key row and kv head (warp): over the group's query heads and
 *           the query tiles that see the key, dV += P^T dO, dK += scale dS^T Q.
 * NT = ceil(head_dim / 32) values per lane, a template parameter so that the
 * accumulators stay in registers. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#include <math.h>

#define WARPS 4
#define TILE 32

struct AttnParams {
    const bf16 *q, *k, *v;
    int q_stride, kv_stride;
    bf16 *out;
    float *lse;
    const float *dout, *delta_in;
    float *delta, *dq, *dk, *dv;
    const int32_t *qstart, *kbase, *nk;
    int n_heads, n_kv_heads, hd;
    float scale;
};

/* Stages rows t0 .. t0+TILE-1 (of n) of a [rows, stride] bf16 matrix, column
 * offset col, into sm[TILE][hd+1] as fp32 (zeros past n). */
__device__ __forceinline__ void stage_tile(float *sm, const bf16 *src, int base, int t0, int n,
                                           int stride, int col, int hd)
{
    int ld = hd + 1;
    for (int idx = threadIdx.x; idx < TILE * hd; idx += blockDim.x) {
        int j = idx / hd, d = idx - j * hd, r = t0 + j;
        sm[j * ld + d] = r < n ? __bfloat162float(src[(size_t)(base + r) * stride + col + d]) : 0.0f;
    }
}

__device__ __forceinline__ void stage_tile_f32(float *sm, const float *src, int base, int t0,
                                               int n, int stride, int col, int hd)
{
    int ld = hd + 1;
    for (int idx = threadIdx.x; idx < TILE * hd; idx += blockDim.x) {
        int j = idx / hd, d = idx - j * hd, r = t0 + j;
        sm[j * ld + d] = r < n ? src[(size_t)(base + r) * stride + col + d] : 0.0f;
    }
}

template <int NT>
__global__ void __launch_bounds__(WARPS * 32) attn_fwd_kernel(AttnParams p)
{
    extern __shared__ float sm[];
    const int hd = p.hd, ld = hd + 1;
    float *ks = sm, *vs = ks + TILE * ld, *qs = vs + TILE * ld;
    const int s = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q0 = p.qstart[s], nq = p.qstart[s + 1] - q0, nk = p.nk[s], kb = p.kbase[s];
    const int i0 = blockIdx.x * WARPS;
    if (i0 >= nq) return;
    const int i = i0 + warp, off = nk - nq;
    const bool active = i < nq;
    const int limit = active ? i + off : -1;
    const int block_limit = min(i0 + WARPS - 1, nq - 1) + off;
    const int g = h / (p.n_heads / p.n_kv_heads);
    float *qw = qs + warp * hd;
    if (active)
        for (int d = lane; d < hd; d += 32)
            qw[d] = __bfloat162float(p.q[(size_t)(q0 + i) * p.q_stride + h * hd + d]);
    float m = -INFINITY, l = 0.0f, o[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) o[t] = 0.0f;

    for (int t0 = 0; t0 <= block_limit; t0 += TILE) {
        __syncthreads();
        stage_tile(ks, p.k, kb, t0, nk, p.kv_stride, g * hd, hd);
        stage_tile(vs, p.v, kb, t0, nk, p.kv_stride, g * hd, hd);
        __syncthreads();
        if (!active || t0 > limit) continue;
        const int key = t0 + lane;
        float sc = -INFINITY;
        if (key <= limit) {
            float acc = 0.0f;
            const float *kr = ks + lane * ld;
            for (int d = 0; d < hd; d++) acc += qw[d] * kr[d];
            sc = acc * p.scale;
        }
        const float mn = fmaxf(m, warp_max(sc));
        const float pr = key <= limit ? expf(sc - mn) : 0.0f;
        const float corr = expf(m - mn);
        l = l * corr + warp_sum(pr);
#pragma unroll
        for (int t = 0; t < NT; t++) o[t] *= corr;
        const int jmax = min(TILE, limit - t0 + 1);
        for (int j = 0; j < jmax; j++) {
            const float pj = __shfl_sync(FULL_MASK, pr, j);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                int d = lane + 32 * t;
                if (d < hd) o[t] += pj * vs[j * ld + d];
            }
        }
        m = mn;
    }
    if (!active) return;
    const float inv = 1.0f / l;
    bf16 *out = p.out + (size_t)(q0 + i) * p.q_stride + h * hd;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        if (d < hd) out[d] = __float2bfloat16(o[t] * inv);
    }
    if (lane == 0) p.lse[(size_t)(q0 + i) * p.n_heads + h] = m + logf(l);
}

template <int NT>
__global__ void __launch_bounds__(WARPS * 32) attn_bwd_dq_kernel(AttnParams p)
{
    extern __shared__ float sm[];
    const int hd = p.hd, ld = hd + 1;
    float *ks = sm, *vs = ks + TILE * ld, *qs = vs + TILE * ld, *ds_ = qs + WARPS * hd;
    const int s = blockIdx.z, h = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q0 = p.qstart[s], nq = p.qstart[s + 1] - q0, nk = p.nk[s], kb = p.kbase[s];
    const int i0 = blockIdx.x * WARPS;
    if (i0 >= nq) return;
    const int i = i0 + warp, off = nk - nq;
    const bool active = i < nq;
    const int limit = active ? i + off : -1;
    const int block_limit = min(i0 + WARPS - 1, nq - 1) + off;
    const int g = h / (p.n_heads / p.n_kv_heads);
    float *qw = qs + warp * hd, *dow = ds_ + warp * hd;
    float delta = 0.0f, lse = 0.0f;
    if (active) {
        size_t r = (size_t)(q0 + i) * p.q_stride + h * hd;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32) {
            qw[d] = __bfloat162float(p.q[r + d]);
            float gd = p.dout[r + d];
            dow[d] = gd;
            acc += gd * __bfloat162float(p.out[r + d]);
        }
        delta = warp_sum(acc);
        lse = p.lse[(size_t)(q0 + i) * p.n_heads + h];
        if (lane == 0) p.delta[(size_t)(q0 + i) * p.n_heads + h] = delta;
    }
    float dq[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) dq[t] = 0.0f;

    for (int t0 = 0; t0 <= block_limit; t0 += TILE) {
        __syncthreads();
        stage_tile(ks, p.k, kb, t0, nk, p.kv_stride, g * hd, hd);
        stage_tile(vs, p.v, kb, t0, nk, p.kv_stride, g * hd, hd);
        __syncthreads();
        if (!active || t0 > limit) continue;
        const int key = t0 + lane;
        float dsv = 0.0f;
        if (key <= limit) {
            const float *kr = ks + lane * ld, *vr = vs + lane * ld;
            float sc = 0.0f, dp = 0.0f;
            for (int d = 0; d < hd; d++) {
                sc += qw[d] * kr[d];
                dp += dow[d] * vr[d];
            }
            const float pr = expf(sc * p.scale - lse);
            dsv = pr * (dp - delta);
        }
        const int jmax = min(TILE, limit - t0 + 1);
        for (int j = 0; j < jmax; j++) {
            const float dj = __shfl_sync(FULL_MASK, dsv, j);
#pragma unroll
            for (int t = 0; t < NT; t++) {
                int d = lane + 32 * t;
                if (d < hd) dq[t] += dj * ks[j * ld + d];
            }
        }
    }
    if (!active) return;
    float *out = p.dq + (size_t)(q0 + i) * p.q_stride + h * hd;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        if (d < hd) out[d] = dq[t] * p.scale;
    }
}

template <int NT>
__global__ void __launch_bounds__(WARPS * 32) attn_bwd_dkv_kernel(AttnParams p)
{
    extern __shared__ float sm[];
    const int hd = p.hd, ld = hd + 1;
    float *qs = sm, *dos = qs + TILE * ld, *lse_s = dos + TILE * ld, *del_s = lse_s + TILE;
    float *kw_all = del_s + TILE, *vw_all = kw_all + WARPS * hd;
    const int s = blockIdx.z, g = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int q0 = p.qstart[s], nq = p.qstart[s + 1] - q0, nk = p.nk[s], kb = p.kbase[s];
    const int j0 = blockIdx.x * WARPS;
    if (j0 >= nk) return;
    const int j = j0 + warp, off = nk - nq;
    const bool active = j < nk;
    const int imin = active ? max(0, j - off) : nq; /* first query that sees key j */
    const int block_imin = max(0, j0 - off);
    const int rep = p.n_heads / p.n_kv_heads;
    float *kw = kw_all + warp * hd, *vw = vw_all + warp * hd;
    if (active)
        for (int d = lane; d < hd; d += 32) {
            size_t r = (size_t)(kb + j) * p.kv_stride + g * hd + d;
            kw[d] = __bfloat162float(p.k[r]);
            vw[d] = __bfloat162float(p.v[r]);
        }
    float dk[NT], dv[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) dk[t] = dv[t] = 0.0f;

    for (int hh = 0; hh < rep; hh++) {
        const int h = g * rep + hh;
        for (int t0 = block_imin - block_imin % TILE; t0 < nq; t0 += TILE) {
            __syncthreads();
            stage_tile(qs, p.q, q0, t0, nq, p.q_stride, h * hd, hd);
            stage_tile_f32(dos, p.dout, q0, t0, nq, p.q_stride, h * hd, hd);
            if (threadIdx.x < TILE) {
                int r = t0 + threadIdx.x;
                lse_s[threadIdx.x] = r < nq ? p.lse[(size_t)(q0 + r) * p.n_heads + h] : 0.0f;
                del_s[threadIdx.x] = r < nq ? p.delta_in[(size_t)(q0 + r) * p.n_heads + h] : 0.0f;
            }
            __syncthreads();
            if (!active || t0 + TILE <= imin) continue;
            const int qi = t0 + lane;
            float pr = 0.0f, dsv = 0.0f;
            if (qi < nq && qi >= imin) {
                const float *qr = qs + lane * ld, *dr = dos + lane * ld;
                float sc = 0.0f, dp = 0.0f;
                for (int d = 0; d < hd; d++) {
                    sc += qr[d] * kw[d];
                    dp += dr[d] * vw[d];
                }
                pr = expf(sc * p.scale - lse_s[lane]);
                dsv = pr * (dp - del_s[lane]);
            }
            const int jmax = min(TILE, nq - t0);
            for (int jj = 0; jj < jmax; jj++) {
                const float pj = __shfl_sync(FULL_MASK, pr, jj);
                const float dj = __shfl_sync(FULL_MASK, dsv, jj);
#pragma unroll
                for (int t = 0; t < NT; t++) {
                    int d = lane + 32 * t;
                    if (d < hd) {
                        dv[t] += pj * dos[jj * ld + d];
                        dk[t] += dj * qs[jj * ld + d];
                    }
                }
            }
        }
    }
    if (!active) return;
    size_t r = (size_t)(kb + j) * p.kv_stride + g * hd;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        if (d < hd) {
            p.dk[r + d] = dk[t] * p.scale;
            p.dv[r + d] = dv[t];
        }
    }
}

/* Decode: few query rows against a long cache.  One block per (row, head);
 * its DECODE_WARPS warps take every DECODE_WARPS-th key, a key's score is a
 * warp-wide dot product (NT dims a lane), each warp keeps an online
 * softmax, and the warps' partial results are merged at the end.  Spreads a
 * single query over the whole block instead of one lane per key. */
#define DECODE_WARPS 16
#define DECODE_UNROLL 4

template <int NT>
__global__ void __launch_bounds__(DECODE_WARPS * 32) attn_decode_kernel(AttnParams p, int n_seq)
{
    __shared__ float m_s[DECODE_WARPS], l_s[DECODE_WARPS];
    __shared__ float o_s[DECODE_WARPS][NT * 32];
    pdl_trigger(); /* o_proj's GEMV may start streaming its weights */
    const int h = blockIdx.x, row = blockIdx.y, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    int s = 0;
    for (int lo = 0, hi = n_seq - 1; lo <= hi;) { /* the sequence of this row */
        int mid = (lo + hi) >> 1;
        if (p.qstart[mid] <= row) { s = mid; lo = mid + 1; } else hi = mid - 1;
    }
    const int nq = p.qstart[s + 1] - p.qstart[s], i = row - p.qstart[s];
    const int limit = i + p.nk[s] - nq, kb = p.kbase[s], hd = p.hd;
    const int g = h / (p.n_heads / p.n_kv_heads);
    float q[NT], o[NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        q[t] = d < hd ? __bfloat162float(p.q[(size_t)row * p.q_stride + h * hd + d]) : 0.0f;
        o[t] = 0.0f;
    }
    float m = -INFINITY, l = 0.0f;
    /* DECODE_UNROLL keys a warp at once: their loads are all in flight
     * before the first score is needed (one key at a time, a step's
     * attention was a chain of cache round trips, ~18 us a layer). */
    for (int j0 = warp; j0 <= limit; j0 += DECODE_WARPS * DECODE_UNROLL) {
        float part[DECODE_UNROLL], vv[DECODE_UNROLL][NT];
#pragma unroll
        for (int u = 0; u < DECODE_UNROLL; u++) {
            const int j = j0 + u * DECODE_WARPS; /* the same for the whole warp */
            const bf16 *kr = p.k + (size_t)(kb + j) * p.kv_stride + g * hd;
            const bf16 *vr = p.v + (size_t)(kb + j) * p.kv_stride + g * hd;
            part[u] = 0.0f;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                int d = lane + 32 * t;
                bool in = j <= limit && d < hd;
                part[u] += in ? q[t] * __bfloat162float(kr[d]) : 0.0f;
                vv[u][t] = in ? __bfloat162float(vr[d]) : 0.0f;
            }
        }
        softmax_update<NT, DECODE_UNROLL, DECODE_WARPS>(part, vv, j0, limit, p.scale, m, l, o);
    }
    float M, L, acc[NT];
    if (!merge_warps<NT, DECODE_WARPS>(m, l, o, m_s, l_s, o_s, M, L, acc)) return;
    bf16 *out = p.out + (size_t)row * p.q_stride + h * hd;
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        if (d < hd) out[d] = __float2bfloat16(acc[t] / L);
    }
    if (lane == 0) p.lse[(size_t)row * p.n_heads + h] = M + logf(L);
}

typedef void (*AttnKernel)(AttnParams);

static AttnKernel pick(int which, int nt)
{
    switch (which * 16 + nt) {
#define K(w, n, f) case (w) * 16 + (n): return f<n>;
        K(0, 1, attn_fwd_kernel) K(0, 2, attn_fwd_kernel) K(0, 4, attn_fwd_kernel) K(0, 8, attn_fwd_kernel)
        K(1, 1, attn_bwd_dq_kernel) K(1, 2, attn_bwd_dq_kernel) K(1, 4, attn_bwd_dq_kernel) K(1, 8, attn_bwd_dq_kernel)
        K(2, 1, attn_bwd_dkv_kernel) K(2, 2, attn_bwd_dkv_kernel) K(2, 4, attn_bwd_dkv_kernel) K(2, 8, attn_bwd_dkv_kernel)
#undef K
    default: return NULL;
    }
}

static int launch(CuState *st, int which, const CuRows *rows, const AttnParams &p, Error *err)
{
    int nt = (p.hd + 31) / 32;
    nt = nt <= 1 ? 1 : nt <= 2 ? 2 : nt <= 4 ? 4 : nt <= 8 ? 8 : 0;
    AttnKernel k = nt ? pick(which, nt) : NULL;
    if (!k) return error_set(err, "attention: head_dim %d is above 256", p.hd);
    size_t ld = p.hd + 1, smem;
    dim3 grid;
    if (which == 2) {
        smem = (2 * TILE * ld + 2 * TILE + 2 * WARPS * (size_t)p.hd) * sizeof(float);
        grid = dim3((rows->max_k + WARPS - 1) / WARPS, p.n_kv_heads, rows->n_seq);
    } else {
        smem = (2 * TILE * ld + (which == 1 ? 2 : 1) * WARPS * (size_t)p.hd) * sizeof(float);
        grid = dim3((rows->max_q + WARPS - 1) / WARPS, p.n_heads, rows->n_seq);
    }
    if (grid.x == 0 || grid.z == 0) return 0;
    if (smem > 48 * 1024)
        CU_TRY(cudaFuncSetAttribute((const void *)k, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    (int)smem));
    k<<<grid, WARPS * 32, smem, st->stream>>>(p);
    CU_LAUNCHED();
    return 0;
}

static AttnParams params_of(const CuState *st, const CuRows *rows, const CuAttn *a)
{
    AttnParams p = {};
    p.q = a->q;
    p.k = a->k;
    p.v = a->v;
    p.q_stride = st->c.hidden_size;
    p.kv_stride = a->kv_stride;
    p.out = a->out;
    p.lse = a->lse;
    p.qstart = rows->qstart;
    p.kbase = rows->kbase;
    p.nk = rows->nk;
    p.n_heads = st->c.num_attention_heads;
    p.n_kv_heads = st->c.num_key_value_heads;
    p.hd = llama_head_dim(&st->c);
    p.scale = 1.0f / sqrtf((float)p.hd);
    return p;
}

int cu_attention_forward(CuState *st, const CuRows *rows, const CuAttn *a, Error *err)
{
    AttnParams p = params_of(st, rows, a);
    return launch(st, 0, rows, p, err);
}

int cu_attention_backward(CuState *st, const CuRows *rows, const CuAttn *a, const float *dout,
                          float *delta, float *dq, float *dk, float *dv, Error *err)
{
    AttnParams p = params_of(st, rows, a);
    p.dout = dout;
    p.delta = delta;
    p.delta_in = delta;
    p.dq = dq;
    p.dk = dk;
    p.dv = dv;
    TRY(launch(st, 1, rows, p, err));
    return launch(st, 2, rows, p, err);
}

int cu_attention_decode(CuState *st, const CuRows *rows, const CuAttn *a, Error *err)
{
    AttnParams p = params_of(st, rows, a);
    int nt = (p.hd + 31) / 32;
    dim3 grid(p.n_heads, rows->n_rows), block(DECODE_WARPS * 32);
    if (rows->n_rows == 0) return 0;
    switch (nt <= 1 ? 1 : nt <= 2 ? 2 : nt <= 4 ? 4 : nt <= 8 ? 8 : 0) {
    case 1: attn_decode_kernel<1><<<grid, block, 0, st->stream>>>(p, rows->n_seq); break;
    case 2: attn_decode_kernel<2><<<grid, block, 0, st->stream>>>(p, rows->n_seq); break;
    case 4: attn_decode_kernel<4><<<grid, block, 0, st->stream>>>(p, rows->n_seq); break;
    case 8: attn_decode_kernel<8><<<grid, block, 0, st->stream>>>(p, rows->n_seq); break;
    default: return error_set(err, "attention: head_dim %d is above 256", p.hd);
    }
    CU_LAUNCHED();
    return 0;
}

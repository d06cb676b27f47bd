/* Causal attention of a training pass on tensor cores: the score matrices
 * are formed by strided-batched cuBLAS GEMMs, one [L x L] matrix per
 * (sequence, query head), L the longest sequence.  At the lengths of
 * preference training (L <= ~2k) the scores fit in a workspace, and bf16
 * tensor-core GEMMs beat the scalar flash kernels of cuda_attention.cu by
 * far, even though half of each causal score matrix is computed and thrown
 * away.  Longer sequences, and decode with a KV cache, use the flash kernels.
 *
 * Layout: a sequence chunk's q, k, v are copied from packed rows into
 * head-major padded buffers [seq][head][L][hd] (zeros past the sequence,
 * keys and values repeated for every query head of their GQA group), so
 * that one stride separates consecutive (sequence, head) problems.  The
 * rotary embedding is applied during that copy (the caller keeps q and k
 * unrotated), and undone while dq and dk are copied back, which saves the
 * separate RoPE passes; dq, dk, dv come back in bf16, ready for the GEMMs.
 *
 * With head_dim 64 or 128 the attention itself runs in cuda_flash_mma.cu
 * (no score matrices, L padded to a multiple of 64); otherwise, or with
 * MODPO_CUDA_ATTENTION=gemm, through scores formed by cuBLAS:
 *
 * Forward:   S = scale Q K^T (fp32);  P = softmax(S) over the causal keys
 *            (bf16, lse kept);  O = P V.
 * Backward:  S again, P = exp(S - lse);  dV = P^T dO;  dP = dO V^T;
 *            dS = P (dP - delta), delta = rowsum(dO * O);
 *            dQ = scale dS K;  dK = scale dS^T Q, summed over the group. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#include <math.h>

/* Workspace bound: scores (fp32) + probabilities (bf16) of one chunk.  A
 * sequence whose scores alone exceed it goes to the flash kernels;
 * MODPO_CUDA_ATTENTION_MB lowers the chunk size only (tests force chunks of
 * one sequence with it). */
#define SCORE_BYTES_MAX ((size_t)2 << 30)

static size_t chunk_bytes_max(const CuState *st)
{
    return st->attn_ws_limit ? st->attn_ws_limit : SCORE_BYTES_MAX;
}

struct Geometry {
    int n_heads, rep, hd, L; /* rep: query heads per key/value head */
    int s0, ns;              /* the chunk: sequences s0 .. s0 + ns - 1 */
    int flash;               /* no score matrices: cuda_flash_mma.cu (L padded to 64) */
};

static Geometry geometry_of(const CuState *st, const CuRows *rows)
{
    Geometry g;
    g.n_heads = st->c.num_attention_heads;
    g.rep = st->c.num_attention_heads / st->c.num_key_value_heads;
    g.hd = llama_head_dim(&st->c);
    g.flash = !st->attn_scores && cu_flash_mma_usable(g.hd);
    g.L = g.flash ? (rows->max_q + 63) / 64 * 64 : rows->max_q;
    g.s0 = 0;
    g.ns = rows->n_seq;
    return g;
}

static size_t score_bytes(const Geometry &g, int ns)
{
    return (size_t)ns * g.n_heads * g.L * g.L * (sizeof(float) + sizeof(bf16));
}

int cu_attention_gemm_usable(const CuState *st, const CuRows *rows)
{
    Geometry g = geometry_of(st, rows);
    /* 16-byte accesses: head halves and row strides in multiples of 8 values */
    return (rows->cache_row == NULL || rows->fresh_cache) && g.hd % 16 == 0 &&
           llama_kv_dim(&st->c) % 8 == 0 && score_bytes(g, 1) <= SCORE_BYTES_MAX;
}

/* ---------------- the workspace ---------------- */

struct Work {
    float *s, *dqp, *dkp, *dvp, *delta;
    bf16 *p, *qp, *kp, *vp, *op;
};

static int workspace(CuState *st, const Geometry &g, int backward, Work *w, Error *err)
{
    size_t nb = (size_t)g.ns * g.n_heads, mat = nb * g.L * g.hd, sc = nb * g.L * g.L;
    if (g.flash) sc = 0;
    size_t need = sc * sizeof(float) + sc * sizeof(bf16) + 4 * mat * sizeof(bf16) +
                  (backward ? 3 * mat * sizeof(float) + nb * g.L * sizeof(float) : 0) + 16 * 256;
    if (need > st->attn_ws_bytes) {
        if (st->attn_ws) CU_TRY(cudaFreeAsync(st->attn_ws, st->stream));
        st->attn_ws = NULL;
        st->attn_ws_bytes = 0;
        CU_TRY(cudaMallocAsync(&st->attn_ws, need, st->stream));
        st->attn_ws_bytes = need;
    }
    if (st->poison) CU_TRY(cudaMemsetAsync(st->attn_ws, 0xFF, need, st->stream));
    char *p = (char *)st->attn_ws;
#define TAKE(ptr, type, count)                                                             \
    do {                                                                                   \
        ptr = (type *)p;                                                                   \
        p += ((count) * sizeof(type) + 255) / 256 * 256;                                   \
    } while (0)
    TAKE(w->s, float, sc);
    TAKE(w->p, bf16, sc);
    TAKE(w->qp, bf16, mat);
    TAKE(w->kp, bf16, mat);
    TAKE(w->vp, bf16, mat);
    TAKE(w->op, bf16, mat);
    w->dqp = w->dkp = w->dvp = w->delta = NULL;
    if (backward) {
        TAKE(w->dqp, float, mat);
        TAKE(w->dkp, float, mat);
        TAKE(w->dvp, float, mat);
        TAKE(w->delta, float, nb * g.L);
    }
#undef TAKE
    return 0;
}

/* ---------------- packing kernels ----------------
 * One block per padded row (chunk sequence sl, position i); a thread moves 8
 * values (16 bytes) of one head, or with rotary embeddings 8 values of each
 * half of a head (the pairs that rotate together).  Padded rows get zeros,
 * so no buffer needs clearing first. */

/* The sequence (index into qstart[0..n]) that holds packed row r. */
__device__ __forceinline__ int seq_of_row(const int32_t *qstart, int n, int r)
{
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = (lo + hi + 1) >> 1;
        if (qstart[mid] <= r) lo = mid; else hi = mid - 1;
    }
    return lo;
}

struct Rope {
    const float *cos, *sin; /* [position][hd / 2]; NULL: no rotation */
    const int32_t *pos;     /* [packed row] */
};

__device__ __forceinline__ void load8(const bf16 *p, float *v)
{
    uint4 raw = *(const uint4 *)p;
    const __nv_bfloat162 *h = (const __nv_bfloat162 *)&raw;
    for (int k = 0; k < 4; k++) {
        float2 f = __bfloat1622float2(h[k]);
        v[2 * k] = f.x;
        v[2 * k + 1] = f.y;
    }
}

__device__ __forceinline__ void load8(const float *p, float *v)
{
    float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
    v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
    v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
}

__device__ __forceinline__ void store8(bf16 *p, const float *v)
{
    uint4 raw;
    __nv_bfloat162 *h = (__nv_bfloat162 *)&raw;
    for (int k = 0; k < 4; k++) h[k] = __floats2bfloat162_rn(v[2 * k], v[2 * k + 1]);
    *(uint4 *)p = raw;
}

/* (x1, x2) <- (x1 c - x2 s, x2 c + x1 s); sign -1 rotates back. */
__device__ __forceinline__ void rotate8(float *x1, float *x2, const float *c, const float *sn,
                                        float sign)
{
    for (int k = 0; k < 8; k++) {
        float a = x1[k], b = x2[k], cs = c[k], si = sign * sn[k];
        x1[k] = a * cs - b * si;
        x2[k] = b * cs + a * si;
    }
}

/* dst[(sl * H + h)][i][:] = src[r][(h / rep) * hd + :] (rotated when
 * rope.cos), r = qstart[s0 + sl] + i; zeros past the sequence. */
__global__ void pack_heads_kernel(const bf16 *__restrict__ src, int src_stride,
                                  const int32_t *__restrict__ qstart, Geometry g, Rope rope,
                                  bf16 *__restrict__ dst)
{
    const int sl = blockIdx.x / g.L, i = blockIdx.x - sl * g.L, s = g.s0 + sl;
    const int len = qstart[s + 1] - qstart[s], half = g.hd / 2;
    const size_t r = (size_t)qstart[s] + i;
    const int per_head = rope.cos ? half / 8 : g.hd / 8;
    for (int idx = threadIdx.x; idx < g.n_heads * per_head; idx += blockDim.x) {
        int h = idx / per_head, e = (idx - h * per_head) * 8;
        bf16 *out = dst + (((size_t)sl * g.n_heads + h) * g.L + i) * g.hd + e;
        float x1[8] = {0}, x2[8] = {0};
        if (i < len) {
            const bf16 *in = src + r * src_stride + (h / g.rep) * g.hd + e;
            load8(in, x1);
            if (rope.cos) {
                load8(in + half, x2);
                const size_t t = (size_t)rope.pos[r] * half + e;
                rotate8(x1, x2, rope.cos + t, rope.sin + t, 1.0f);
            }
        }
        store8(out, x1);
        if (rope.cos) store8(out + half, x2);
    }
}

/* dO packed (fp32) -> padded bf16, and delta = rowsum(dO * O) per head in
 * fp32 from the unrounded dO; zeros past the sequence.  A warp per head. */
__global__ void pack_dout_kernel(const float *__restrict__ dout, const bf16 *__restrict__ out,
                                 int stride, const int32_t *__restrict__ qstart, Geometry g,
                                 bf16 *__restrict__ dop, float *__restrict__ delta)
{
    const int sl = blockIdx.x / g.L, i = blockIdx.x - sl * g.L, s = g.s0 + sl;
    const int len = qstart[s + 1] - qstart[s];
    const size_t r = (size_t)qstart[s] + i;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, n_warps = blockDim.x >> 5;
    for (int h = warp; h < g.n_heads; h += n_warps) {
        const size_t b = (size_t)sl * g.n_heads + h;
        bf16 *dst = dop + (b * g.L + i) * g.hd;
        float acc = 0.0f;
        for (int e = lane; e < g.hd; e += 32) {
            float d = 0.0f;
            if (i < len) {
                d = dout[r * stride + h * g.hd + e];
                acc += d * __bfloat162float(out[r * stride + h * g.hd + e]);
            }
            dst[e] = __float2bfloat16(d);
        }
        acc = warp_sum(acc);
        if (lane == 0) delta[b * g.L + i] = acc;
    }
}

/* dst[r][gh * hd + :] = sum over the rep heads h of group gh of
 * src[(sl * H + h)][i][:], rotated back when rope.cos (the backward of the
 * rotation); dst has H / rep heads.  One block per packed row of the chunk. */
template <class S>
__global__ void unpack_heads_kernel(const S *__restrict__ src, const int32_t *__restrict__ qstart,
                                    Geometry g, Rope rope, bf16 *__restrict__ dst, int dst_stride)
{
    const int first = qstart[g.s0], r = first + blockIdx.x;
    if (r >= qstart[g.s0 + g.ns]) return;
    const int s = seq_of_row(qstart + g.s0, g.ns, r) + g.s0, i = r - qstart[s], sl = s - g.s0;
    const int half = g.hd / 2, n_groups = g.n_heads / g.rep;
    const int per_head = rope.cos ? half / 8 : g.hd / 8;
    for (int idx = threadIdx.x; idx < n_groups * per_head; idx += blockDim.x) {
        int gh = idx / per_head, e = (idx - gh * per_head) * 8;
        float x1[8] = {0}, x2[8] = {0};
        for (int j = 0; j < g.rep; j++) {
            const S *in = src + (((size_t)sl * g.n_heads + gh * g.rep + j) * g.L + i) * g.hd + e;
            float v[8];
            load8(in, v);
            for (int k = 0; k < 8; k++) x1[k] += v[k];
            if (rope.cos) {
                load8(in + half, v);
                for (int k = 0; k < 8; k++) x2[k] += v[k];
            }
        }
        bf16 *out = dst + (size_t)r * dst_stride + gh * g.hd + e;
        if (rope.cos) {
            const size_t t = (size_t)rope.pos[r] * half + e;
            rotate8(x1, x2, rope.cos + t, rope.sin + t, -1.0f);
            store8(out + half, x2);
        }
        store8(out, x1);
    }
}

/* ---------------- softmax kernels (one warp per score row) ---------------- */

struct RowInfo {
    int valid; /* the row is a real query */
    int limit; /* last key it sees */
    size_t packed; /* its packed row */
};

__device__ __forceinline__ RowInfo row_info(const int32_t *qstart, const int32_t *nk, Geometry g,
                                            int b, int i)
{
    const int s = g.s0 + b / g.n_heads;
    const int nq = qstart[s + 1] - qstart[s];
    RowInfo ri;
    ri.valid = i < nq;
    ri.limit = ri.valid ? min(i + nk[s] - nq, g.L - 1) : -1;
    ri.packed = (size_t)qstart[s] + i;
    return ri;
}

/* P = softmax of the causal part of S's row (zeros elsewhere); lse stored
 * per packed row and head. */
__global__ void softmax_fwd_kernel(const float *__restrict__ S, const int32_t *__restrict__ qstart,
                                   const int32_t *__restrict__ nk, Geometry g, bf16 *__restrict__ P,
                                   float *__restrict__ lse)
{
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    const size_t n_rows = (size_t)g.ns * g.n_heads * g.L;
    if (row >= n_rows) return;
    const int b = (int)(row / g.L), i = (int)(row % g.L);
    const RowInfo ri = row_info(qstart, nk, g, b, i);
    const float *sr = S + row * g.L;
    bf16 *pr = P + row * g.L;
    float m = -INFINITY;
    for (int j = lane; j <= ri.limit; j += 32) m = fmaxf(m, sr[j]);
    m = warp_max(m);
    float l = 0.0f;
    for (int j = lane; j <= ri.limit; j += 32) l += expf(sr[j] - m);
    l = warp_sum(l);
    const float inv = ri.valid ? 1.0f / l : 0.0f;
    for (int j = lane; j < g.L; j += 32)
        pr[j] = __float2bfloat16(j <= ri.limit ? expf(sr[j] - m) * inv : 0.0f);
    if (ri.valid && lane == 0) lse[ri.packed * g.n_heads + b % g.n_heads] = m + logf(l);
}

/* P = exp(S - lse) on the causal part, zeros elsewhere (bf16). */
__global__ void probs_from_lse_kernel(const float *__restrict__ S,
                                      const int32_t *__restrict__ qstart,
                                      const int32_t *__restrict__ nk, Geometry g,
                                      const float *__restrict__ lse, bf16 *__restrict__ P)
{
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)g.ns * g.n_heads * g.L) return;
    const int b = (int)(row / g.L), i = (int)(row % g.L);
    const RowInfo ri = row_info(qstart, nk, g, b, i);
    const float l = ri.valid ? lse[ri.packed * g.n_heads + b % g.n_heads] : 0.0f;
    const float *sr = S + row * g.L;
    bf16 *pr = P + row * g.L;
    for (int j = lane; j < g.L; j += 32)
        pr[j] = __float2bfloat16(j <= ri.limit ? expf(sr[j] - l) : 0.0f);
}

/* dS = P (dP - delta), written over P (bf16). */
__global__ void dscores_kernel(const float *__restrict__ dP, const float *__restrict__ delta,
                               const int32_t *__restrict__ qstart, const int32_t *__restrict__ nk,
                               Geometry g, bf16 *__restrict__ P)
{
    const size_t row = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (row >= (size_t)g.ns * g.n_heads * g.L) return;
    const int b = (int)(row / g.L), i = (int)(row % g.L);
    const RowInfo ri = row_info(qstart, nk, g, b, i);
    const float dl = delta[row];
    const float *dr = dP + row * g.L;
    bf16 *pr = P + row * g.L;
    for (int j = lane; j < g.L; j += 32) {
        float v = j <= ri.limit ? __bfloat162float(pr[j]) * (dr[j] - dl) : 0.0f;
        pr[j] = __float2bfloat16(v);
    }
}

/* ---------------- launches ---------------- */

static int warp_rows_grid(const Geometry &g)
{
    size_t rows = (size_t)g.ns * g.n_heads * g.L;
    return (int)((rows * 32 + 255) / 256);
}

/* Batched row-major C_b = alpha op(A_b) op(B_b) + beta C_b over the chunk's
 * (sequence, head) problems; every operand [L or hd] x [L or hd]. */
static int bgemm(CuState *st, const Geometry &g, int ta, int tb, int m, int n, int k, float alpha,
                 const bf16 *A, int lda, const bf16 *B, int ldb, void *C, int c_f32, int ldc,
                 Error *err)
{
    return cu_gemm_strided(st, ta, tb, m, n, k, alpha, A, lda, (long long)m * k, B, ldb,
                           (long long)k * n, 0.0f, C, c_f32, ldc, (long long)m * n,
                           g.ns * g.n_heads, err);
}

static Rope rope_of(const CuState *st, const CuRows *rows)
{
    Rope r = {st->rope_cos, st->rope_sin, rows->pos};
    return r;
}

static const Rope no_rope = {NULL, NULL, NULL};

/* q and k rotated on the way (the kept q, k are not), v as it is. */
static int pack_qkv(CuState *st, const CuRows *rows, const CuAttn *a, const Geometry &g,
                    const Work &w, int rotate, Error *err)
{
    Geometry gq = g;
    gq.rep = 1;
    int blocks = g.ns * g.L;
    Rope rope = rotate ? rope_of(st, rows) : no_rope;
    pack_heads_kernel<<<blocks, 128, 0, st->stream>>>(a->q, st->c.hidden_size, rows->qstart, gq,
                                                      rope, w.qp);
    pack_heads_kernel<<<blocks, 128, 0, st->stream>>>(a->k, a->kv_stride, rows->qstart, g, rope,
                                                      w.kp);
    pack_heads_kernel<<<blocks, 128, 0, st->stream>>>(a->v, a->kv_stride, rows->qstart, g, no_rope,
                                                      w.vp);
    CU_LAUNCHED();
    return 0;
}

/* Packed rows of the chunk (an upper bound the kernels trim). */
static int chunk_rows(const CuRows *rows, const Geometry &g)
{
    return g.ns == rows->n_seq ? rows->n_rows : g.ns * g.L;
}

static float scale_of(const Geometry &g) { return 1.0f / sqrtf((float)g.hd); }

static CuFlashArgs flash_args(const CuRows *rows, const CuAttn *a, const Geometry &g, const Work &w)
{
    CuFlashArgs f = {};
    f.q = w.qp;
    f.k = w.kp;
    f.v = w.vp;
    f.o = w.op;
    f.lse = a->lse;
    f.dout = w.op; /* the backward packs dO there */
    f.delta = w.delta;
    f.dq = w.dqp;
    f.dk = w.dkp;
    f.dv = w.dvp;
    f.qstart = rows->qstart;
    f.s0 = g.s0;
    f.n_problems = g.ns * g.n_heads;
    f.n_heads = g.n_heads;
    f.L = g.L;
    f.hd = g.hd;
    f.scale = scale_of(g);
    return f;
}

/* O (packed) from the packed q, k, v through score matrices. */
static int scores_forward(CuState *st, const CuRows *rows, const CuAttn *a, const Geometry &g,
                          const Work &w, Error *err)
{
    int L = g.L, hd = g.hd;
    CU_PHASE(st, CU_PH_ATTN_FWD);
    TRY(bgemm(st, g, 0, 1, L, L, hd, scale_of(g), w.qp, hd, w.kp, hd, w.s, 1, L, err));
    CU_PHASE(st, CU_PH_ATTN_AUX);
    softmax_fwd_kernel<<<warp_rows_grid(g), 256, 0, st->stream>>>(w.s, rows->qstart, rows->nk, g,
                                                                 w.p, a->lse);
    CU_LAUNCHED();
    CU_PHASE(st, CU_PH_ATTN_FWD);
    return bgemm(st, g, 0, 0, L, hd, L, 1.0f, w.p, L, w.vp, hd, w.op, 0, hd, err);
}

/* dq, dk, dv (packed, fp32) from the packed q, k, v, dO and delta, through
 * score matrices. */
static int scores_backward(CuState *st, const CuRows *rows, const CuAttn *a, const Geometry &g,
                           const Work &w, Error *err)
{
    int L = g.L, hd = g.hd;
    const float scale = scale_of(g);
    CU_PHASE(st, CU_PH_ATTN_BWD);
    TRY(bgemm(st, g, 0, 1, L, L, hd, scale, w.qp, hd, w.kp, hd, w.s, 1, L, err));
    CU_PHASE(st, CU_PH_ATTN_AUX);
    probs_from_lse_kernel<<<warp_rows_grid(g), 256, 0, st->stream>>>(w.s, rows->qstart, rows->nk,
                                                                    g, a->lse, w.p);
    CU_LAUNCHED();
    CU_PHASE(st, CU_PH_ATTN_BWD);
    TRY(bgemm(st, g, 1, 0, L, hd, L, 1.0f, w.p, L, w.op, hd, w.dvp, 1, hd, err));
    TRY(bgemm(st, g, 0, 1, L, L, hd, 1.0f, w.op, hd, w.vp, hd, w.s, 1, L, err));
    CU_PHASE(st, CU_PH_ATTN_AUX);
    dscores_kernel<<<warp_rows_grid(g), 256, 0, st->stream>>>(w.s, w.delta, rows->qstart, rows->nk,
                                                             g, w.p);
    CU_LAUNCHED();
    CU_PHASE(st, CU_PH_ATTN_BWD);
    TRY(bgemm(st, g, 0, 0, L, hd, L, scale, w.p, L, w.kp, hd, w.dqp, 1, hd, err));
    return bgemm(st, g, 1, 0, L, hd, L, scale, w.p, L, w.qp, hd, w.dkp, 1, hd, err);
}

static int forward_chunk(CuState *st, const CuRows *rows, const CuAttn *a, const Geometry &g,
                         int rotate, Error *err)
{
    Work w;
    TRY(workspace(st, g, 0, &w, err));
    CU_PHASE(st, CU_PH_ATTN_AUX);
    TRY(pack_qkv(st, rows, a, g, w, rotate, err));
    if (g.flash) {
        CU_PHASE(st, CU_PH_ATTN_FWD);
        CuFlashArgs f = flash_args(rows, a, g, w);
        TRY(cu_flash_mma_forward(st, &f, err));
    } else {
        TRY(scores_forward(st, rows, a, g, w, err));
    }
    CU_PHASE(st, CU_PH_ATTN_AUX);
    Geometry go = g;
    go.rep = 1;
    unpack_heads_kernel<bf16><<<chunk_rows(rows, g), 128, 0, st->stream>>>(
        w.op, rows->qstart, go, no_rope, a->out, st->c.hidden_size);
    CU_LAUNCHED();
    return 0;
}

static int backward_chunk(CuState *st, const CuRows *rows, const CuAttn *a, const float *dout,
                          bf16 *dq, bf16 *dk, bf16 *dv, const Geometry &g, Error *err)
{
    Work w;
    TRY(workspace(st, g, 1, &w, err));
    CU_PHASE(st, CU_PH_ATTN_AUX);
    TRY(pack_qkv(st, rows, a, g, w, 1, err));
    int d = st->c.hidden_size;
    pack_dout_kernel<<<g.ns * g.L, 256, 0, st->stream>>>(dout, a->out, d, rows->qstart, g, w.op,
                                                        w.delta); /* op holds dO here */
    CU_LAUNCHED();
    if (g.flash) {
        CU_PHASE(st, CU_PH_ATTN_BWD);
        CuFlashArgs f = flash_args(rows, a, g, w);
        TRY(cu_flash_mma_backward(st, &f, err));
    } else {
        TRY(scores_backward(st, rows, a, g, w, err));
    }
    CU_PHASE(st, CU_PH_ATTN_AUX);
    Geometry gq = g;
    gq.rep = 1;
    int n = chunk_rows(rows, g);
    Rope rope = rope_of(st, rows);
    unpack_heads_kernel<float><<<n, 128, 0, st->stream>>>(w.dqp, rows->qstart, gq, rope, dq, d);
    unpack_heads_kernel<float><<<n, 128, 0, st->stream>>>(w.dkp, rows->qstart, g, rope, dk,
                                                          a->kv_stride);
    unpack_heads_kernel<float><<<n, 128, 0, st->stream>>>(w.dvp, rows->qstart, g, no_rope, dv,
                                                          a->kv_stride);
    CU_LAUNCHED();
    return 0;
}

/* Sequences per chunk so that the scores stay within the workspace bound. */
static int chunk_size(const CuState *st, const Geometry &g)
{
    if (g.flash) return g.ns;
    size_t one = score_bytes(g, 1);
    int k = (int)(chunk_bytes_max(st) / one);
    return k < 1 ? 1 : k > g.ns ? g.ns : k;
}

int cu_attention_gemm_forward(CuState *st, const CuRows *rows, const CuAttn *a, int rotate,
                              Error *err)
{
    Geometry g = geometry_of(st, rows);
    int per = chunk_size(st, g), n_seq = rows->n_seq;
    for (int s0 = 0; s0 < n_seq; s0 += per) {
        g.s0 = s0;
        g.ns = n_seq - s0 < per ? n_seq - s0 : per;
        TRY(forward_chunk(st, rows, a, g, rotate, err));
    }
    return 0;
}

int cu_attention_gemm_backward(CuState *st, const CuRows *rows, const CuAttn *a, const float *dout,
                               bf16 *dq, bf16 *dk, bf16 *dv, Error *err)
{
    Geometry g = geometry_of(st, rows);
    int per = chunk_size(st, g), n_seq = rows->n_seq;
    for (int s0 = 0; s0 < n_seq; s0 += per) {
        g.s0 = s0;
        g.ns = n_seq - s0 < per ? n_seq - s0 : per;
        TRY(backward_chunk(st, rows, a, dout, dq, dk, dv, g, err));
    }
    return 0;
}

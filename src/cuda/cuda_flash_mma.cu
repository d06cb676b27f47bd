/* Causal attention on tensor cores without score matrices (FlashAttention-2
 * style), for the padded head-major layout of cuda_attention_gemm.cu:
 * q, k, v, o are [b][L][hd] bf16 with b = sequence * heads + head, L a
 * multiple of 64, rows past a sequence zero.  Key j is seen by query i when
 * j <= i, so padding needs no mask of its own: a real query never reaches a
 * padded key, and a padded query's output and gradients are never read.
 *
 * Warp-level mma.sync m16n8k16 (bf16 in, fp32 accumulate) with operands
 * from shared memory through ldmatrix; a block of 4 warps owns 64 rows, a
 * warp 16.  Tiles of 64 rows are staged in shared memory with 8 values of
 * padding per row, which keeps ldmatrix free of bank conflicts.
 *
 * Forward (a block per 64 queries): S = Q K^T over the key tiles up to the
 * diagonal, an online softmax in registers (base 2, the scale folded in),
 * P (bf16) V accumulated in fp32; out = O / l, lse = m + log l.
 * Backward, deterministic (no atomics), in two kernels that recompute
 * P = exp(S - lse):
 *   dk, dv (a block per 64 keys, over the query tiles from the diagonal):
 *     dV += P^T dO,  dS = P (dO V^T - delta),  dK += scale dS^T Q;
 *   dq (a block per 64 queries, over the key tiles up to the diagonal):
 *     dQ += scale dS K.
 * delta = rowsum(dO * O) comes from the caller (pack_dout_kernel). */
#include "cuda/cuda_kernels.cuh"

#include <math.h>
#include <stdint.h>

#define TILE 64
#define WARPS 4
#define PAD 8
#define LOG2E 1.4426950408889634f
#define LN2 0.6931471805599453f

/* ---------------- warp-level building blocks ---------------- */

/* d += a b for one 16x8x16 product: a 16x16 (row), b 16x8 (col), fp32 d. */
__device__ __forceinline__ void mma16816(float *d, const uint32_t *a, const uint32_t *b)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Four 8x8 bf16 matrices; lane l gives the address of row l % 8 of matrix l / 8. */
__device__ __forceinline__ void ldsm4(uint32_t *r, const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm4_t(uint32_t *r, const bf16 *p)
{
    uint32_t a = (uint32_t)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ uint32_t pack2(float lo, float hi)
{
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *(uint32_t *)&v;
}

/* The A fragment (16x16) at rows r0.., cols c0.. of a row-major tile. */
template <int LD>
__device__ __forceinline__ void load_a(uint32_t *a, const bf16 *tile, int r0, int c0)
{
    const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
    ldsm4(a, tile + (r0 + (m & 1) * 8 + r) * LD + c0 + (m >> 1) * 8);
}

/* B fragments of two n-tiles (n0, n0 + 8), k-step k0, from a tile stored
 * [n][k] (B = tile^T: keys as columns of Q K^T).  b[0..1]: n0, b[2..3]: n0 + 8. */
template <int LD>
__device__ __forceinline__ void load_b_nk(uint32_t *b, const bf16 *tile, int n0, int k0)
{
    const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
    ldsm4(b, tile + (n0 + (m >> 1) * 8 + r) * LD + k0 + (m & 1) * 8);
}

/* The same from a tile stored [k][n] (P V: keys are k, head dims n). */
template <int LD>
__device__ __forceinline__ void load_b_kn(uint32_t *b, const bf16 *tile, int n0, int k0)
{
    const int lane = threadIdx.x & 31, m = lane >> 3, r = lane & 7;
    ldsm4_t(b, tile + (k0 + (m & 1) * 8 + r) * LD + n0 + (m >> 1) * 8);
}

/* TILE rows of a [L][HD] matrix from row t0 into a padded shared tile,
 * asynchronously (cp.async, 16 bytes a thread at a time): the copy of the
 * next tile runs while the warps compute on the current one.  Complete
 * after cp_async_wait + __syncthreads. */
template <int HD>
__device__ __forceinline__ void stage(bf16 *dst, const bf16 *src, int t0)
{
    constexpr int LD = HD + PAD, CH = HD / 8;
    const bf16 *s = src + (size_t)t0 * HD;
    for (int idx = threadIdx.x; idx < TILE * CH; idx += WARPS * 32) {
        int r = idx / CH, c = (idx - r * CH) * 8;
        uint32_t d = (uint32_t)__cvta_generic_to_shared(dst + r * LD + c);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(d), "l"(s + (size_t)r * HD + c));
    }
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n"); }

/* Waits until at most `pending` committed groups are still in flight. */
template <int pending> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(pending));
}

/* acc[16 x 64] (8 n-tiles) += A[16 rows at a0 of ta] B, B^T stored [n][k]
 * in tb: the product of two row-major [.. x HD] tiles over HD. */
template <int HD>
__device__ __forceinline__ void gemm_rows_hd(float (*acc)[4], const bf16 *ta, int a0, const bf16 *tb)
{
    constexpr int LD = HD + PAD;
    for (int kk = 0; kk < HD / 16; kk++) {
        uint32_t a[4];
        load_a<LD>(a, ta, a0, kk * 16);
        for (int nj = 0; nj < TILE / 8; nj += 2) {
            uint32_t b[4];
            load_b_nk<LD>(b, tb, nj * 8, kk * 16);
            mma16816(acc[nj], a, b);
            mma16816(acc[nj + 1], a, b + 2);
        }
    }
}

/* out[16 x HD] (HD/8 n-tiles) += P[16 x 64] T, P in registers as the
 * accumulator layout of gemm_rows_hd, T a row-major [64][HD] tile. */
template <int HD>
__device__ __forceinline__ void gemm_p_tile(float (*out)[4], float (*p)[4], const bf16 *t)
{
    constexpr int LD = HD + PAD;
    for (int kk = 0; kk < TILE / 16; kk++) {
        uint32_t a[4] = {pack2(p[2 * kk][0], p[2 * kk][1]), pack2(p[2 * kk][2], p[2 * kk][3]),
                         pack2(p[2 * kk + 1][0], p[2 * kk + 1][1]),
                         pack2(p[2 * kk + 1][2], p[2 * kk + 1][3])};
        for (int nd = 0; nd < HD / 8; nd += 2) {
            uint32_t b[4];
            load_b_kn<LD>(b, t, nd * 8, kk * 16);
            mma16816(out[nd], a, b);
            mma16816(out[nd + 1], a, b + 2);
        }
    }
}

__device__ __forceinline__ float quad_max(float v)
{
    v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v)
{
    v += __shfl_xor_sync(0xffffffffu, v, 1);
    return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

/* Where a block's problem lives. */
struct Problem {
    size_t base; /* first element of (b) in the [b][L][hd] buffers */
    int len;     /* real rows of the sequence */
    size_t row0; /* its first packed row */
    int h;
};

__device__ __forceinline__ Problem problem_of(const CuFlashArgs &a, int hd)
{
    Problem p;
    const int b = blockIdx.y, sl = b / a.n_heads, s = a.s0 + sl;
    p.h = b - sl * a.n_heads;
    p.base = (size_t)b * a.L * hd;
    p.len = a.qstart[s + 1] - a.qstart[s];
    p.row0 = (size_t)a.qstart[s];
    return p;
}

/* The K, V tiles of key tile kb (buffer kb & 1 of sKV, [2][K, V][TILE][LD]),
 * ready: starts copying tile kb + 1 (up to `last`) into the other buffer,
 * then waits for tile kb's copy. */
template <int HD>
__device__ __forceinline__ bf16 *kv_tiles(bf16 *sKV, const CuFlashArgs &a, const Problem &pb, int kb,
                                          int last)
{
    constexpr int LD = HD + PAD;
    if (kb < last) {
        bf16 *next = sKV + ((kb + 1) & 1) * 2 * TILE * LD;
        stage<HD>(next, a.k + pb.base, (kb + 1) * TILE);
        stage<HD>(next + TILE * LD, a.v + pb.base, (kb + 1) * TILE);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
    return sKV + (kb & 1) * 2 * TILE * LD;
}

/* Longest blocks (last tiles of a causal square) first. */
__device__ __forceinline__ int tile_index() { return gridDim.x - 1 - blockIdx.x; }

/* ---------------- forward ---------------- */

template <int HD>
__global__ void __launch_bounds__(WARPS * 32) flash_fwd_kernel(CuFlashArgs a)
{
    constexpr int LD = HD + PAD;
    extern __shared__ __align__(16) unsigned char smem[];
    bf16 *sQ = (bf16 *)smem, *sKV = sQ + TILE * LD; /* K, V of two tiles: [2][2][TILE][LD] */
    const int qb = tile_index();
    const Problem pb = problem_of(a, HD);
    if (qb * TILE >= pb.len) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float sl2 = a.scale * LOG2E;
    stage<HD>(sQ, a.q + pb.base, qb * TILE);
    stage<HD>(sKV, a.k + pb.base, 0);
    stage<HD>(sKV + TILE * LD, a.v + pb.base, 0);
    cp_async_commit();
    float o[HD / 8][4] = {};
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    const int row = qb * TILE + warp * 16 + g; /* and row + 8 */
    for (int kb = 0; kb <= qb; kb++) {
        bf16 *sK = kv_tiles<HD>(sKV, a, pb, kb, qb), *sV = sK + TILE * LD;
        float s[TILE / 8][4] = {};
        gemm_rows_hd<HD>(s, sQ, warp * 16, sK);
        float mx[2] = {-INFINITY, -INFINITY};
        for (int nj = 0; nj < TILE / 8; nj++)
            for (int e = 0; e < 4; e++) {
                int key = kb * TILE + nj * 8 + 2 * t + (e & 1), r = e >> 1;
                float v = key <= row + 8 * r ? s[nj][e] * sl2 : -INFINITY;
                s[nj][e] = v;
                mx[r] = fmaxf(mx[r], v);
            }
        for (int r = 0; r < 2; r++) {
            float mnew = fmaxf(m[r], quad_max(mx[r]));
            float corr = exp2f(m[r] - mnew);
            m[r] = mnew;
            l[r] *= corr;
            for (int nd = 0; nd < HD / 8; nd++) {
                o[nd][2 * r] *= corr;
                o[nd][2 * r + 1] *= corr;
            }
        }
        for (int nj = 0; nj < TILE / 8; nj++)
            for (int e = 0; e < 4; e++) {
                float p = exp2f(s[nj][e] - m[e >> 1]);
                s[nj][e] = p;
                l[e >> 1] += p;
            }
        gemm_p_tile<HD>(o, s, sV);
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
    for (int r = 0; r < 2; r++) {
        float sum = quad_sum(l[r]), inv = 1.0f / sum;
        int i = row + 8 * r;
        bf16 *out = a.o + pb.base + (size_t)i * HD;
        for (int nd = 0; nd < HD / 8; nd++)
            *(uint32_t *)(out + nd * 8 + 2 * t) = pack2(o[nd][2 * r] * inv, o[nd][2 * r + 1] * inv);
        if (t == 0 && i < pb.len) a.lse[(pb.row0 + i) * a.n_heads + pb.h] = (m[r] + log2f(sum)) * LN2;
    }
}

/* ---------------- backward ---------------- */

/* Per query of a tile: lse in base 2 (+inf past the sequence: P = 0 there,
 * whatever lse the packed row after it holds) and delta. */
__device__ __forceinline__ void stage_row_stats(float *s_lse, float *s_delta, const CuFlashArgs &a,
                                                const Problem &pb, int t0)
{
    for (int j = threadIdx.x; j < TILE; j += WARPS * 32) {
        int i = t0 + j;
        s_lse[j] = i < pb.len ? a.lse[(pb.row0 + i) * a.n_heads + pb.h] * LOG2E : INFINITY;
        s_delta[j] = a.delta[(size_t)blockIdx.y * a.L + i];
    }
}

template <int HD>
__global__ void __launch_bounds__(WARPS * 32) flash_bwd_dkdv_kernel(CuFlashArgs a)
{
    constexpr int LD = HD + PAD;
    extern __shared__ __align__(16) unsigned char smem[];
    /* K, V; then two buffers of (Q, dO) tiles and their rows' lse, delta */
    bf16 *sK = (bf16 *)smem, *sV = sK + TILE * LD, *sQO = sV + TILE * LD;
    float *s_stats = (float *)(sQO + 4 * TILE * LD); /* [2][lse, delta][TILE] */
    const int kb = tile_index();
    const Problem pb = problem_of(a, HD);
    if (kb * TILE >= pb.len) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float sl2 = a.scale * LOG2E;
    const int n_tiles = (pb.len + TILE - 1) / TILE;
    stage<HD>(sK, a.k + pb.base, kb * TILE);
    stage<HD>(sV, a.v + pb.base, kb * TILE);
    stage<HD>(sQO, a.q + pb.base, kb * TILE);
    stage<HD>(sQO + TILE * LD, a.dout + pb.base, kb * TILE);
    stage_row_stats(s_stats, s_stats + TILE, a, pb, kb * TILE);
    cp_async_commit();
    float dk[HD / 8][4] = {}, dv[HD / 8][4] = {};
    const int key = kb * TILE + warp * 16 + g; /* and key + 8 */
    for (int qt = kb; qt < n_tiles; qt++) {
        const int buf = (qt - kb) & 1;
        bf16 *sQ = sQO + buf * 2 * TILE * LD, *sO = sQ + TILE * LD;
        float *s_lse = s_stats + buf * 2 * TILE, *s_delta = s_lse + TILE;
        if (qt + 1 < n_tiles) {
            bf16 *nQ = sQO + (buf ^ 1) * 2 * TILE * LD;
            float *n_lse = s_stats + (buf ^ 1) * 2 * TILE;
            stage<HD>(nQ, a.q + pb.base, (qt + 1) * TILE);
            stage<HD>(nQ + TILE * LD, a.dout + pb.base, (qt + 1) * TILE);
            stage_row_stats(n_lse, n_lse + TILE, a, pb, (qt + 1) * TILE);
        }
        cp_async_commit();
        cp_async_wait<1>();
        __syncthreads();
        float p[TILE / 8][4] = {}, dp[TILE / 8][4] = {};
        gemm_rows_hd<HD>(p, sK, warp * 16, sQ);  /* S^T = K Q^T */
        gemm_rows_hd<HD>(dp, sV, warp * 16, sO); /* dP^T = V dO^T */
        for (int nj = 0; nj < TILE / 8; nj++)
            for (int e = 0; e < 4; e++) {
                int j = nj * 8 + 2 * t + (e & 1), q = qt * TILE + j;
                float pr = q >= key + 8 * (e >> 1) ? exp2f(p[nj][e] * sl2 - s_lse[j]) : 0.0f;
                p[nj][e] = pr;
                dp[nj][e] = pr * (dp[nj][e] - s_delta[j]); /* dS^T */
            }
        gemm_p_tile<HD>(dv, p, sO);  /* dV += P^T dO */
        gemm_p_tile<HD>(dk, dp, sQ); /* dK += dS^T Q (scaled below) */
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
    for (int r = 0; r < 2; r++) {
        size_t off = pb.base + (size_t)(key + 8 * r) * HD;
        for (int nd = 0; nd < HD / 8; nd++) {
            int c = nd * 8 + 2 * t;
            *(float2 *)(a.dk + off + c) = make_float2(a.scale * dk[nd][2 * r], a.scale * dk[nd][2 * r + 1]);
            *(float2 *)(a.dv + off + c) = make_float2(dv[nd][2 * r], dv[nd][2 * r + 1]);
        }
    }
}

template <int HD>
__global__ void __launch_bounds__(WARPS * 32) flash_bwd_dq_kernel(CuFlashArgs a)
{
    constexpr int LD = HD + PAD;
    extern __shared__ __align__(16) unsigned char smem[];
    /* Q, dO; their rows' lse, delta; then two buffers of (K, V) tiles */
    bf16 *sQ = (bf16 *)smem, *sO = sQ + TILE * LD, *sKV = sO + TILE * LD;
    float *s_lse = (float *)(sKV + 4 * TILE * LD), *s_delta = s_lse + TILE;
    const int qb = tile_index();
    const Problem pb = problem_of(a, HD);
    if (qb * TILE >= pb.len) return;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float sl2 = a.scale * LOG2E;
    stage<HD>(sQ, a.q + pb.base, qb * TILE);
    stage<HD>(sO, a.dout + pb.base, qb * TILE);
    stage_row_stats(s_lse, s_delta, a, pb, qb * TILE);
    stage<HD>(sKV, a.k + pb.base, 0);
    stage<HD>(sKV + TILE * LD, a.v + pb.base, 0);
    cp_async_commit();
    float dq[HD / 8][4] = {};
    const int rl = warp * 16 + g, row = qb * TILE + rl; /* and row + 8 */
    for (int kb = 0; kb <= qb; kb++) {
        bf16 *sK = kv_tiles<HD>(sKV, a, pb, kb, qb), *sV = sK + TILE * LD;
        float p[TILE / 8][4] = {}, dp[TILE / 8][4] = {};
        gemm_rows_hd<HD>(p, sQ, warp * 16, sK);  /* S = Q K^T */
        gemm_rows_hd<HD>(dp, sO, warp * 16, sV); /* dP = dO V^T */
        for (int nj = 0; nj < TILE / 8; nj++)
            for (int e = 0; e < 4; e++) {
                int r = e >> 1, k = kb * TILE + nj * 8 + 2 * t + (e & 1);
                float pr = k <= row + 8 * r ? exp2f(p[nj][e] * sl2 - s_lse[rl + 8 * r]) : 0.0f;
                dp[nj][e] = pr * (dp[nj][e] - s_delta[rl + 8 * r]); /* dS */
            }
        gemm_p_tile<HD>(dq, dp, sK); /* dQ += dS K */
        __syncthreads(); /* this buffer is refilled two tiles on */
    }
    for (int r = 0; r < 2; r++) {
        size_t off = pb.base + (size_t)(row + 8 * r) * HD;
        for (int nd = 0; nd < HD / 8; nd++)
            *(float2 *)(a.dq + off + nd * 8 + 2 * t) =
                make_float2(a.scale * dq[nd][2 * r], a.scale * dq[nd][2 * r + 1]);
    }
}

/* ---------------- launches ---------------- */

int cu_flash_mma_usable(int hd) { return hd == 64 || hd == 128; }

template <class Kernel>
static int launch(CuState *st, Kernel kernel, const CuFlashArgs &a, size_t smem, Error *err)
{
    CU_TRY(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    dim3 grid(a.L / TILE, a.n_problems);
    kernel<<<grid, WARPS * 32, smem, st->stream>>>(a);
    CU_LAUNCHED();
    return 0;
}

/* `tiles` padded bf16 tiles and `stats` tiles' (lse, delta) rows. */
static size_t tiles_bytes(int hd, int tiles, int stats)
{
    return (size_t)tiles * TILE * (hd + PAD) * sizeof(bf16) + (size_t)stats * 2 * TILE * sizeof(float);
}

static int check_args(const CuFlashArgs &a, Error *err)
{
    if (!cu_flash_mma_usable(a.hd) || a.L % TILE)
        return error_set(err, "flash attention: head_dim %d, L %d (needs 64 or 128, L a multiple of %d)",
                         a.hd, a.L, TILE);
    return 0;
}

int cu_flash_mma_forward(CuState *st, const CuFlashArgs *a, Error *err)
{
    TRY(check_args(*a, err));
    if (a->hd == 64) return launch(st, flash_fwd_kernel<64>, *a, tiles_bytes(64, 5, 0), err);
    return launch(st, flash_fwd_kernel<128>, *a, tiles_bytes(128, 5, 0), err);
}

int cu_flash_mma_backward(CuState *st, const CuFlashArgs *a, Error *err)
{
    TRY(check_args(*a, err));
    size_t bytes = tiles_bytes(a->hd, 6, 2); /* the stats of two tiles (dkdv) */
    if (a->hd == 64)
        return launch(st, flash_bwd_dkdv_kernel<64>, *a, bytes, err) ||
                       launch(st, flash_bwd_dq_kernel<64>, *a, bytes, err)
                   ? -1
                   : 0;
    return launch(st, flash_bwd_dkdv_kernel<128>, *a, bytes, err) ||
                   launch(st, flash_bwd_dq_kernel<128>, *a, bytes, err)
               ? -1
               : 0;
}

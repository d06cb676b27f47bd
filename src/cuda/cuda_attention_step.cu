/* Attention of a decode step: one new row per sequence against its slot's
 * cache, with that row's RoPE and cache write folded in.
 *
 * Why a kernel of its own: at batch 1 the step's attention was 32 blocks (one
 * per head) walking ~200 keys in a few dependent cache round trips, plus a
 * RoPE-and-cache kernel before it; both are latency, not bandwidth, and sat
 * between the GEMVs that stream the weights.  Here the keys of a (row, head)
 * are split over several blocks so that a batch-1 step fills the card, the
 * new row's q and k are rotated in shared memory by the block that needs
 * them (rope_cache_kernel's arithmetic, so the cache holds the same bits),
 * and the last block of a (row, head) to finish merges the splits' partial
 * softmaxes: one launch where there were two, and no second merge launch. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#include <math.h>

#define STEP_WARPS 8
#define STEP_UNROLL 4
#define STEP_MIN_KEYS 16 /* keys a split should have once the cache is full */

struct StepParams {
    const bf16 *q, *k_new, *v_new; /* this step's rows, unrotated: [row][H * hd], [row][kvd] */
    bf16 *k_cache, *v_cache;       /* the layer's cache, [slot * max_len + pos][kvd] */
    const float *cs, *sn;          /* RoPE tables [position][hd / 2] */
    const int32_t *pos, *cache_row, *kbase, *nk;
    bf16 *out;  /* [row][H * hd] */
    float *lse; /* [row][H] */
    float *part; /* [row][H][splits][hd + 2]: a split's o, then m, l */
    int *done;   /* [row][H] splits finished; the last one resets it */
    int n_heads, n_kv_heads, hd, splits;
    int batched_merge; /* st->step_merge: merge_splits, else merge_partials */
    int prefetch_kv;   /* st->step_prefetch, where the rows are 16-byte pieces */
    float scale;
};

/* The head's q and its kv head's new key rotated at position t (as
 * rope_cache_kernel does), and the new value copied, into shared memory
 * with every load in flight before the first store.  As two rotations and
 * a copy, each waited for the stores of the one before (a global and a
 * shared pointer may be the same memory, for all the compiler knows): three
 * round trips to L2 where one does. */
__device__ __forceinline__ void stage_row(const StepParams &p, int row, int h, int g, int t,
                                          bf16 *q_s, bf16 *k_s, bf16 *v_s)
{
    const int hd = p.hd, half = hd / 2, kvd = p.n_kv_heads * hd;
    const bf16 *q = p.q + (size_t)row * p.n_heads * hd + h * hd;
    const bf16 *k = p.k_new + (size_t)row * kvd + g * hd, *v = p.v_new + (size_t)row * kvd + g * hd;
    for (int j = threadIdx.x; j < hd; j += blockDim.x) {
        const bool rot = j < half;
        float c = 0.0f, s = 0.0f, qa = 0.0f, qb = 0.0f, ka = 0.0f, kb = 0.0f;
        if (rot) {
            c = p.cs[(size_t)t * half + j];
            s = p.sn[(size_t)t * half + j];
            qa = __bfloat162float(q[j]);
            qb = __bfloat162float(q[j + half]);
            ka = __bfloat162float(k[j]);
            kb = __bfloat162float(k[j + half]);
        }
        const bf16 vj = v[j];
        if (rot) {
            q_s[j] = __float2bfloat16(qa * c - qb * s);
            q_s[j + half] = __float2bfloat16(qb * c + qa * s);
            k_s[j] = __float2bfloat16(ka * c - kb * s);
            k_s[j + half] = __float2bfloat16(kb * c + ka * s);
        }
        v_s[j] = vj;
    }
}

/* The cached keys [j0, j1) of the block into its warps' online softmaxes
 * (m, l, o per warp): global loads only, STEP_UNROLL keys a warp in flight. */
template <int NT>
__device__ __forceinline__ void cached_keys(const StepParams &p, const float *q, int kb, int g,
                                            int j0, int j1, float &m, float &l, float *o)
{
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, hd = p.hd;
    const int kvd = p.n_kv_heads * hd;
    const bf16 *__restrict__ kc = p.k_cache, *__restrict__ vc = p.v_cache;
    for (int jb = j0 + warp; jb < j1; jb += STEP_WARPS * STEP_UNROLL) {
        float part[STEP_UNROLL], vv[STEP_UNROLL][NT];
#pragma unroll
        for (int u = 0; u < STEP_UNROLL; u++) {
            const int j = jb + u * STEP_WARPS; /* the same for the whole warp */
            /* Past the block's keys or head_dim the load is of a row or dim
             * that exists, and its value is dropped: predicated loads (the
             * select around the load) were issued one pair at a time, each
             * waiting for the one before, where these all go together. */
            const size_t r = (size_t)(kb + min(j, j1 - 1)) * kvd + g * hd;
            part[u] = 0.0f;
#pragma unroll
            for (int t = 0; t < NT; t++) {
                int d = lane + 32 * t;
                bool in = j < j1 && d < hd;
                float kd = __bfloat162float(kc[r + min(d, hd - 1)]), vd = __bfloat162float(vc[r + min(d, hd - 1)]);
                part[u] += in ? q[t] * kd : 0.0f;
                vv[u][t] = in ? vd : 0.0f;
            }
        }
        softmax_update<NT, STEP_UNROLL, STEP_WARPS>(part, vv, jb, j1 - 1, p.scale, m, l, o);
    }
}

/* The step's own key and value (rotated, in shared memory) into warp 0's
 * softmax: they reach the cache only in this launch. */
template <int NT>
__device__ __forceinline__ void new_key(const StepParams &p, const float *q, const bf16 *k_s,
                                        const bf16 *v_s, float &m, float &l, float *o)
{
    const int lane = threadIdx.x & 31;
    float part = 0.0f, vv[1][NT];
#pragma unroll
    for (int t = 0; t < NT; t++) {
        int d = lane + 32 * t;
        bool in = d < p.hd;
        part += in ? q[t] * __bfloat162float(k_s[d]) : 0.0f;
        vv[0][t] = in ? __bfloat162float(v_s[d]) : 0.0f;
    }
    softmax_update<NT, 1, 1>(&part, vv, 0, 0, p.scale, m, l, o);
}

/* The (row, head)'s split partials (o, then m, l; `stride` floats apart),
 * written by other blocks of this launch, into M, L and acc (warp 0), with
 * the loads in flight together: lane w reads split w's m and l, and the o
 * rows come MERGE_BATCH splits at a time.  merge_partials reads them one
 * split after another, two dependent L2 round trips a split, in the one
 * block of each (row, head) that finishes last; ncu put the SMs idle for
 * half of this kernel's time (bench/NOTES-gpu.md step 19).  The sums run
 * in another order than merge_partials', so the bits differ slightly. */
#define MERGE_BATCH 4

template <int NT>
__device__ __forceinline__ void merge_splits(const float *all, int n, int stride, int hd, float &M,
                                             float &L, float *acc)
{
    const int lane = threadIdx.x & 31;
    const float mw = lane < n ? __ldcg(all + (size_t)lane * stride + hd) : -INFINITY;
    const float lw = lane < n ? __ldcg(all + (size_t)lane * stride + hd + 1) : 0.0f;
    M = warp_max(mw);
    const float f = mw == -INFINITY ? 0.0f : expf(mw - M); /* a split that saw no key adds nothing */
    L = warp_sum(lw * f);
#pragma unroll
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    for (int w0 = 0; w0 < n; w0 += MERGE_BATCH) {
        float o[MERGE_BATCH][NT];
#pragma unroll
        for (int u = 0; u < MERGE_BATCH; u++)
#pragma unroll
            for (int t = 0; t < NT; t++) {
                int d = lane + 32 * t;
                o[u][t] = w0 + u < n && d < hd ? __ldcg(all + (size_t)(w0 + u) * stride + d) : 0.0f;
            }
#pragma unroll
        for (int u = 0; u < MERGE_BATCH; u++) {
            const float fu = __shfl_sync(0xffffffffu, f, (w0 + u) & 31);
#pragma unroll
            for (int t = 0; t < NT; t++) acc[t] += o[u][t] * fu;
        }
    }
}

/* The block's cached key and value rows [j0, j1) asked into L2 while q and
 * the new key are rotated: at a step's end the cache was last read a step
 * ago, and the weights streamed since have pushed it out to memory. */
__device__ __forceinline__ void prefetch_keys(const StepParams &p, int kb, int g, int j0, int j1)
{
    const int kvd = p.n_kv_heads * p.hd;
    const unsigned bytes = (unsigned)p.hd * sizeof(bf16);
    for (int i = threadIdx.x; i < 2 * (j1 - j0); i += blockDim.x) {
        const size_t r = (size_t)(kb + j0 + i / 2) * kvd + g * p.hd;
        prefetch_l2((i & 1 ? p.v_cache : p.k_cache) + r, bytes);
    }
}

template <int NT>
__global__ void __launch_bounds__(STEP_WARPS * 32) attn_step_kernel(StepParams p)
{
    extern __shared__ bf16 row_s[]; /* q, new k, new v of this head: 3 * hd */
    __shared__ float m_s[STEP_WARPS], l_s[STEP_WARPS], o_s[STEP_WARPS][NT * 32];
    __shared__ int last_s;
    const int h = blockIdx.x, row = blockIdx.y, split = blockIdx.z;
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, hd = p.hd;
    const int g = h / (p.n_heads / p.n_kv_heads), kvd = p.n_kv_heads * hd;
    pdl_wait();    /* q, k, v are the GEMV's before, which may still run */
    pdl_trigger(); /* o_proj's GEMV may take idle SMs and ask its weights into L2 */
    const int nk = p.nk[row], limit = nk - 1, kb = p.kbase[row], t = p.pos[row];
    const int per = (nk + p.splits - 1) / p.splits, j0 = split * per, j1 = min(nk, j0 + per);
    if (p.prefetch_kv) prefetch_keys(p, kb, g, j0, min(j1, limit));
    bf16 *q_s = row_s, *k_new_s = row_s + hd, *v_new_s = row_s + 2 * hd;
    stage_row(p, row, h, g, t, q_s, k_new_s, v_new_s);
    __syncthreads();
    if (split == 0 && h % (p.n_heads / p.n_kv_heads) == 0) /* one writer a kv head */
        for (int d = threadIdx.x; d < hd; d += blockDim.x) {
            size_t c = (size_t)p.cache_row[row] * kvd + g * hd + d;
            p.k_cache[c] = k_new_s[d];
            p.v_cache[c] = v_new_s[d];
        }
    float q[NT], o[NT], m, l;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        int d = lane + 32 * i;
        q[i] = d < hd ? __bfloat162float(q_s[d]) : 0.0f;
    }
    m = -INFINITY;
    l = 0.0f;
#pragma unroll
    for (int i = 0; i < NT; i++) o[i] = 0.0f;
    cached_keys<NT>(p, q, kb, g, j0, min(j1, limit), m, l, o);
    if (warp == 0 && j0 <= limit && limit < j1) new_key<NT>(p, q, k_new_s, v_new_s, m, l, o);
    float M, L, acc[NT];
    if (!merge_warps<NT, STEP_WARPS>(m, l, o, m_s, l_s, o_s, M, L, acc)) return;
    const size_t rh = (size_t)row * p.n_heads + h;
    if (p.splits > 1) { /* publish this split; the last one of the (row, head) merges */
        const int stride = hd + 2;
        float *mine = p.part + (rh * p.splits + split) * stride;
#pragma unroll
        for (int i = 0; i < NT; i++) {
            int d = lane + 32 * i;
            if (d < hd) mine[d] = acc[i];
        }
        if (lane == 0) {
            mine[hd] = M;
            mine[hd + 1] = L;
        }
        __threadfence();
        if (lane == 0) last_s = atomicAdd(&p.done[rh], 1) == p.splits - 1;
        __syncwarp();
        if (!last_s) return;
        __threadfence();
        const float *all = p.part + rh * p.splits * stride;
        if (p.batched_merge) merge_splits<NT>(all, p.splits, stride, hd, M, L, acc);
        else merge_partials<NT, true>(all + hd, all + hd + 1, all, p.splits, stride, stride, hd, M, L, acc);
        if (lane == 0) p.done[rh] = 0; /* ready for the next layer's or step's launch */
    }
    bf16 *out = p.out + (size_t)row * p.n_heads * hd + h * hd;
#pragma unroll
    for (int i = 0; i < NT; i++) {
        int d = lane + 32 * i;
        if (d < hd) out[d] = __float2bfloat16(acc[i] / L);
    }
    if (lane == 0) p.lse[rh] = M + logf(L);
}

/* Splits enough that the step's blocks cover the card about twice, without
 * splits shorter than STEP_MIN_KEYS keys once the cache is full.  It depends
 * on the cache's shape only, so a captured step stays valid as slots grow. */
int cu_attention_step_splits(const CuState *st, int n_rows, int max_len)
{
    if (st->step_splits) return st->step_splits;
    int base = n_rows * st->c.num_attention_heads;
    int want = (2 * st->n_sms + base - 1) / base;
    int most = max_len / STEP_MIN_KEYS;
    want = want < most ? want : most;
    want = want < STEP_MAX_SPLITS ? want : STEP_MAX_SPLITS;
    return want < 1 ? 1 : want;
}

size_t cu_attention_step_workspace(const LlamaConfig *c, int n_slots)
{
    return (size_t)n_slots * c->num_attention_heads * STEP_MAX_SPLITS * (llama_head_dim(c) + 2);
}

int cu_attention_step(CuState *st, const CuRows *rows, const CuStepAttn *a, Error *err)
{
    const LlamaConfig *c = &st->c;
    StepParams p = {};
    p.q = a->q;
    p.k_new = a->k;
    p.v_new = a->v;
    p.k_cache = a->k_cache;
    p.v_cache = a->v_cache;
    p.cs = st->rope_cos;
    p.sn = st->rope_sin;
    p.pos = rows->pos;
    p.cache_row = rows->cache_row;
    p.kbase = rows->kbase;
    p.nk = rows->nk;
    p.out = a->out;
    p.lse = a->lse;
    p.part = a->part;
    p.done = a->done;
    p.n_heads = c->num_attention_heads;
    p.n_kv_heads = c->num_key_value_heads;
    p.hd = llama_head_dim(c);
    p.splits = a->splits;
    p.batched_merge = st->step_merge;
    p.prefetch_kv = st->step_prefetch && p.hd % 8 == 0 && p.n_kv_heads * p.hd % 8 == 0;
    p.scale = 1.0f / sqrtf((float)p.hd);
    if (rows->n_rows == 0) return 0;
    if (a->splits < 1 || a->splits > STEP_MAX_SPLITS)
        return error_set(err, "decode attention: %d key splits (1 to %d)", a->splits, STEP_MAX_SPLITS);
    size_t smem = 3 * (size_t)p.hd * sizeof(bf16);
    int nt = (p.hd + 31) / 32;
    void (*kernel)(StepParams) = nt <= 1 ? attn_step_kernel<1> : nt <= 2 ? attn_step_kernel<2>
                               : nt <= 4 ? attn_step_kernel<4> : nt <= 8 ? attn_step_kernel<8> : NULL;
    if (!kernel) return error_set(err, "decode attention: head_dim %d is above 256", p.hd);
    CuLaunch l;
    cu_launch_init(&l, st, dim3(p.n_heads, rows->n_rows, a->splits), dim3(STEP_WARPS * 32), smem);
    CU_TRY(cudaLaunchKernelEx(&l.cfg, kernel, p));
    CU_LAUNCHED();
    return 0;
}

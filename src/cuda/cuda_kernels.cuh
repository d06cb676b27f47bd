/* Private to the CUDA backend: its state and the kernels it is built from,
 * one concept per file (cuda_<concept>.cu).  The layout mirrors the CPU
 * reference (cpu_kernels.h):
 *   - A batch is packed: only real tokens become rows, sequence after
 *     sequence.  Activations are row-major [rows, features].
 *   - Linear weights are Hugging Face's [out, in] (y = x W^T), in bf16.
 *   - Precision: the residual stream, norm statistics, attention softmax
 *     state, logits and every gradient accumulator are fp32; GEMM operands
 *     (normed activations, projections, attention output, MLP activations,
 *     LoRA intermediates) are bf16; every GEMM accumulates in fp32.
 *   - One stream: every kernel, copy and cuBLAS call goes to st->stream, so
 *     work is ordered without host synchronisation.  Device memory for a
 *     pass comes from stream-ordered arenas (cuda_arena.cu). */
#ifndef MODPO_CUDA_KERNELS_CUH
#define MODPO_CUDA_KERNELS_CUH

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
}
#include "cuda/cuda_check.h"

typedef __nv_bfloat16 bf16;

/* ---- cuda_arena.cu: stream-ordered bump allocation ----
 * Blocks come from cudaMallocAsync on the backend's stream; reset() frees a
 * pass's blocks (stream-ordered, so queued kernels still see them) and, when
 * the pass needed several, replaces them by one block of the total size, so
 * steady-state steps allocate nothing.  A failed allocation sets `failed`
 * and returns NULL: callers allocate a group of buffers and check once. */
struct CuBlock;
struct CuArena {
    cudaStream_t stream;
    CuBlock *head;  /* current block first */
    size_t total;   /* bytes handed out since the last reset */
    int failed;
    cudaError_t error;
    int poison;     /* MODPO_CUDA_POISON=1: every allocation filled with NaN bytes */
};
void *cu_arena_alloc(CuArena *a, size_t bytes);
template <class T> static inline T *cu_alloc(CuArena *a, size_t n)
{
    return (T *)cu_arena_alloc(a, n * sizeof(T));
}
int cu_arena_check(CuArena *a, const char *what, Error *err);
int cu_arena_reset(CuArena *a, Error *err);
void cu_arena_free(CuArena *a);
/* The current block's address (NULL before the first allocation): where a
 * pass's allocations start after a reset. */
const void *cu_arena_base(const CuArena *a);

/* ---- device-side helpers (cuda_reduce.cuh) ---- */

/* Programmatic dependent launch (sm_90; MODPO_CUDA_PDL=1, NOTES-gpu.md step
 * 16).  A GEMV launched with it may start while the kernel before it runs: it
 * prefetches its weights (which nothing writes) and then waits, in
 * pdl_wait, until that kernel has finished and its writes are visible;
 * nothing it reads or writes besides weights may be touched before.  The
 * small kernels that precede GEMVs in a decode step let their dependents
 * launch at once (pdl_trigger): it changes nothing for ordinary launches. */
__device__ __forceinline__ void pdl_trigger()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}
__device__ __forceinline__ void pdl_wait()
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
/* SiLU in fp32, as the SwiGLU kernels and the GEMV's staging compute it. */
__device__ __forceinline__ float silu_of(float g) { return g / (1.0f + expf(-g)); }
/* silu(gate) * up for two neighbouring values (the SwiGLU kernel and
 * down_proj's GEMV share it: the same bits). */
__device__ __forceinline__ __nv_bfloat162 swiglu_pair(__nv_bfloat162 gate, __nv_bfloat162 up)
{
    float2 g = __bfloat1622float2(gate), u = __bfloat1622float2(up);
    return __floats2bfloat162_rn(silu_of(g.x) * u.x, silu_of(g.y) * u.y);
}
/* One value of it (an odd tail; gate/up's GEMV with SwiGLU in its epilogue). */
__device__ __forceinline__ bf16 swiglu_one(bf16 gate, bf16 up)
{
    return __float2bfloat16(silu_of(__bfloat162float(gate)) * __bfloat162float(up));
}

/* Asks for `bytes` (a multiple of 16, 16-byte aligned) from p into L2. */
__device__ __forceinline__ void prefetch_l2(const void *p, unsigned bytes)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

/* ---- cuda_profile.cu: GPU time per phase (MODPO_CUDA_PROFILE=1) ---- */
enum CuPhase {
    CU_PH_NORM, CU_PH_LINEAR_FWD, CU_PH_ROPE, CU_PH_ATTN_FWD, CU_PH_MLP_ACT, CU_PH_HEAD_FWD,
    CU_PH_HEAD_BWD, CU_PH_LINEAR_BWD, CU_PH_ATTN_BWD, CU_PH_ATTN_AUX, CU_PH_OTHER, CU_PHASES
};
struct CuMark {
    cudaEvent_t ev;
    CuPhase phase;
};
struct CuProfile {
    CuMark *marks;
    int n, cap;
    double ms[CU_PHASES];
};

/* ---- the backend's state ---- */
struct CuLayerWeights {
    const bf16 *w[LORA_N_TARGETS]; /* q, k, v, o, gate, up, down */
    const float *ln1, *ln2;        /* RMSNorm weights, fp32 */
};

struct CuAdapter {
    LoraAdapter *host;
    float *params, *grads; /* fp32 master weights and accumulated gradients */
    bf16 *pbf;             /* bf16 copy of params for the GEMMs (refreshed by push) */
    void *pinned_params, *pinned_grads; /* the host buffers, when cudaHostRegister took them */
    float *m, *v;          /* AdamW's moments (cuda_adamw.cu), made on first use */
    double *norm_work;     /* the gradient norm's partial sums, norm and clip coefficient */
    size_t n;
};

/* A host copy waiting for the next sync: dst <- pinned[src_off .. + bytes). */
struct CuPending {
    void *dst;
    size_t src_off, bytes;
};

/* One pass's rows (device arrays from the arena, filled by one upload). */
struct CuRows {
    int n_seq, n_rows, max_q, max_k;
    int32_t *qstart;    /* [n_seq + 1] first packed row of each sequence */
    int32_t *kbase;     /* [n_seq] first key row in the key buffer */
    int32_t *nk;        /* [n_seq] keys seen by the last query */
    int32_t *pos;       /* [n_rows] position in its sequence */
    int32_t *tok;       /* [n_rows] */
    int32_t *cache_row; /* [n_rows] row in the KV-cache layer (decode), else NULL */
    int fresh_cache;    /* a prefill into empty slots: every key is one of these rows */
    int32_t *last;      /* [n_seq] last packed row of each sequence */
};

struct CuLabels {
    int n;
    int32_t *row, *tgt, *seq; /* [n] */
    int32_t *sum_start;       /* [n_sums + 1] labels are grouped by the logp they add to */
    int n_sums;               /* n_seq, or more with Batch.sum_start */
    float *logp;              /* [n] */
    float *rstd;              /* [n] final-norm rstd of the row */
    float *dhn;               /* [n, D] d logp / d(normed row), kept for backward */
};

struct CuActs {
    float *x_in, *x_mid;       /* [n, D] residual before each half (kept passes only) */
    float *rstd1, *rstd2;      /* [n] */
    float *lse;                /* [n, H] attention log-sum-exp */
    bf16 *h1, *q, *k, *v, *attn, *h2, *gate, *up, *act;
    bf16 *u[LORA_N_TARGETS];   /* x A^T of each adapted projection, [n, r] */
    int rerun;                 /* the backward's recomputation: down_proj's output unused */
};

struct CuForward {
    CuRows rows;
    CuLabels lab;
    int keep;
    int recompute;         /* kept pass that keeps only each layer's input (x_in) */
    CuActs *layers;        /* [L] when kept, else [1] reused */
    CuActs *work;          /* recompute: the one full set every layer is rerun into */
    float *x_final;        /* [n, D] */
    const BackendAdapter *adapter;
    int n_seq, seq_len;
    float *seq_logp;       /* [n_seq] the logps it returned, on the device (kept passes) */
};

struct CuKv {
    int kv_dim;
    bf16 *k, *v; /* [L][n_slots * max_len][kv_dim] */
    float *step_part; /* cu_attention_step's split partials */
    int *step_done;   /* [n_slots][H] its split counters, zero between launches */
};

/* What a captured decode step baked in (cuda_decode_graph.cu). */
struct CuDecodeKey {
    const void *cache, *cache_keys;     /* the KvCache's device state and keys */
    const BackendAdapter *adapter;
    const void *adapter_params;
    const void *scratch, *rope, *split_ws, *attn_ws;
    int n_slots, max_len, n_rows;
};
struct CuDecodeGraph {
    CuDecodeKey key;
    int seen;                /* the key's last step ran uncaptured */
    cudaGraphExec_t exec;    /* NULL until captured */
    float *logits;           /* where a replay leaves the logits */
    long launches;           /* steps run from a graph since the backend was made */
};

struct CuState {
    const LlamaModel *model;
    LlamaConfig c;
    int device;
    cudaStream_t stream;
    cublasHandle_t blas;
    void *weights;               /* one device block: every bf16 matrix + fp32 norms */
    CuLayerWeights *layers;      /* [L] host array of device pointers */
    const bf16 *embed, *lm_head;
    const float *norm;
    size_t n_norm_values;        /* every RMSNorm weight, contiguous from layers[0].ln1 */
    float *rope_cos, *rope_sin;  /* [rope_npos, head_dim / 2] */
    int rope_npos;
    CuArena kept, scratch;
    CuForward fwd;
    CuActs *kept_layers;         /* [L] */
    CuActs scratch_layer;
    CuActs recompute_layer;
    int recompute;               /* cuda_backend_set_recompute */
    int has_fwd;
    int attn_flash_only;         /* MODPO_CUDA_ATTENTION=flash: never the GEMM path */
    int gemv_unfused;            /* MODPO_CUDA_GEMV=unfused: one GEMV launch per Linear (comparisons) */
    int gemv_max_rows;           /* GEMVs up to this many rows (MODPO_CUDA_GEMV_ROWS, default GEMV_DEFAULT_ROWS) */
    int n_sms;                   /* the GPU's multiprocessors (grid sizes) */
    int attn_scores;             /* MODPO_CUDA_ATTENTION=gemm: score matrices, not cuda_flash_mma */
    int poison;                  /* MODPO_CUDA_POISON=1: scratch memory starts as NaN */
    void *attn_ws;               /* the GEMM attention's workspace (stream-ordered) */
    float *split_ws;             /* cu_gemm_rows_split's partial sums (stream-ordered) */
    size_t split_ws_bytes;
    size_t attn_ws_bytes;
    size_t attn_ws_limit;        /* MODPO_CUDA_ATTENTION_MB (0: the default bound) */
    CuProfile *prof;             /* NULL unless MODPO_CUDA_PROFILE=1 */
    int graphs;                  /* decode steps replayed as CUDA graphs (MODPO_CUDA_GRAPHS) */
    int pdl;                     /* GEMVs and the step attention launched as programmatic dependents
                                  * (MODPO_CUDA_PDL=1; 2: GEMVs let theirs launch at their start, 3: at their last round) */
    int step_attn;               /* decode steps' attention in cu_attention_step (MODPO_CUDA_STEP_ATTN=0: off) */
    int step_splits;             /* key splits of the step attention (MODPO_CUDA_STEP_SPLITS; 0: by the card) */
    int step_merge;              /* its splits merged with their loads together (MODPO_CUDA_STEP_MERGE, default 1) */
    int step_prefetch;           /* its blocks ask their cached rows into L2 first (MODPO_CUDA_STEP_PREFETCH) */
    int gemv_glu;                /* decode MLP: SwiGLU in gate/up's GEMV epilogue (MODPO_CUDA_GEMV_GLU=0: off) */
    long glu_gemvs;              /* such GEMVs issued (a graph's replays count once: its capture) */
    int gemv_prefetch;           /* GEMVs ask their first rows into L2 before forming x (MODPO_CUDA_GEMV_PREFETCH) */
    CuDecodeGraph graph;
    /* outputs: device -> pinned (async) -> caller's memory at sync */
    char *pinned;
    size_t pinned_cap, pinned_used;
    CuPending *pend;
    int n_pend, cap_pend;
    /* host staging for uploads (pageable: cudaMemcpyAsync copies it out before returning) */
    int32_t *hints;
    size_t hints_cap;
    float *dlogps_dev;
    int dlogps_cap;
};

/* A launch on st's stream that, with st->pdl, may start while the kernel
 * before it runs (the kernel must pdl_wait before touching its inputs).
 * Filled in place: cfg points at attr. */
struct CuLaunch {
    cudaLaunchConfig_t cfg;
    cudaLaunchAttribute attr[1];
};
static inline void cu_launch_init(CuLaunch *l, const CuState *st, dim3 grid, dim3 block, size_t smem)
{
    *l = CuLaunch{};
    l->cfg.gridDim = grid;
    l->cfg.blockDim = block;
    l->cfg.dynamicSmemBytes = smem;
    l->cfg.stream = st->stream;
    l->attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    l->attr[0].val.programmaticStreamSerializationAllowed = 1;
    l->cfg.attrs = l->attr;
    l->cfg.numAttrs = st->pdl ? 1 : 0;
}


static inline CuState *cu_state(Backend *b) { return (CuState *)b->state; }

int cu_prof_mark(CuState *st, CuPhase phase, Error *err);
int cu_prof_resolve(CuState *st, Error *err);
void cu_prof_free(CuProfile *p);
const char *cu_phase_name(int phase);
/* Marks the start of a phase when profiling. */
#define CU_PHASE(st, ph)                                                                   \
    do {                                                                                   \
        if ((st)->prof) TRY(cu_prof_mark((st), (ph), err));                                \
    } while (0)

/* ---- cuda_backend.cu: outputs ----
 * Reserves `bytes` of the pinned buffer for a device->host copy that lands
 * in dst at the next sync; returns the pinned address (NULL + err on failure).
 * When the buffer is full the queued copies are flushed first (a sync). */
void *cu_output_reserve(CuState *st, void *dst, size_t bytes, Error *err);
/* cudaMemcpyAsync(device -> the reserved pinned region) then records it. */
int cu_output(CuState *st, void *dst, const void *src_dev, size_t bytes, Error *err);
/* Waits for the stream and copies every pending output out. */
int cu_flush(CuState *st, Error *err);

/* ---- cuda_adamw.cu: the optimizer step on the device (BackendOps) ---- */
int cu_adamw_step(Backend *b, BackendAdapter *a, const BackendAdamWStep *step, double *grad_norm,
                  Error *err);
int cu_adamw_pull(Backend *b, BackendAdapter *a, float *m, float *v, Error *err);
int cu_adamw_push(Backend *b, BackendAdapter *a, const float *m, const float *v, Error *err);
void cu_adamw_free(CuAdapter *ca);

/* ---- cuda_pref_loss.cu: dL/dlogp of a preference loss on the device ----
 * dlogps[2n] from the policy logps[2n] ([chosen | rejected], device); the
 * pair constants are uploaded into `arena`. */
int cu_pref_dlogps(CuState *st, const PrefLossSpec *loss, const float *logps, float *dlogps,
                   CuArena *arena, Error *err);

/* ---- cuda_gemm.cu: row-major C[m,n] = alpha op(A)[m,k] op(B)[k,n] + beta C
 * with bf16 A, B, fp32 compute, C bf16 (c_f32 = 0) or fp32 (c_f32 = 1). */
int cu_gemm(CuState *st, int ta, int tb, int m, int n, int k, float alpha, const bf16 *A,
            int lda, const bf16 *B, int ldb, float beta, void *C, int c_f32, int ldc,
            Error *err);
/* Decode's few rows: y[n, out] = beta y + x[n, in] W[out, in]^T for
 * cu_gemv_usable(st, n, in) (n <= st->gemv_max_rows <= GEMV_MAX_ROWS, in a
 * multiple of 8). */
#define GEMV_MAX_ROWS 8
/* Measured on an H200 (bench/NOTES-gpu.md step 13): beyond 2 rows the
 * split-K GEMMs beat the GEMV, which re-reads x for every weight load. */
#define GEMV_DEFAULT_ROWS 2
int cu_gemv_usable(const CuState *st, int n, int in);
int cu_gemv(CuState *st, int n, int out, int in, const bf16 *x, const bf16 *W, float beta, void *y,
            int y_f32, Error *err);
/* Up to GEMV_MAX_PARTS such products of one width `in` in one launch:
 * y_p = beta y_p + alpha x_p W_p^T (y_p all bf16, or all fp32 with y_f32),
 * x_p the part's own rows or, when NULL, the launch's x (staged once in
 * shared memory when it fits). */
#define GEMV_MAX_PARTS 6
struct CuGemvPart {
    const bf16 *w; /* [out, in], 16-byte aligned */
    void *y;       /* [n, out] */
    int out;
    const bf16 *x; /* [n, in] or NULL: the launch's x */
};
int cu_gemv_many(CuState *st, int n, int in, const bf16 *x, const CuGemvPart *parts, int count,
                 float alpha, float beta, int y_f32, Error *err);
/* The launch's x as RMSNorm of fp32 residual rows: each block normalises
 * them into its shared-memory copy with rmsnorm_fwd_kernel's arithmetic
 * (the same bits), so a decode step runs no norm kernel of its own. */
struct CuNormedX {
    const float *x;      /* [*, in] the residual */
    const int32_t *rows; /* which rows of x (NULL: 0 .. n-1) */
    const float *w;      /* [in] the norm's weight */
    float eps;
};
/* The launch's x as SwiGLU(gate, up) rows, formed in shared memory with
 * swiglu_fwd_kernel's arithmetic: down_proj's GEMV without the SwiGLU
 * kernel (decode). */
struct CuGluX {
    const bf16 *gate, *up; /* [n, in] */
};
/* Whether the x of n rows of width `in` can be formed in shared memory
 * (cu_gemv_many_normed, cu_gemv_many_glu). */
int cu_gemv_staged_usable(const CuState *st, int n, int in);
int cu_gemv_many_normed(CuState *st, int n, int in, const CuNormedX *nx, const CuGemvPart *parts,
                        int count, float alpha, float beta, int y_f32, Error *err);
int cu_gemv_many_glu(CuState *st, int n, int in, const CuGluX *glu, const CuGemvPart *parts,
                     int count, float alpha, float beta, int y_f32, Error *err);
/* act[r, o] = SwiGLU(gate_w[o] . x[r], up_w[o] . x[r]) with x = RMSNorm(nx):
 * a warp streams row o of both weights and rounds each product to bf16
 * before the SwiGLU, as the GEMV into gate and up and the SwiGLU kernel
 * after it do, so act has the same bits; down_proj then only copies it. */
int cu_gemv_glu_normed(CuState *st, int n, int in, const CuNormedX *nx, const bf16 *gate_w,
                       const bf16 *up_w, int out, bf16 *act, Error *err);
/* Some tens of rows (a batched decode step): cuBLAS tiles y over the rows
 * and outputs only, too few tiles to keep the card busy, so the product is
 * split along `in` into strided-batched GEMMs (fp32 partials) that are then
 * summed.  cu_gemm_split_k(st, n, out, in) gives the number of parts (1: do not
 * split); cu_gemm_rows_split runs it. */
int cu_gemm_split_k(const CuState *st, int n, int out, int in);
int cu_gemm_rows_split(CuState *st, int n, int out, int in, const bf16 *x, const bf16 *W,
                       float beta, void *y, int y_f32, int parts, Error *err);
/* The same over `batch` problems, operand b at X + b * stride_x. */
int cu_gemm_strided(CuState *st, int ta, int tb, int m, int n, int k, float alpha, const bf16 *A,
                    int lda, long long stride_a, const bf16 *B, int ldb, long long stride_b,
                    float beta, void *C, int c_f32, int ldc, long long stride_c, int batch,
                    Error *err);

/* ---- cuda_lora.cu: a frozen bf16 Linear with an optional LoRA ---- */
struct CuLinear {
    const bf16 *w; /* [out, in] */
    int in, out;
    const bf16 *a, *b; /* LoRA A [r, in], B [out, r] (bf16 copies); NULL: not adapted */
    float *da, *db;    /* fp32 gradient accumulators */
    int r;
    float scale;
};
CuLinear cu_linear_of(const CuState *st, const BackendAdapter *ad, int layer, LoraTarget t);
/* y = beta*y + x W^T + scale (x A^T) B^T, u = x A^T (bf16) when adapted. */
int cu_linear_forward(CuState *st, const CuLinear *l, int n, const bf16 *x, void *y, int y_f32,
                      float beta, bf16 *u, Error *err);
/* y[i] = x W_i^T (+ LoRA) for `count` (<= 3) Linears reading the same x
 * (q/k/v, gate/up), bf16 outputs.  When the rows are few (decode) their
 * weights and LoRA A's stream in one GEMV launch and the LoRA B's in a
 * second; else as cu_linear_forward one by one. */
int cu_linear_forward_many(CuState *st, const CuLinear *l, int count, int n, const bf16 *x,
                           bf16 *const *y, bf16 *const *u, Error *err);
/* The MLP of a few rows (decode) as two GEMVs: x_out += down(SwiGLU(gate(h),
 * up(h))) with h = RMSNorm(nx), SwiGLU in the first GEMV's epilogue (act:
 * [n, ffn] bf16 between them).  Also two launches with SwiGLU in down's
 * prologue, but there every block of down formed the whole act row first
 * (~10 us a launch on an H100, bench/NOTES-gpu.md step 19).  Only for
 * Linears without LoRA; cu_mlp_glu_fusable says when. */
int cu_mlp_glu_fusable(const CuState *st, const CuLinear *gate, const CuLinear *up,
                       const CuLinear *down, int n);
int cu_mlp_forward_glu(CuState *st, const CuLinear *gate, const CuLinear *up, const CuLinear *down,
                       int n, const CuNormedX *nx, bf16 *act, float *x_out, Error *err);
/* The same with x = RMSNorm(nx's rows) formed inside the GEMV (decode; no
 * normed copy is kept), when cu_linear_normed_fusable says it can. */
int cu_linear_normed_fusable(const CuState *st, const CuLinear *l, int count, int n);
int cu_linear_forward_many_normed(CuState *st, const CuLinear *l, int count, int n,
                                  const CuNormedX *nx, bf16 *const *y, bf16 *const *u, Error *err);
/* dx(fp32) = beta*dx + dy W + scale (dy B) A (dx NULL: skipped);
 * dB += scale dy^T u; dA += (scale dy B)^T x.  du: [n, r] bf16 scratch. */
int cu_linear_backward(CuState *st, const CuLinear *l, int n, const bf16 *x, const bf16 *u,
                       const bf16 *dy, float *dx, float beta, bf16 *du, Error *err);

/* ---- cuda_rmsnorm.cu ----
 * y[i] = bf16(w * x[row(i)] * rstd), rstd[i] stored when non-NULL; row(i) =
 * rows ? rows[i] : i. */
int cu_rmsnorm_forward(CuState *st, int n, int d, const float *x, const int32_t *rows,
                       const float *w, float eps, bf16 *y, float *rstd, Error *err);
/* dx[row(i)] += RMSNorm'(x[row(i)]) applied to dy[i] * (scale ? scale[i] : 1). */
int cu_rmsnorm_backward(CuState *st, int n, int d, const float *x, const int32_t *rows,
                        const float *w, const float *rstd, const float *dy, const float *scale,
                        float *dx, Error *err);

/* ---- cuda_rope.cu: HF rotate_half rotary embeddings from the fp32 tables ---- */
int cu_rope_tables(CuState *st, int n_pos, Error *err);
/* x[n, n_heads * hd] bf16 rotated in place by each row's position. */
int cu_rope_forward(CuState *st, int n, const int32_t *pos, int n_heads, bf16 *x, Error *err);
/* With a KV cache: rotates q [n, heads] and k [n, kv heads] in place and
 * writes each row's k and v to its cache_row of k_cache / v_cache (one
 * layer's [rows][kv_dim]). */
int cu_rope_into_cache(CuState *st, int n, const int32_t *pos, const int32_t *cache_row, bf16 *q,
                       bf16 *k, const bf16 *v, bf16 *k_cache, bf16 *v_cache, Error *err);
/* out(bf16) = inverse rotation of dx(fp32) (the backward). */
int cu_rope_backward(CuState *st, int n, const int32_t *pos, int n_heads, const float *dx,
                     bf16 *out, Error *err);

/* ---- cuda_attention.cu: causal attention with GQA over packed rows ----
 * Sequence s's queries are rows qstart[s] .. qstart[s+1]-1 of q; its keys
 * are rows kbase[s] .. kbase[s] + nk[s] - 1 of k and v; query i sees keys
 * 0 .. nk - nq + i. */
struct CuAttn {
    const bf16 *q, *k, *v;
    int kv_stride; /* elements between key rows (q rows: n_heads * hd) */
    bf16 *out;     /* [rows, H * hd] */
    float *lse;    /* [rows, H] */
};
int cu_attention_forward(CuState *st, const CuRows *rows, const CuAttn *a, Error *err);
/* The same for decode steps (a few query rows per sequence, long caches):
 * one block per (row, head), keys spread over its warps. */
int cu_attention_decode(CuState *st, const CuRows *rows, const CuAttn *a, Error *err);
/* ---- cuda_attention_step.cu: a decode step (one new row per sequence,
 * rows->cache_row its cache row) with the row's RoPE and cache write inside:
 * q, k, v come unrotated from the step's projections. ---- */
#define STEP_MAX_SPLITS 16 /* key splits of a (row, head) at most */
struct CuStepAttn {
    const bf16 *q, *k, *v;
    bf16 *k_cache, *v_cache; /* the layer's */
    bf16 *out;
    float *lse;
    float *part; /* cu_attention_step_workspace floats */
    int *done;   /* [n_rows][H] ints, zero */
    int splits;  /* cu_attention_step_splits */
};
int cu_attention_step_splits(const CuState *st, int n_rows, int max_len);
size_t cu_attention_step_workspace(const LlamaConfig *c, int n_slots);
int cu_attention_step(CuState *st, const CuRows *rows, const CuStepAttn *a, Error *err);
/* Training layout (kbase = qstart, nk = nq): dq [rows, H*hd], dk, dv [rows,
 * Hkv*hd] fp32, overwritten; delta [rows, H] scratch. */
int cu_attention_backward(CuState *st, const CuRows *rows, const CuAttn *a, const float *dout,
                          float *delta, float *dq, float *dk, float *dv, Error *err);

/* ---- cuda_attention_gemm.cu: the same on tensor cores for passes without a
 * KV cache whose [L x L] scores fit the workspace (cu_attention_gemm_usable).
 * Differences: q and k come in *unrotated* (RoPE is applied inside), and the
 * backward's dq, dk (gradients of the unrotated q, k) and dv are bf16. */
int cu_attention_gemm_usable(const CuState *st, const CuRows *rows);
/* rotate = 0: q and k come rotated already (a prefill, whose cache needs
 * the rotated keys); the queries' keys are then this pass's rows. */
int cu_attention_gemm_forward(CuState *st, const CuRows *rows, const CuAttn *a, int rotate,
                              Error *err);
int cu_attention_gemm_backward(CuState *st, const CuRows *rows, const CuAttn *a, const float *dout,
                               bf16 *dq, bf16 *dk, bf16 *dv, Error *err);

/* ---- cuda_flash_mma.cu: the score-free tensor-core attention that
 * cuda_attention_gemm.cu runs on its padded [b][L][hd] buffers when the
 * head dimension is 64 or 128 (L a multiple of 64). ---- */
struct CuFlashArgs {
    const bf16 *q, *k, *v;    /* [n_problems][L][hd], rotated */
    bf16 *o;                  /* forward output, same layout */
    float *lse;               /* [packed row][n_heads] natural log-sum-exp (written, then read) */
    const bf16 *dout;         /* backward: dO in the layout of o */
    const float *delta;       /* backward: [n_problems][L] rowsum(dO * O) */
    float *dq, *dk, *dv;      /* backward outputs, fp32, layout of q */
    const int32_t *qstart;    /* [n_seq + 1] packed rows of each sequence */
    int s0, n_problems;       /* problems are (sequence s0 + b / n_heads, head b % n_heads) */
    int n_heads, L, hd;
    float scale;
};
int cu_flash_mma_usable(int hd);
int cu_flash_mma_forward(CuState *st, const CuFlashArgs *a, Error *err);
int cu_flash_mma_backward(CuState *st, const CuFlashArgs *a, Error *err);

/* ---- cuda_elementwise.cu: embedding, SwiGLU, conversions, KV scatter ---- */
int cu_embed(CuState *st, int n, const int32_t *tok, float *x, Error *err);
int cu_swiglu_forward(CuState *st, size_t n, const bf16 *gate, const bf16 *up, bf16 *act,
                      Error *err);
int cu_swiglu_backward(CuState *st, size_t n, const bf16 *gate, const bf16 *up,
                       const float *dact, bf16 *dgate, bf16 *dup, Error *err);
int cu_to_bf16(CuState *st, size_t n, const float *x, bf16 *y, Error *err);
/* x[i] = std * N(0,1) from a hash of (seed, i); x[i] = value. */
int cu_fill_normal(CuState *st, bf16 *x, size_t n, uint64_t seed, float std, Error *err);
int cu_fill_const(CuState *st, float *x, size_t n, float value, Error *err);

/* ---- cuda_logprobs.cu: final norm + LM head + log-softmax + gather ---- */
/* Fills lab->logp, lab->rstd and (keep) lab->dhn; per-sequence sums into
 * seq_logp[n_seq] (device). */
int cu_logprobs_forward(CuState *st, const CuForward *f, int keep, float *seq_logp, Error *err);
/* dx[row] += d/dx of sum_s dlogps[s] logp_s through the head (dlogps device). */
int cu_logprobs_backward(CuState *st, const CuForward *f, const float *dlogps, float *dx,
                         Error *err);
/* Logits (fp32) of n rows rows[i] of x into out[i * V] (device). */
int cu_head_logits(CuState *st, const float *x, int n, const int32_t *rows, float *out,
                   Error *err);
/* Rows of the head evaluated at once. */
int cu_head_chunk(const CuState *st);

/* ---- cuda_model.cu: the model over packed rows ---- */
/* Packs batch rows (and labels) and uploads them; from `arena`. */
int cu_rows_from_batch(CuState *st, const Batch *b, CuRows *rows, CuLabels *lab, CuArena *arena,
                       Error *err);
/* The backend's reusable host staging for n ints (pageable: an async upload
 * copies it out before returning, so it can be reused at once). */
int32_t *cu_host_ints(CuState *st, size_t n, Error *err);
/* Uploads host ints to a device array from the arena (stream-ordered). */
int32_t *cu_upload_ints(CuState *st, const int32_t *h, size_t n, CuArena *arena, Error *err);
/* Runs every layer; kv != NULL writes each row's k, v to its cache row and
 * attends to the cache.  Fills f->x_final. */
int cu_model_forward(CuState *st, const BackendAdapter *ad, CuForward *f, KvCache *kv,
                     CuArena *arena, Error *err);
int cu_model_backward(CuState *st, const BackendAdapter *ad, const CuForward *f,
                      const float *dlogps, CuArena *arena, Error *err);

/* ---- cuda_decode.cu ---- */
int cu_kv_create(Backend *b, int n_slots, int max_len, KvCache **out, Error *err);
void cu_kv_free(Backend *b, KvCache *kv);
int cu_prefill(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
               const int32_t *lengths, int stride, float *out_logits, Error *err);
int cu_decode_step(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                   const uint8_t *active, float *out_logits, Error *err);

/* ---- cuda_decode_graph.cu: decode steps as CUDA graphs ----
 * body queues one step's device work and sets *logits (device).  Runs it
 * directly, or captures it (the key's second consecutive use), or replays
 * the graph captured for this key. */
typedef int (*CuStepBody)(CuState *st, void *ctx, float **logits, Error *err);
int cu_decode_graph_run(CuState *st, const KvCache *kv, const BackendAdapter *a, int n_rows,
                        CuStepBody body, void *ctx, float **logits, Error *err);
/* Forgets the captured step (the cache or adapter it used is going away). */
void cu_decode_graph_drop(CuState *st);

#endif

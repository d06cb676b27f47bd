/* Private to the CPU backend: its state and the kernels it is built from,
 * one concept per file (cpu_<concept>.c).
 *
 * Layout conventions:
 *   - A batch is packed: only real (non-padding) tokens become rows, sequence
 *     after sequence, so a row never attends to padding and padding costs
 *     nothing.  Activations are row-major [rows, features].
 *   - Linear weights are Hugging Face's [out, in]; y = x W^T.
 *   - All matrix products go through cblas_sgemm (about 80-90% of a training
 *     step's time; OpenBLAS threads them) and element-wise loops run on the
 *     calling thread (no OpenMP thread teams).
 *     Measured on the 2-vCPU VM (bench/README.md): a step of the 100M shape
 *     took 2.2 s with BLAS's 2 threads alone, but 8.7-10.8 s with the
 *     element-wise loops in OpenMP parallel regions, because OpenMP's pool
 *     (spinning between regions, its default policy) and OpenBLAS's pool
 *     alternated on the same cores, each waiting for threads the other had
 *     descheduled. */
#ifndef MODPO_CPU_KERNELS_H
#define MODPO_CPU_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* ---- cpu_arena.c: bump allocation that settles into one block ----
 * A pass allocates everything from an arena; reset() frees the pass's memory
 * and, if the pass needed several blocks, replaces them by one block of the
 * total size, so steady-state training steps never call malloc.  An
 * allocation failure sets `failed` and returns NULL: callers allocate a group
 * of buffers and check once. */
typedef struct CpuBlock CpuBlock;
typedef struct {
    CpuBlock *head; /* current block first */
    size_t total;   /* bytes handed out since the last reset */
    int failed;
} CpuArena;

void *cpu_arena_alloc(CpuArena *a, size_t bytes);
float *cpu_arena_floats(CpuArena *a, size_t n);
void cpu_arena_reset(CpuArena *a);
void cpu_arena_free(CpuArena *a);

/* ---- cpu_linear.c: a frozen Linear with an optional LoRA ---- */
typedef struct {
    const float *w;   /* [out, in] */
    int in, out;
    const float *a;   /* LoRA A [r, in]; NULL when this projection is not adapted */
    const float *b;   /* LoRA B [out, r] */
    float *da, *db;   /* gradient accumulators of A and B */
    int r;
    float scale;      /* alpha / r */
} CpuLinear;

/* The projection `t` of layer `l` under adapter `ad` (NULL: no LoRA). */
CpuLinear cpu_linear_of(const LlamaModel *m, const BackendAdapter *ad, int l, LoraTarget t);
/* y[n, out] = x W^T + scale * (x A^T) B^T.  When adapted, u[n, r] receives
 * x A^T (backward needs it). */
void cpu_linear_forward(const CpuLinear *lin, int n, const float *x, float *y, float *u);
/* From dy[n, out]: dx = beta*dx + dy W + scale * (dy B) A (skipped when dx is
 * NULL: nothing below needs it), and dA, dB are accumulated.  du[n, r] is
 * scratch. */
void cpu_linear_backward(const CpuLinear *lin, int n, const float *x, const float *u,
                         const float *dy, float *dx, float beta, float *du);

/* ---- cpu_rmsnorm.c: HF LlamaRMSNorm, y = w * (x * rsqrt(mean(x^2) + eps)) ---- */
void cpu_rmsnorm_forward(int n, int d, const float *x, const float *w, float eps, float *y,
                         float *rstd);
/* dx += d/dx of sum(dy * y), given the forward's rstd. */
void cpu_rmsnorm_backward(int n, int d, const float *x, const float *w, const float *rstd,
                          const float *dy, float *dx);

/* ---- cpu_rope.c: rotary embeddings, HF's rotate_half convention ---- */
typedef struct {
    int n_pos, half; /* positions 0..n_pos-1, head_dim / 2 frequencies */
    float *cos, *sin; /* [n_pos, half] */
} CpuRope;

/* Tables for positions 0..n_pos-1, computed the way transformers does (fp32
 * inverse frequencies and angles), from the arena. */
int cpu_rope_build(CpuRope *r, int n_pos, int head_dim, float theta, CpuArena *a);
/* Rotates each head of x[n, n_heads * head_dim] in place by its row's
 * position; direction -1 applies the inverse (transpose) rotation, which is
 * the backward pass. */
void cpu_rope_apply(const CpuRope *r, int n, const int32_t *pos, int n_heads, float *x,
                    int direction);

/* ---- cpu_attention.c: causal multi-head attention with GQA ---- */
typedef struct {
    int n_heads, n_kv_heads, head_dim;
    int q_stride;  /* floats between rows of q, out, dq (= hidden size) */
    int kv_stride; /* floats between rows of k, v, dk, dv */
} CpuAttnShape;

/* One sequence's queries are its last n_q positions of n_k: query i sees keys
 * 0 .. n_k - n_q + i (training and prefill: n_q = n_k; decode: n_q = 1). */
typedef struct {
    const float *q;   /* [n_q, q_stride], RoPE applied */
    const float *k;   /* [n_k, kv_stride], RoPE applied */
    const float *v;   /* [n_k, kv_stride] */
    float *out;       /* [n_q, q_stride] */
    float *lse;       /* [n_q, n_heads] log-sum-exp of the scaled scores, or NULL */
    int n_q, n_k;
} CpuAttnSeq;

/* scratch: at least max(n_q * n_k) floats (more than enough: queries go in
 * blocks). */
void cpu_attention_forward(const CpuAttnShape *sh, int n_seq, const CpuAttnSeq *seqs,
                           float *scratch);

typedef struct {
    const float *q, *k, *v, *out, *lse, *dout; /* as saved by the forward, n rows each */
    float *dq, *dk, *dv;                       /* written (dq) / overwritten (dk, dv) */
    int n;
} CpuAttnGrad;

/* Recomputes the probabilities from q, k and lse (nothing T x T is saved).
 * scratch: at least 2 * max(n * n) floats. */
void cpu_attention_backward(const CpuAttnShape *sh, int n_seq, const CpuAttnGrad *seqs,
                            float *scratch);

/* ---- cpu_mlp.c: SwiGLU, act = silu(gate) * up ---- */
void cpu_swiglu_forward(size_t n, const float *gate, const float *up, float *act);
void cpu_swiglu_backward(size_t n, const float *gate, const float *up, const float *dact,
                         float *dgate, float *dup);

/* ---- cpu_logprobs.c: final norm + LM head (+ log-softmax + gather) ----
 * Rows are processed `chunk` at a time, so at most [chunk, V] logits exist. */
typedef struct {
    int n;               /* labelled rows */
    int32_t *row;        /* [n] packed row whose logits score the label */
    int32_t *target;     /* [n] the label token */
    int32_t *seq;        /* [n] its sequence */
    int32_t *sum;        /* [n] the logp it adds to (== seq without Batch.sum_start) */
    float *lse;          /* [n] log-sum-exp of the row's logits */
    float *dhn;          /* [n, D] d logp / d(normed row), for backward; NULL: not needed */
} CpuLabels;

/* logp[i] = logits(row[i])[target[i]] - lse[i]; fills labels->lse and, when
 * labels->dhn is set, labels->dhn. */
void cpu_logprobs_forward(const LlamaModel *m, int chunk, const float *x, CpuLabels *labels,
                          float *logp, float *scratch);
/* dx[row[i]] += d/dx of dlogp[i] * logp[i] (needs the forward's dhn). */
void cpu_logprobs_backward(const LlamaModel *m, int chunk, const float *x,
                           const CpuLabels *labels, const float *dlogp, float *dx,
                           float *scratch);
/* Logits of n rows (row[i] of x) into out[i * V]. */
void cpu_head_logits(const LlamaModel *m, int chunk, const float *x, int n, const int32_t *row,
                     float *out, float *scratch);
/* Floats of scratch the three functions above need. */
size_t cpu_logprobs_scratch(const LlamaConfig *c, int chunk);

/* ---- cpu_forward.c / cpu_backward.c: the model over packed rows ---- */
typedef struct {
    int n_seq, n_rows;
    int32_t *start;  /* [n_seq + 1] first row of each sequence */
    int32_t *pos;    /* [n_rows] position of the row in its sequence */
    int32_t *tok;    /* [n_rows] */
    int32_t *slot;   /* [n_seq] KV-cache slot of each sequence (decode only) */
} CpuRows;

/* What one layer's backward needs (all [rows, ...]). */
typedef struct {
    float *x_in, *rstd1, *h1;       /* residual input, its norm */
    float *q, *k, *v;               /* after RoPE */
    float *lse;                     /* [rows, H] attention log-sum-exp */
    float *attn;                    /* attention output = o_proj input */
    float *x_mid, *rstd2, *h2;      /* residual after attention, its norm */
    float *gate, *up, *act;         /* MLP */
    float *lora_u[LORA_N_TARGETS];  /* x A^T of each adapted projection */
} CpuLayerActs;

typedef struct {
    CpuRows rows;
    CpuRope rope;
    int keep;             /* layers[] holds every layer (else one reused set) */
    CpuLayerActs *layers; /* [L] or [1] */
    float *x_final;       /* [rows, D] residual after the last layer */
    CpuLabels labels;
    const BackendAdapter *adapter;
    int n_seq, seq_len;   /* the batch it was run on */
    float *seq_logp;      /* [n_seq] the logps it returned (kept passes) */
} CpuForward;

struct KvCache;

/* Runs every layer over `rows` (from the arena): with kv == NULL attention is
 * within each sequence's rows (which must start at position 0); otherwise
 * each row's k, v go into its sequence's cache slot first and attention reads
 * the slot.  Fills f->x_final. */
int cpu_model_forward(const LlamaModel *m, const BackendAdapter *ad, CpuForward *f,
                      struct KvCache *kv, CpuArena *arena, Error *err);
/* From dlogps[n_seq] into ad's gradients, using f (a kept forward). */
int cpu_model_backward(const LlamaModel *m, int chunk, const BackendAdapter *ad,
                       const CpuForward *f, const float *dlogps, CpuArena *arena, Error *err);

/* Packs a Batch into rows (and, with labels != NULL, its labels) from the
 * arena; checks lengths, token ids and label positions. */
int cpu_rows_from_batch(const LlamaConfig *c, const Batch *b, CpuRows *rows, CpuLabels *labels,
                        CpuArena *arena, Error *err);

/* ---- cpu_decode.c: KV cache, per layer [n_slots, max_len, kv_dim] ---- */
float *cpu_kv_k(struct KvCache *kv, int layer, int slot);
float *cpu_kv_v(struct KvCache *kv, int layer, int slot);

/* ---- cpu_backend.c ---- */
typedef struct {
    const LlamaModel *model;
    int chunk;
    CpuArena kept;     /* the forward kept for backward */
    CpuArena scratch;  /* everything else, per call */
    CpuForward fwd;
    int has_fwd;
} CpuState;

int cpu_kv_create(Backend *b, int n_slots, int max_len, struct KvCache **out, Error *err);
void cpu_kv_free(Backend *b, struct KvCache *kv);
int cpu_prefill(Backend *b, struct KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                const int32_t *lengths, int stride, float *out_logits, Error *err);
int cpu_decode_step(Backend *b, struct KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                    const uint8_t *active, float *out_logits, Error *err);

#endif

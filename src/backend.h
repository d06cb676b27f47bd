/* The model as the rest of modpo sees it (DESIGN.md §2): every objective is a
 * scalar function of per-sequence completion log-probs, so a backend only has
 * to
 *   - compute logp per sequence of a batch under an adapter or none,
 *   - push dL/dlogp back into that adapter's LoRA gradients (base frozen),
 *   - run one decode step against a KV cache (generation).
 * Losses, optimizer, trainers and the pipeline are backend-independent C that
 * call these through a table of function pointers, so the CPU reference
 * (cpu_backend.c) and a CUDA backend are interchangeable.
 *
 * Memory and synchronisation — written so a bf16 CUDA backend with device
 * memory and one stream can implement it with no host synchronisation inside
 * a training step:
 *   - Adapters are bound to the backend (adapter_bind) and used through the
 *     returned handle.  The backend owns its copy of the params and of the
 *     gradient accumulator (CUDA: device fp32 master weights and grads).  The
 *     host LoraAdapter is synchronised only at explicit points:
 *     adapter_push (host params -> backend, after the optimizer or a load)
 *     and adapter_pull_grads (backend grads -> host grads, once per optimizer
 *     step, after any number of accumulated backward calls).  The CPU backend
 *     shares the host buffers, so both are no-ops there, but callers must
 *     make them anyway.
 *   - Several handles can be bound to one backend at once (the trainable
 *     policy, a frozen margin adapter); NULL means the base model (the
 *     reference).
 *   - Inputs (Batch, dlogps, decode tokens) are host memory that the backend
 *     reads or copies before the call returns (CUDA: an async copy from
 *     pageable memory is staged immediately, no device sync), so the caller
 *     may reuse them afterwards.
 *   - Outputs (logps, logits) are host memory that the backend fills
 *     asynchronously: they are valid after backend_sync().  A training
 *     step queues every micro-batch's logps(keep) -> backward (SFT: dL/dlogp
 *     does not depend on the logps) or logps(keep) -> pref_backward (DPO,
 *     MODPO: dL/dlogp formed on the backend) and syncs once at its end,
 *     when the host computes the losses and metrics from the logps;
 *     gradients stay on the backend across micro-batches until
 *     adapter_pull_grads -- or never leave it, when the backend takes the
 *     optimizer step itself (adamw_step).
 *   - Errors from asynchronous work may surface at the next call or at sync.
 *
 * Threading: a Backend is used by one thread at a time. */
#ifndef MODPO_BACKEND_H
#define MODPO_BACKEND_H

#include <stdint.h>

#include "adamw.h"
#include "batch.h"
#include "error.h"
#include "llama.h"
#include "lora.h"
#include "losses.h"

typedef struct Backend Backend;

/* A LoRA adapter bound to a backend (made by adapter_bind). */
typedef struct BackendAdapter {
    LoraAdapter *host; /* the host adapter it mirrors */
    void *impl;        /* the backend's copy (CUDA: device params + grads) */
} BackendAdapter;

/* Decode state for n_slots sequences of at most max_len tokens each. */
typedef struct KvCache {
    int n_slots, max_len;
    int32_t *len; /* [n_slots] tokens held by each slot; kept by prefill/decode_step */
    void *impl;   /* the backend's keys and values */
} KvCache;

/* Sums x[0..n) -- backend memory -- over the data-parallel ranks, in place,
 * queued on `queue` (the backend's stream; NULL on the CPU) behind the work
 * already there.  A NULL fn: one process, nothing to sum. */
typedef struct {
    int (*fn)(void *ctx, float *x, size_t n, void *queue, Error *err);
    void *ctx;
} BackendGradSum;

/* One optimizer step done by the backend (adamw_step below). */
typedef struct {
    AdamWConfig cfg;
    int64_t t;            /* the step being taken, 1-based (torch's state["step"] after it) */
    double lr;
    double max_grad_norm; /* <= 0: no clipping */
    BackendGradSum sum;
} BackendAdamWStep;

typedef struct {
    const char *name; /* "cpu", "cuda" */

    /* Frees the backend's state; every handle and cache must be gone. */
    void (*destroy)(Backend *b);
    /* Waits for queued work; after it returns, outputs are valid. */
    int (*sync)(Backend *b, Error *err);

    /* ---- adapters ----
     * bind: the backend keeps a pointer to `host` (which must outlive the
     * handle and keep its shape) and copies its params in.  The gradient
     * accumulator holds nothing meaningful until adapter_zero_grads (on the
     * CPU it is host->grads, left as they are). */
    int (*adapter_bind)(Backend *b, LoraAdapter *host, BackendAdapter **out, Error *err);
    void (*adapter_unbind)(Backend *b, BackendAdapter *a);
    /* host->params -> backend */
    int (*adapter_push)(Backend *b, BackendAdapter *a, Error *err);
    /* backend gradient accumulator -> host->grads (overwritten); synchronous */
    int (*adapter_pull_grads)(Backend *b, BackendAdapter *a, Error *err);
    /* zeroes the backend accumulator (and, on the CPU, host->grads) */
    int (*adapter_zero_grads)(Backend *b, BackendAdapter *a, Error *err);

    /* ---- the optimizer on the backend (optional: NULL leaves it to the host) ----
     * adamw_step: sums a's gradient accumulator over the ranks (step->sum),
     * clips it by its global norm and applies AdamW to the backend's params,
     * with the arithmetic of adamw.h and grad_clip.h; the moments stay on
     * the backend (zero until the first step or an adamw_push).  *grad_norm:
     * the norm before clipping; a non-finite norm is an error and changes
     * nothing.  Afterwards host->params are stale until adamw_pull.  Waits
     * for the norm, so it returns with the step's work done or queued last.
     * adamw_pull: backend params -> host->params, and the moments -> m[n],
     * v[n] unless NULL; synchronous.
     * adamw_push: m[n], v[n] -> the backend's moments (a resume; the params
     * go by adapter_push). */
    int (*adamw_step)(Backend *b, BackendAdapter *a, const BackendAdamWStep *step,
                      double *grad_norm, Error *err);
    int (*adamw_pull)(Backend *b, BackendAdapter *a, float *m, float *v, Error *err);
    int (*adamw_push)(Backend *b, BackendAdapter *a, const float *m, const float *v, Error *err);

    /* ---- training / scoring ----
     * out_logps[s] = sum over t with label_mask[t] of
     *                log_softmax(logits[s, t-1])[tokens[s, t]]
     * for every sequence s of the batch, under adapter `a` (NULL: base);
     * with batch->sum_start, batch_n_sums(batch) such sums instead, each
     * sequence's labels cut at its marks (keep must then be 0).
     * Labels need 1 <= t < lengths[s]; padding never influences real
     * positions.  With keep_for_backward the backend keeps what backward
     * needs for this batch (replacing anything kept before); a call without
     * it leaves a kept forward alone, so reference or margin logps can be
     * computed between a policy's logps and its backward. */
    int (*logps)(Backend *b, BackendAdapter *a, const Batch *batch, float *out_logps,
                 int keep_for_backward, Error *err);
    /* After logps(a, batch, keep=1): adds d(sum_s dlogps[s]*logp_s)/d(params)
     * to a's gradient accumulator.  `batch` must be the same batch; the kept
     * state is released. */
    int (*backward)(Backend *b, BackendAdapter *a, const Batch *batch, const float *dlogps,
                    Error *err);
    /* After logps(a, batch, keep=1) on a batch of loss->n_pairs chosen then
     * loss->n_pairs rejected sequences: forms dL/dlogp from the logps that
     * call produced -- on the backend, with the arithmetic of
     * pref_loss_math.h, so no host round trip separates the forward from
     * the backward -- and goes on as backward does with it.  The logps are
     * not checked here: non-finite ones give non-finite gradients, which
     * the caller finds in the logps after its next sync (and adamw_step
     * refuses). */
    int (*pref_backward)(Backend *b, BackendAdapter *a, const Batch *batch,
                         const PrefLossSpec *loss, Error *err);

    /* ---- generation ----
     * A cache holds n_slots sequences of at most max_len tokens each. */
    int (*kv_create)(Backend *b, int n_slots, int max_len, KvCache **out, Error *err);
    void (*kv_free)(Backend *b, KvCache *kv);
    /* Resets every slot and runs the prompts: tokens [n_slots * stride],
     * slot i's prompt is tokens[i*stride .. i*stride + lengths[i]) (lengths >=
     * 1).  out_logits [n_slots * V]: the logits after each prompt's last token.
     * The same adapter must be used for the prefill and every later step. */
    int (*prefill)(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                   const int32_t *lengths, int stride, float *out_logits, Error *err);
    /* Appends tokens[i] to slot i for each slot with active[i] != 0 (active
     * NULL: all) and writes that slot's next-token logits to
     * out_logits[i*V ..]; inactive slots are left alone (rows untouched). */
    int (*decode_step)(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                       const uint8_t *active, float *out_logits, Error *err);

    /* ---- testing ----
     * Full logits for every position of the batch, out [n_seq * seq_len * V]
     * (padding rows 0).  Materialises [tokens x V]: for parity tests only.
     * May be NULL in a backend that does not offer it. */
    int (*debug_logits)(Backend *b, BackendAdapter *a, const Batch *batch, float *out,
                        Error *err);
} BackendOps;

struct Backend {
    const BackendOps *ops;
    LlamaConfig config;
    void *state; /* the implementation's */
};

/* ---- the CPU reference backend (fp32, OpenMP + BLAS) ---- */
typedef struct {
    /* Rows of the LM head evaluated at once: bounds the [rows x V] fp32
     * logits block that is ever alive.  0: a default (64). */
    int lm_head_chunk;
} CpuBackendOptions;

/* `model` is borrowed and must outlive the backend; opts may be NULL. */
int cpu_backend_create(const LlamaModel *model, const CpuBackendOptions *opts, Backend **out,
                       Error *err);

/* Thin wrappers so call sites read as verbs. */
static inline void backend_destroy(Backend *b) { if (b) b->ops->destroy(b); }
static inline int backend_sync(Backend *b, Error *err) { return b->ops->sync(b, err); }
static inline int backend_logps(Backend *b, BackendAdapter *a, const Batch *batch,
                                float *out_logps, int keep, Error *err)
{
    return b->ops->logps(b, a, batch, out_logps, keep, err);
}
static inline int backend_backward(Backend *b, BackendAdapter *a, const Batch *batch,
                                   const float *dlogps, Error *err)
{
    return b->ops->backward(b, a, batch, dlogps, err);
}
static inline int backend_pref_backward(Backend *b, BackendAdapter *a, const Batch *batch,
                                        const PrefLossSpec *loss, Error *err)
{
    return b->ops->pref_backward(b, a, batch, loss, err);
}

#endif

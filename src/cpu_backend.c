/* The CPU reference backend: fp32, OpenMP + BLAS, the readable definition of
 * the maths that the CUDA backend is checked against.  This file is the
 * BackendOps glue; the maths lives in cpu_forward.c, cpu_backward.c and the
 * kernels of cpu_kernels.h.  Adapters are shared with the host (the
 * BackendAdapter points at the caller's LoraAdapter), so push and pull are
 * no-ops and backward accumulates straight into LoraAdapter.grads. */
#include "backend_checks.h"
#include "cpu_kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grad_clip.h"

#define DEFAULT_LM_HEAD_CHUNK 64

static CpuState *state_of(Backend *b) { return b->state; }

static void cpu_destroy(Backend *b)
{
    CpuState *st = state_of(b);
    cpu_arena_free(&st->kept);
    cpu_arena_free(&st->scratch);
    free(st);
    free(b);
}

static int cpu_sync(Backend *b, Error *err)
{
    (void)b;
    (void)err;
    return 0; /* every call completes before it returns */
}

static int cpu_adapter_bind(Backend *b, LoraAdapter *host, BackendAdapter **out, Error *err)
{
    const LlamaConfig *c = &b->config;
    if (host->n_layers != c->num_hidden_layers)
        return error_set(err, "adapter has %d layers, the model %d", host->n_layers,
                         c->num_hidden_layers);
    for (int l = 0; l < host->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(host, l, (LoraTarget)t);
            if (!s) continue;
            int in = t == LORA_DOWN_PROJ ? c->intermediate_size : c->hidden_size;
            int out = t == LORA_K_PROJ || t == LORA_V_PROJ ? llama_kv_dim(c)
                      : t == LORA_GATE_PROJ || t == LORA_UP_PROJ ? c->intermediate_size
                                                                 : c->hidden_size;
            if (s->in_features != in || s->out_features != out)
                return error_set(err, "adapter layer %d %s is [%d -> %d], the model's [%d -> %d]",
                                 l, lora_target_name((LoraTarget)t), s->in_features,
                                 s->out_features, in, out);
        }
    }
    BackendAdapter *a = calloc(1, sizeof *a);
    if (!a) return error_set(err, "out of memory binding an adapter");
    a->host = host;
    *out = a;
    return 0;
}

static void cpu_moments_free(BackendAdapter *a);

static void cpu_adapter_unbind(Backend *b, BackendAdapter *a)
{
    CpuState *st = state_of(b);
    if (st->has_fwd && st->fwd.adapter == a) { /* a kept forward must not outlive it */
        st->has_fwd = 0;
        cpu_arena_reset(&st->kept);
    }
    cpu_moments_free(a);
    free(a);
}

/* ---- the optimizer: AdamW's moments live in the BackendAdapter ---- */

typedef struct {
    float *m, *v; /* [n_params] */
} CpuMoments;

static void cpu_moments_free(BackendAdapter *a)
{
    CpuMoments *mo = a->impl;
    if (!mo) return;
    free(mo->m);
    free(mo->v);
    free(mo);
    a->impl = NULL;
}

static CpuMoments *cpu_moments(BackendAdapter *a, Error *err)
{
    if (a->impl) return a->impl;
    size_t n = a->host->n_params ? a->host->n_params : 1;
    CpuMoments *mo = calloc(1, sizeof *mo);
    if (mo) {
        mo->m = calloc(n, sizeof *mo->m);
        mo->v = calloc(n, sizeof *mo->v);
    }
    a->impl = mo;
    if (!mo || !mo->m || !mo->v) {
        cpu_moments_free(a);
        error_set(err, "out of memory for AdamW state of %zu parameters", n);
        return NULL;
    }
    return mo;
}

static int cpu_adamw_step(Backend *b, BackendAdapter *a, const BackendAdamWStep *step,
                          double *grad_norm, Error *err)
{
    (void)b;
    LoraAdapter *h = a->host;
    CpuMoments *mo = cpu_moments(a, err);
    if (!mo) return -1;
    if (step->sum.fn && step->sum.fn(step->sum.ctx, h->grads, h->n_params, NULL, err)) return -1;
    /* grad_clip_norm leaves a non-finite gradient untouched: refused below */
    *grad_norm = grad_clip_norm(h->grads, h->n_params, step->max_grad_norm);
    if (!isfinite(*grad_norm)) return error_set(err, "the gradient norm is not finite (%g)", *grad_norm);
    AdamWScalars sc = adamw_scalars(&step->cfg, step->t, step->lr);
    adamw_apply(&sc, h->params, h->grads, mo->m, mo->v, h->n_params);
    return 0;
}

static int cpu_adamw_pull(Backend *b, BackendAdapter *a, float *m, float *v, Error *err)
{
    (void)b;
    size_t n = a->host->n_params;
    CpuMoments *mo = cpu_moments(a, err); /* params are the host's own */
    if (!mo) return -1;
    if (m) memcpy(m, mo->m, n * sizeof *m);
    if (v) memcpy(v, mo->v, n * sizeof *v);
    return 0;
}

static int cpu_adamw_push(Backend *b, BackendAdapter *a, const float *m, const float *v, Error *err)
{
    (void)b;
    size_t n = a->host->n_params;
    CpuMoments *mo = cpu_moments(a, err);
    if (!mo) return -1;
    memcpy(mo->m, m, n * sizeof *m);
    memcpy(mo->v, v, n * sizeof *v);
    return 0;
}

static int cpu_adapter_noop(Backend *b, BackendAdapter *a, Error *err)
{
    (void)b;
    (void)a;
    (void)err;
    return 0; /* params and grads are the host's own buffers */
}

static int cpu_adapter_zero_grads(Backend *b, BackendAdapter *a, Error *err)
{
    (void)b;
    (void)err;
    lora_adapter_zero_grads(a->host);
    return 0;
}

/* Sums label log-probs per sequence (double, in row order). */
static void sum_labels(const CpuLabels *labels, const float *logp, int n_sums, float *out)
{
    double *acc = calloc((size_t)n_sums, sizeof *acc);
    for (int s = 0; s < n_sums; s++) out[s] = 0.0f;
    if (!acc) { /* fall back to fp32 sums rather than fail a finished forward */
        for (int i = 0; i < labels->n; i++) out[labels->sum[i]] += logp[i];
        return;
    }
    for (int i = 0; i < labels->n; i++) acc[labels->sum[i]] += logp[i];
    for (int s = 0; s < n_sums; s++) out[s] = (float)acc[s];
    free(acc);
}

static int cpu_logps(Backend *b, BackendAdapter *a, const Batch *batch, float *out_logps,
                     int keep, Error *err)
{
    if (backend_check_logps("cpu", batch, keep, err)) return -1;
    CpuState *st = state_of(b);
    CpuForward local, *f = keep ? &st->fwd : &local;
    CpuArena *arena = keep ? &st->kept : &st->scratch;
    if (keep) {
        st->has_fwd = 0;
        cpu_arena_reset(&st->kept);
    }
    cpu_arena_reset(&st->scratch);
    memset(f, 0, sizeof *f);
    f->keep = keep;
    if (cpu_rows_from_batch(&b->config, batch, &f->rows, &f->labels, arena, err) ||
        cpu_model_forward(st->model, a, f, NULL, arena, err))
        return error_prefix(err, "cpu logps: ");
    if (keep) f->labels.dhn = cpu_arena_floats(arena, (size_t)f->labels.n * b->config.hidden_size);
    float *logp = cpu_arena_floats(&st->scratch, (size_t)f->labels.n);
    float *head = cpu_arena_floats(&st->scratch, cpu_logprobs_scratch(&b->config, st->chunk));
    if (!logp || !head || (keep && !f->labels.dhn))
        return error_set(err, "cpu logps: out of memory for the LM head");
    cpu_logprobs_forward(st->model, st->chunk, f->x_final, &f->labels, logp, head);
    sum_labels(&f->labels, logp, batch_n_sums(batch), out_logps);
    if (keep) {
        f->seq_logp = cpu_arena_floats(arena, (size_t)batch->n_seq);
        if (!f->seq_logp) return error_set(err, "cpu logps: out of memory for the kept logps");
        memcpy(f->seq_logp, out_logps, (size_t)batch->n_seq * sizeof *f->seq_logp);
        f->n_seq = batch->n_seq;
        f->seq_len = batch->seq_len;
        st->has_fwd = 1;
    }
    return 0;
}

static int cpu_backward(Backend *b, BackendAdapter *a, const Batch *batch, const float *dlogps,
                        Error *err)
{
    CpuState *st = state_of(b);
    if (backend_check_backward("cpu", a, st->has_fwd, st->fwd.adapter, st->fwd.n_seq, st->fwd.seq_len,
                               batch, err))
        return -1;
    cpu_arena_reset(&st->scratch);
    int rc = cpu_model_backward(st->model, st->chunk, a, &st->fwd, dlogps, &st->scratch, err);
    st->has_fwd = 0;
    cpu_arena_reset(&st->kept);
    return rc ? error_prefix(err, "cpu backward: ") : 0;
}

static int cpu_pref_backward(Backend *b, BackendAdapter *a, const Batch *batch,
                             const PrefLossSpec *loss, Error *err)
{
    CpuState *st = state_of(b);
    if (backend_check_pref_backward("cpu", a, st->has_fwd, st->fwd.adapter, st->fwd.n_seq,
                                    st->fwd.seq_len, batch, loss, err))
        return -1;
    /* in the kept arena: backward resets the scratch one before reading it */
    float *d = cpu_arena_floats(&st->kept, (size_t)batch->n_seq);
    if (!d) return error_set(err, "cpu preference backward: out of memory");
    pref_loss_dlogps(loss, st->fwd.seq_logp, d);
    return cpu_backward(b, a, batch, d, err);
}

static int cpu_debug_logits(Backend *b, BackendAdapter *a, const Batch *batch, float *out,
                            Error *err)
{
    CpuState *st = state_of(b);
    const LlamaConfig *c = &b->config;
    CpuForward f;
    memset(&f, 0, sizeof f);
    cpu_arena_reset(&st->scratch);
    if (cpu_rows_from_batch(c, batch, &f.rows, NULL, &st->scratch, err) ||
        cpu_model_forward(st->model, a, &f, NULL, &st->scratch, err))
        return error_prefix(err, "cpu logits: ");
    int32_t *idx = cpu_arena_alloc(&st->scratch, (size_t)f.rows.n_rows * sizeof *idx);
    float *head = cpu_arena_floats(&st->scratch, cpu_logprobs_scratch(c, st->chunk));
    if (!idx || !head) return error_set(err, "cpu logits: out of memory");
    for (int r = 0; r < f.rows.n_rows; r++) idx[r] = r;
    size_t v = c->vocab_size;
    memset(out, 0, (size_t)batch->n_seq * batch->seq_len * v * sizeof(float));
    for (int s = 0; s < batch->n_seq; s++)
        cpu_head_logits(st->model, st->chunk, f.x_final, batch->lengths[s],
                        idx + f.rows.start[s], out + (size_t)s * batch->seq_len * v, head);
    return 0;
}

static const BackendOps cpu_ops = {
    .name = "cpu",
    .destroy = cpu_destroy,
    .sync = cpu_sync,
    .adapter_bind = cpu_adapter_bind,
    .adapter_unbind = cpu_adapter_unbind,
    .adapter_push = cpu_adapter_noop,
    .adapter_pull_grads = cpu_adapter_noop,
    .adapter_zero_grads = cpu_adapter_zero_grads,
    .adamw_step = cpu_adamw_step,
    .adamw_pull = cpu_adamw_pull,
    .adamw_push = cpu_adamw_push,
    .logps = cpu_logps,
    .backward = cpu_backward,
    .pref_backward = cpu_pref_backward,
    .kv_create = cpu_kv_create,
    .kv_free = cpu_kv_free,
    .prefill = cpu_prefill,
    .decode_step = cpu_decode_step,
    .debug_logits = cpu_debug_logits,
};

static int check_config(const LlamaConfig *c, Error *err)
{
    if (c->hidden_size <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 ||
        c->num_hidden_layers <= 0 || c->vocab_size <= 0 || c->intermediate_size <= 0)
        return error_set(err, "cpu backend: model config has a non-positive size");
    if (c->hidden_size % c->num_attention_heads || llama_head_dim(c) % 2 ||
        c->num_attention_heads % c->num_key_value_heads)
        return error_set(err, "cpu backend: %d heads (%d key/value) do not divide hidden size "
                         "%d into even head dims", c->num_attention_heads,
                         c->num_key_value_heads, c->hidden_size);
    return 0;
}

int cpu_backend_create(const LlamaModel *model, const CpuBackendOptions *opts, Backend **out,
                       Error *err)
{
    if (check_config(&model->config, err)) return -1;
    Backend *b = calloc(1, sizeof *b);
    CpuState *st = calloc(1, sizeof *st);
    if (!b || !st) {
        free(b);
        free(st);
        return error_set(err, "out of memory creating the cpu backend");
    }
    st->model = model;
    st->chunk = opts && opts->lm_head_chunk > 0 ? opts->lm_head_chunk : DEFAULT_LM_HEAD_CHUNK;
    b->ops = &cpu_ops;
    b->config = model->config;
    b->state = st;
    *out = b;
    return 0;
}

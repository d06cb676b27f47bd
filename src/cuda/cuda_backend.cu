/* The CUDA backend: BackendOps on one GPU and one stream (backend.h).
 * This file is the glue: creation (bf16 upload of the fp32 host model),
 * adapters (fp32 master params + grads and a bf16 copy on the device),
 * logps / backward, outputs and sync.  The maths lives in cuda_model.cu and
 * the kernels of cuda_kernels.cuh.
 *
 * Synchronisation: inputs are staged by async copies from pageable memory
 * (copied out before the call returns); outputs are copied device -> a
 * pinned buffer asynchronously and from there into the caller's memory at
 * sync; a training step (logps -> pref_backward, the loss's dL/dlogp formed
 * on the device) queues everything and waits on the host once at its end. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

extern "C" {
#include "backend_checks.h"
#include "cuda_backend.h"
}

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PINNED_MIN ((size_t)1 << 20)

/* ---------------- outputs ---------------- */

int cu_flush(CuState *st, Error *err)
{
    CU_TRY(cudaStreamSynchronize(st->stream));
    if (st->prof) TRY(cu_prof_resolve(st, err));
    for (int i = 0; i < st->n_pend; i++)
        memcpy(st->pend[i].dst, st->pinned + st->pend[i].src_off, st->pend[i].bytes);
    st->n_pend = 0;
    st->pinned_used = 0;
    return 0;
}

int cu_output(CuState *st, void *dst, const void *src_dev, size_t bytes, Error *err)
{
    size_t need = (bytes + 255) / 256 * 256;
    if (st->pinned_used + need > st->pinned_cap) {
        /* Full: wait for the queued copies, then make room for twice what
         * was asked at once, so that a step with the same outputs (a
         * decode step's logits, slot by slot) never waits here again. */
        size_t demand = st->pinned_used + need;
        TRY(cu_flush(st, err));
        if (demand > st->pinned_cap) {
            size_t cap = 2 * demand;
            cap = cap < PINNED_MIN ? PINNED_MIN : cap;
            if (st->pinned) CU_TRY(cudaFreeHost(st->pinned));
            st->pinned = NULL;
            st->pinned_cap = 0;
            CU_TRY(cudaMallocHost((void **)&st->pinned, cap));
            st->pinned_cap = cap;
        }
    }
    if (st->n_pend == st->cap_pend) {
        int cap = st->cap_pend ? 2 * st->cap_pend : 64;
        CuPending *p = (CuPending *)realloc(st->pend, (size_t)cap * sizeof *p);
        if (!p) return error_set(err, "out of memory queueing an output");
        st->pend = p;
        st->cap_pend = cap;
    }
    size_t off = st->pinned_used;
    CU_TRY(cudaMemcpyAsync(st->pinned + off, src_dev, bytes, cudaMemcpyDeviceToHost, st->stream));
    st->pend[st->n_pend++] = CuPending{dst, off, bytes};
    st->pinned_used += need;
    return 0;
}

static int cu_sync(Backend *b, Error *err)
{
    if (cu_flush(cu_state(b), err)) return error_prefix(err, "cuda sync: ");
    return 0;
}

/* ---------------- adapters ---------------- */

static int check_adapter_shape(const LlamaConfig *c, const LoraAdapter *host, Error *err)
{
    if (host->n_layers != c->num_hidden_layers)
        return error_set(err, "adapter has %d layers, the model %d", host->n_layers,
                         c->num_hidden_layers);
    for (int l = 0; l < host->n_layers; l++)
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
    return 0;
}

static void adapter_free(CuState *st, CuAdapter *ca)
{
    if (!ca) return;
    cudaStreamSynchronize(st->stream); /* queued work may still read it */
    if (ca->params) cudaFree(ca->params);
    if (ca->grads) cudaFree(ca->grads);
    if (ca->pbf) cudaFree(ca->pbf);
    cu_adamw_free(ca);
    if (ca->pinned_params) cudaHostUnregister(ca->pinned_params);
    if (ca->pinned_grads) cudaHostUnregister(ca->pinned_grads);
    free(ca);
}

static int cu_adapter_push(Backend *b, BackendAdapter *a, Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    CU_TRY(cudaMemcpyAsync(ca->params, a->host->params, ca->n * sizeof(float),
                           cudaMemcpyHostToDevice, st->stream));
    return cu_to_bf16(st, ca->n, ca->params, ca->pbf, err);
}

static int cu_adapter_zero_grads(Backend *b, BackendAdapter *a, Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    CU_TRY(cudaMemsetAsync(ca->grads, 0, ca->n * sizeof(float), st->stream));
    return 0;
}

static int cu_adapter_pull_grads(Backend *b, BackendAdapter *a, Error *err)
{
    CuState *st = cu_state(b);
    CuAdapter *ca = (CuAdapter *)a->impl;
    CU_TRY(cudaMemcpyAsync(a->host->grads, ca->grads, ca->n * sizeof(float),
                           cudaMemcpyDeviceToHost, st->stream));
    CU_TRY(cudaStreamSynchronize(st->stream));
    return 0;
}

static int cu_adapter_bind(Backend *b, LoraAdapter *host, BackendAdapter **out, Error *err)
{
    CuState *st = cu_state(b);
    TRY(check_adapter_shape(&st->c, host, err));
    BackendAdapter *a = (BackendAdapter *)calloc(1, sizeof *a);
    CuAdapter *ca = (CuAdapter *)calloc(1, sizeof *ca);
    if (!a || !ca) {
        free(a);
        free(ca);
        return error_set(err, "out of memory binding an adapter");
    }
    a->host = host;
    a->impl = ca;
    ca->host = host;
    ca->n = host->n_params;
    size_t n = ca->n ? ca->n : 1;
    cudaError_t e = cudaMalloc((void **)&ca->params, n * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ca->grads, n * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&ca->pbf, n * sizeof(bf16));
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        adapter_free(st, ca);
        free(a);
        return error_set(err, "binding an adapter of %zu params: %s", ca->n, cudaGetErrorString(e));
    }
    /* Pinned host params and grads: the once-a-step pull and push then run
     * at full PCIe speed.  Where pinning is refused, pageable copies work. */
    if (cudaHostRegister(host->params, n * sizeof(float), cudaHostRegisterDefault) == cudaSuccess)
        ca->pinned_params = host->params;
    if (cudaHostRegister(host->grads, n * sizeof(float), cudaHostRegisterDefault) == cudaSuccess)
        ca->pinned_grads = host->grads;
    (void)cudaGetLastError();
    if (cu_adapter_push(b, a, err) || cu_adapter_zero_grads(b, a, err)) {
        adapter_free(st, ca);
        free(a);
        return error_prefix(err, "binding an adapter: ");
    }
    *out = a;
    return 0;
}

static void cu_adapter_unbind(Backend *b, BackendAdapter *a)
{
    CuState *st = cu_state(b);
    if (!a) return;
    cu_decode_graph_drop(st); /* a captured step may read its parameters */
    if (st->has_fwd && st->fwd.adapter == a) { /* a kept forward must not outlive it */
        st->has_fwd = 0;
        cu_arena_reset(&st->kept, NULL);
    }
    adapter_free(st, (CuAdapter *)a->impl);
    free(a);
}

/* ---------------- logps / backward ---------------- */

static int cu_logps(Backend *b, BackendAdapter *a, const Batch *batch, float *out_logps, int keep,
                    Error *err)
{
    if (backend_check_logps("cuda", batch, keep, err)) return -1;
    CuState *st = cu_state(b);
    CuForward local, *f = keep ? &st->fwd : &local;
    CuArena *arena = keep ? &st->kept : &st->scratch;
    int n_sums = batch_n_sums(batch);
    if (keep) {
        st->has_fwd = 0;
        if (cu_arena_reset(&st->kept, err)) return error_prefix(err, "cuda logps: ");
    }
    if (cu_arena_reset(&st->scratch, err)) return error_prefix(err, "cuda logps: ");
    memset(f, 0, sizeof *f);
    f->keep = keep;
    if (cu_rows_from_batch(st, batch, &f->rows, &f->lab, arena, err) ||
        cu_rope_tables(st, f->rows.max_q, err) ||
        cu_model_forward(st, a, f, NULL, arena, err))
        return error_prefix(err, "cuda logps: ");
    if (keep) {
        f->lab.dhn = cu_alloc<float>(arena, (size_t)(f->lab.n ? f->lab.n : 1) * st->c.hidden_size);
        if (cu_arena_check(arena, "the head direction", err)) return error_prefix(err, "cuda logps: ");
    }
    if (st->prof && cu_prof_mark(st, CU_PH_HEAD_FWD, err)) return error_prefix(err, "cuda logps: ");
    /* kept with the forward: pref_backward reads them */
    float *seq = cu_alloc<float>(arena, (size_t)n_sums);
    if (cu_arena_check(arena, "logps", err) ||
        cu_logprobs_forward(st, f, keep, seq, err) ||
        cu_output(st, out_logps, seq, (size_t)n_sums * sizeof(float), err))
        return error_prefix(err, "cuda logps: ");
    if (st->prof && cu_prof_mark(st, CU_PH_OTHER, err)) return error_prefix(err, "cuda logps: ");
    if (keep) {
        f->seq_logp = seq;
        f->n_seq = batch->n_seq;
        f->seq_len = batch->seq_len;
        st->has_fwd = 1;
    }
    return 0;
}

/* The kept forward's backward from dlogps[n_seq] that upload() puts on the
 * device (host ones, or formed there), then the kept state released. */
typedef int (*DlogpsSource)(CuState *st, const void *ctx, float *d, Error *err);

static int backward_from(CuState *st, BackendAdapter *a, const Batch *batch, DlogpsSource upload,
                         const void *ctx, Error *err)
{
    int rc = cu_arena_reset(&st->scratch, err);
    float *d = rc ? NULL : cu_alloc<float>(&st->scratch, (size_t)batch->n_seq);
    if (!rc) rc = cu_arena_check(&st->scratch, "dlogps", err);
    if (!rc) rc = upload(st, ctx, d, err);
    if (!rc) rc = cu_model_backward(st, a, &st->fwd, d, &st->scratch, err);
    st->has_fwd = 0;
    Error e2;
    if (cu_arena_reset(&st->kept, rc ? &e2 : err) && !rc) rc = -1;
    return rc;
}

struct HostDlogps {
    const float *h;
    size_t n;
};

static int upload_dlogps(CuState *st, const void *ctx, float *d, Error *err)
{
    const HostDlogps *src = (const HostDlogps *)ctx;
    cudaError_t e = cudaMemcpyAsync(d, src->h, src->n * sizeof(float), cudaMemcpyHostToDevice, st->stream);
    return e == cudaSuccess ? 0 : error_set(err, "uploading dlogps: %s", cudaGetErrorString(e));
}

static int form_pref_dlogps(CuState *st, const void *ctx, float *d, Error *err)
{
    return cu_pref_dlogps(st, (const PrefLossSpec *)ctx, st->fwd.seq_logp, d, &st->scratch, err);
}

static int cu_backward(Backend *b, BackendAdapter *a, const Batch *batch, const float *dlogps,
                       Error *err)
{
    CuState *st = cu_state(b);
    if (backend_check_backward("cuda", a, st->has_fwd, st->fwd.adapter, st->fwd.n_seq, st->fwd.seq_len,
                               batch, err))
        return -1;
    HostDlogps src = {dlogps, (size_t)batch->n_seq};
    return backward_from(st, a, batch, upload_dlogps, &src, err) ? error_prefix(err, "cuda backward: ") : 0;
}

static int cu_pref_backward(Backend *b, BackendAdapter *a, const Batch *batch, const PrefLossSpec *loss,
                            Error *err)
{
    CuState *st = cu_state(b);
    if (backend_check_pref_backward("cuda", a, st->has_fwd, st->fwd.adapter, st->fwd.n_seq,
                                    st->fwd.seq_len, batch, loss, err))
        return -1;
    return backward_from(st, a, batch, form_pref_dlogps, loss, err)
               ? error_prefix(err, "cuda preference backward: ")
               : 0;
}

/* For parity tests: every position's logits, synchronously. */
static int cu_debug_logits(Backend *b, BackendAdapter *a, const Batch *batch, float *out,
                           Error *err)
{
    CuState *st = cu_state(b);
    const LlamaConfig *c = &st->c;
    size_t v = c->vocab_size;
    CuForward f;
    memset(&f, 0, sizeof f);
    TRY(cu_flush(st, err));
    if (cu_arena_reset(&st->scratch, err) ||
        cu_rows_from_batch(st, batch, &f.rows, NULL, &st->scratch, err) ||
        cu_rope_tables(st, f.rows.max_q, err) ||
        cu_model_forward(st, a, &f, NULL, &st->scratch, err))
        return error_prefix(err, "cuda logits: ");
    int n = f.rows.n_rows;
    int32_t *idx = (int32_t *)malloc((size_t)n * sizeof *idx);
    float *host = (float *)malloc((size_t)n * v * sizeof *host);
    if (!idx || !host) {
        free(idx);
        free(host);
        return error_set(err, "cuda logits: out of memory");
    }
    for (int r = 0; r < n; r++) idx[r] = r;
    int32_t *didx = cu_upload_ints(st, idx, (size_t)n, &st->scratch, err);
    float *logits = cu_alloc<float>(&st->scratch, (size_t)n * v);
    int rc = !didx || cu_arena_check(&st->scratch, "logits", err) ||
             cu_head_logits(st, f.x_final, n, didx, logits, err);
    cudaError_t e = cudaSuccess;
    if (!rc) e = cudaMemcpyAsync(host, logits, (size_t)n * v * sizeof(float),
                                 cudaMemcpyDeviceToHost, st->stream);
    if (!rc && e == cudaSuccess) e = cudaStreamSynchronize(st->stream);
    if (!rc && e != cudaSuccess) rc = error_set(err, "cuda logits: %s", cudaGetErrorString(e));
    if (!rc) {
        memset(out, 0, (size_t)batch->n_seq * batch->seq_len * v * sizeof(float));
        int r = 0;
        for (int s = 0; s < batch->n_seq; s++)
            for (int t = 0; t < batch->lengths[s]; t++, r++)
                memcpy(out + ((size_t)s * batch->seq_len + t) * v, host + (size_t)r * v,
                       v * sizeof(float));
    }
    free(idx);
    free(host);
    return rc ? -1 : 0;
}

/* ---------------- creation ---------------- */

static void cu_destroy(Backend *b)
{
    if (!b) return;
    CuState *st = cu_state(b);
    if (st) {
        if (st->stream) cudaStreamSynchronize(st->stream);
        cu_decode_graph_drop(st);
        cu_arena_free(&st->kept);
        cu_arena_free(&st->scratch);
        if (st->attn_ws) cudaFreeAsync(st->attn_ws, st->stream);
        if (st->split_ws) cudaFreeAsync(st->split_ws, st->stream);
        cu_prof_free(st->prof);
        if (st->stream) cudaStreamSynchronize(st->stream);
        if (st->weights) cudaFree(st->weights);
        if (st->rope_cos) cudaFree(st->rope_cos);
        if (st->pinned) cudaFreeHost(st->pinned);
        if (st->blas) cublasDestroy(st->blas);
        if (st->stream) cudaStreamDestroy(st->stream);
        free(st->layers);
        free(st->kept_layers);
        free(st->pend);
        free(st->hints);
        free(st);
    }
    free(b);
}

static const BackendOps cuda_ops = {
    "cuda",
    cu_destroy,
    cu_sync,
    cu_adapter_bind,
    cu_adapter_unbind,
    cu_adapter_push,
    cu_adapter_pull_grads,
    cu_adapter_zero_grads,
    cu_adamw_step,
    cu_adamw_pull,
    cu_adamw_push,
    cu_logps,
    cu_backward,
    cu_pref_backward,
    cu_kv_create,
    cu_kv_free,
    cu_prefill,
    cu_decode_step,
    cu_debug_logits,
};

static int check_config(const LlamaConfig *c, Error *err)
{
    if (c->hidden_size <= 0 || c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 ||
        c->num_hidden_layers <= 0 || c->vocab_size <= 0 || c->intermediate_size <= 0)
        return error_set(err, "cuda backend: model config has a non-positive size");
    if (c->hidden_size % c->num_attention_heads || llama_head_dim(c) % 2 ||
        c->num_attention_heads % c->num_key_value_heads)
        return error_set(err, "cuda backend: %d heads (%d key/value) do not divide hidden size "
                         "%d into even head dims", c->num_attention_heads,
                         c->num_key_value_heads, c->hidden_size);
    if (llama_head_dim(c) > 256)
        return error_set(err, "cuda backend: head_dim %d is above 256", llama_head_dim(c));
    return 0;
}

/* Converts one fp32 host tensor into bf16 at dst through a device staging
 * buffer (stream-ordered, so the staging buffer is reused safely). */
static int upload_bf16(CuState *st, const float *h, size_t n, bf16 *dst, float *stage,
                       size_t stage_n, Error *err)
{
    for (size_t i = 0; i < n; i += stage_n) {
        size_t m = n - i < stage_n ? n - i : stage_n;
        CU_TRY(cudaMemcpyAsync(stage, h + i, m * sizeof(float), cudaMemcpyHostToDevice, st->stream));
        TRY(cu_to_bf16(st, m, stage, dst + i, err));
    }
    return 0;
}

static size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

/* Places every weight in one device block and sets the pointers of st;
 * *largest is the size of the biggest matrix (for staging). */
static int weights_layout(CuState *st, int tied, size_t *largest, Error *err)
{
    const LlamaConfig *c = &st->c;
    size_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size, v = c->vocab_size;
    int L = c->num_hidden_layers;
    size_t mat[LORA_N_TARGETS] = {d * d, kv * d, kv * d, d * d, f * d, f * d, d * f};
    size_t bytes = align_up(v * d * sizeof(bf16)) + (tied ? 0 : align_up(v * d * sizeof(bf16))) +
                   align_up((2 * (size_t)L + 1) * d * sizeof(float));
    *largest = v * d;
    for (int t = 0; t < LORA_N_TARGETS; t++) {
        bytes += (size_t)L * align_up(mat[t] * sizeof(bf16));
        *largest = mat[t] > *largest ? mat[t] : *largest;
    }
    CU_TRY(cudaMalloc(&st->weights, bytes));
    char *p = (char *)st->weights;
    st->embed = st->lm_head = (bf16 *)p;
    p += align_up(v * d * sizeof(bf16));
    if (!tied) {
        st->lm_head = (bf16 *)p;
        p += align_up(v * d * sizeof(bf16));
    }
    float *norms = (float *)p;
    p += align_up((2 * (size_t)L + 1) * d * sizeof(float));
    for (int l = 0; l < L; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            st->layers[l].w[t] = (bf16 *)p;
            p += align_up(mat[t] * sizeof(bf16));
        }
        st->layers[l].ln1 = norms + 2 * (size_t)l * d;
        st->layers[l].ln2 = norms + (2 * (size_t)l + 1) * d;
    }
    st->norm = norms + 2 * (size_t)L * d;
    st->n_norm_values = (2 * (size_t)L + 1) * d;
    return 0;
}

static size_t matrix_size(const LlamaConfig *c, LoraTarget t)
{
    size_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    return t == LORA_K_PROJ || t == LORA_V_PROJ ? kv * d
           : t == LORA_GATE_PROJ || t == LORA_UP_PROJ || t == LORA_DOWN_PROJ ? f * d : d * d;
}

static int upload_weights(CuState *st, Error *err)
{
    const LlamaConfig *c = &st->c;
    const LlamaWeights *w = &st->model->weights;
    size_t d = c->hidden_size, v = c->vocab_size, largest;
    int L = c->num_hidden_layers, tied = w->lm_head == w->embed_tokens;
    TRY(weights_layout(st, tied, &largest, err));
    size_t stage_n = largest < ((size_t)32 << 20) ? largest : ((size_t)32 << 20);
    float *stage = NULL;
    CU_TRY(cudaMalloc((void **)&stage, stage_n * sizeof(float)));
    int rc = upload_bf16(st, w->embed_tokens, v * d, (bf16 *)st->embed, stage, stage_n, err);
    if (!rc && !tied) rc = upload_bf16(st, w->lm_head, v * d, (bf16 *)st->lm_head, stage, stage_n, err);
    for (int l = 0; !rc && l < L; l++) {
        const LlamaLayerWeights *lw = &w->layers[l];
        const float *src[LORA_N_TARGETS] = {lw->q_proj, lw->k_proj, lw->v_proj, lw->o_proj,
                                            lw->gate_proj, lw->up_proj, lw->down_proj};
        for (int t = 0; !rc && t < LORA_N_TARGETS; t++)
            rc = upload_bf16(st, src[t], matrix_size(c, (LoraTarget)t), (bf16 *)st->layers[l].w[t],
                             stage, stage_n, err);
        cudaError_t e = cudaMemcpyAsync((float *)st->layers[l].ln1, lw->input_layernorm,
                                        d * sizeof(float), cudaMemcpyHostToDevice, st->stream);
        if (e == cudaSuccess)
            e = cudaMemcpyAsync((float *)st->layers[l].ln2, lw->post_attention_layernorm,
                                d * sizeof(float), cudaMemcpyHostToDevice, st->stream);
        if (!rc && e != cudaSuccess) rc = error_set(err, "uploading norms: %s", cudaGetErrorString(e));
    }
    if (!rc) {
        cudaError_t e = cudaMemcpyAsync((float *)st->norm, w->norm, d * sizeof(float),
                                        cudaMemcpyHostToDevice, st->stream);
        if (e == cudaSuccess) e = cudaStreamSynchronize(st->stream);
        if (e != cudaSuccess) rc = error_set(err, "uploading weights: %s", cudaGetErrorString(e));
    }
    cudaStreamSynchronize(st->stream);
    cudaFree(stage);
    return rc;
}

/* Random weights made on the device (benchmarks of the 7B shape need no
 * 27 GB host model): every matrix ~ std * N(0, 1) by a counter-based hash,
 * norms 1. */
static int random_weights(CuState *st, uint64_t seed, float std, Error *err)
{
    const LlamaConfig *c = &st->c;
    size_t largest, vd = (size_t)c->vocab_size * c->hidden_size;
    TRY(weights_layout(st, 0, &largest, err));
    TRY(cu_fill_normal(st, (bf16 *)st->embed, vd, seed, std, err));
    TRY(cu_fill_normal(st, (bf16 *)st->lm_head, vd, seed + 1, std, err));
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++)
            TRY(cu_fill_normal(st, (bf16 *)st->layers[l].w[t], matrix_size(c, (LoraTarget)t),
                               seed + 2 + (uint64_t)l * LORA_N_TARGETS + t, std, err));
    TRY(cu_fill_const(st, (float *)st->layers[0].ln1, st->n_norm_values, 1.0f, err));
    CU_TRY(cudaStreamSynchronize(st->stream));
    return 0;
}

/* A number from the environment in [lo, hi]: unset gives `dflt`, anything
 * else is an error naming the variable. */
static int number_switch(const char *name, int lo, int hi, int dflt, int *out, Error *err)
{
    const char *v = getenv(name);
    *out = dflt;
    if (!v) return 0;
    char *end;
    long n = strtol(v, &end, 10);
    if (end == v || *end || n < lo || n > hi)
        return error_set(err, "%s=%s: expected a number from %d to %d", name, v, lo, hi);
    *out = (int)n;
    return 0;
}

/* MODPO_CUDA_GEMV=unfused and MODPO_CUDA_GEMV_ROWS=N (comparison switches):
 * a value that means nothing is an error, not a silent default. */
static int gemv_switches(CuState *st, Error *err)
{
    const char *gemv = getenv("MODPO_CUDA_GEMV");
    if (gemv && strcmp(gemv, "unfused") != 0 && strcmp(gemv, "fused") != 0)
        return error_set(err, "MODPO_CUDA_GEMV=%s: expected fused or unfused", gemv);
    st->gemv_unfused = gemv && strcmp(gemv, "unfused") == 0;
    return number_switch("MODPO_CUDA_GEMV_ROWS", 0, GEMV_MAX_ROWS, GEMV_DEFAULT_ROWS, &st->gemv_max_rows, err);
}

/* A comparison switch of the environment: unset gives `dflt`, and a value
 * other than 0 or 1 is an error, not a silent default. */
static int on_off_switch(const char *name, int dflt, int *out, Error *err)
{
    const char *v = getenv(name);
    if (v && strcmp(v, "0") != 0 && strcmp(v, "1") != 0)
        return error_set(err, "%s=%s: expected 0 or 1", name, v);
    *out = v ? strcmp(v, "1") == 0 : dflt;
    return 0;
}

static int create(CuState *st, const LlamaModel *model, const LlamaConfig *config, int device,
                  uint64_t seed, Error *err)
{
    st->model = model;
    st->c = *config;
    st->device = device;
    CU_TRY(cudaSetDevice(device));
    CU_TRY(cudaDeviceGetAttribute(&st->n_sms, cudaDevAttrMultiProcessorCount, device));
    CU_TRY(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking));
    CUBLAS_TRY(cublasCreate(&st->blas));
    CUBLAS_TRY(cublasSetStream(st->blas, st->stream));
    /* bf16-output GEMMs reduce split-K partial sums in fp32, not bf16
     * (MODPO_CUDA_BLAS_MATH=default allows cuBLAS's reduced-precision
     * reductions, for comparison). */
    const char *math = getenv("MODPO_CUDA_BLAS_MATH");
    if (!math || strcmp(math, "default") != 0)
        CUBLAS_TRY(cublasSetMathMode(st->blas, (cublasMath_t)(CUBLAS_DEFAULT_MATH |
                                                   CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION)));
    /* Keep freed arena blocks in the pool: steady-state steps then never
     * return memory to the driver and take it back. */
    cudaMemPool_t pool;
    CU_TRY(cudaDeviceGetDefaultMemPool(&pool, device));
    uint64_t threshold = UINT64_MAX;
    CU_TRY(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
    st->kept.stream = st->scratch.stream = st->stream;
    const char *poison = getenv("MODPO_CUDA_POISON");
    st->poison = st->kept.poison = st->scratch.poison = poison && strcmp(poison, "1") == 0;
    const char *attn = getenv("MODPO_CUDA_ATTENTION");
    st->attn_flash_only = attn && strcmp(attn, "flash") == 0;
    st->attn_scores = attn && strcmp(attn, "gemm") == 0;
    TRY(gemv_switches(st, err));
    TRY(on_off_switch("MODPO_CUDA_GRAPHS", 1, &st->graphs, err));
    /* Off unless asked for: with dependents launched at a GEMV's start
     * (now 2) it moved a batch-1 step by -3% on one H100 and +3% on another
     * (bench/NOTES-gpu.md step 16); 1 launches them at its blocks' end. */
    const char *pdl = getenv("MODPO_CUDA_PDL");
    if (pdl && strcmp(pdl, "0") && strcmp(pdl, "1") && strcmp(pdl, "2") && strcmp(pdl, "3"))
        return error_set(err, "MODPO_CUDA_PDL=%s: expected 0, 1, 2 or 3", pdl);
    st->pdl = pdl ? atoi(pdl) : 0;
    TRY(on_off_switch("MODPO_CUDA_STEP_ATTN", 1, &st->step_attn, err));
    TRY(number_switch("MODPO_CUDA_STEP_SPLITS", 0, STEP_MAX_SPLITS, 0, &st->step_splits, err));
    TRY(on_off_switch("MODPO_CUDA_STEP_MERGE", 1, &st->step_merge, err));
    TRY(on_off_switch("MODPO_CUDA_STEP_PREFETCH", 0, &st->step_prefetch, err));
    TRY(on_off_switch("MODPO_CUDA_GEMV_GLU", 1, &st->gemv_glu, err));
    TRY(on_off_switch("MODPO_CUDA_GEMV_PREFETCH", 0, &st->gemv_prefetch, err));
    const char *attn_mb = getenv("MODPO_CUDA_ATTENTION_MB");
    if (attn_mb && atol(attn_mb) > 0) st->attn_ws_limit = (size_t)atol(attn_mb) << 20;
    const char *prof = getenv("MODPO_CUDA_PROFILE");
    if (prof && strcmp(prof, "1") == 0) {
        st->prof = (CuProfile *)calloc(1, sizeof *st->prof);
        if (!st->prof) return error_set(err, "out of memory");
    }
    int L = st->c.num_hidden_layers;
    st->layers = (CuLayerWeights *)calloc((size_t)L, sizeof *st->layers);
    st->kept_layers = (CuActs *)calloc((size_t)L, sizeof *st->kept_layers);
    if (!st->layers || !st->kept_layers) return error_set(err, "out of memory");
    TRY(model ? upload_weights(st, err) : random_weights(st, seed, 0.02f, err));
    return cu_rope_tables(st, st->c.max_position_embeddings > 0 ? st->c.max_position_embeddings : 1,
                          err);
}

extern "C" int cuda_backend_default_device(void)
{
    const char *names[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "LOCAL_RANK"};
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        (void)cudaGetLastError();
        return 0;
    }
    for (int i = 0; i < 3; i++) {
        const char *v = getenv(names[i]);
        if (v && *v) return atoi(v) % n;
    }
    return 0;
}

static int backend_new(const LlamaModel *model, const LlamaConfig *config, int device,
                       uint64_t seed, Backend **out, Error *err)
{
    if (check_config(config, err)) return -1;
    Backend *b = (Backend *)calloc(1, sizeof *b);
    CuState *st = (CuState *)calloc(1, sizeof *st);
    if (!b || !st) {
        free(b);
        free(st);
        return error_set(err, "out of memory creating the cuda backend");
    }
    b->ops = &cuda_ops;
    b->config = *config;
    b->state = st;
    if (create(st, model, config, device, seed, err)) {
        cu_destroy(b);
        return error_prefix(err, "cuda backend on GPU %d: ", device);
    }
    *out = b;
    return 0;
}

extern "C" int cuda_backend_create(const LlamaModel *model, int device, Backend **out, Error *err)
{
    return backend_new(model, &model->config, device, 0, out, err);
}

extern "C" void cuda_backend_set_recompute(Backend *b, int on)
{
    cu_state(b)->recompute = on != 0;
}

extern "C" void cuda_backend_set_graphs(Backend *b, int on)
{
    cu_decode_graph_drop(cu_state(b));
    cu_state(b)->graphs = on != 0;
}

extern "C" long cuda_backend_graph_launches(Backend *b)
{
    return cu_state(b)->graph.launches;
}

extern "C" void cuda_backend_set_gemv_glu(Backend *b, int on)
{
    cu_decode_graph_drop(cu_state(b));
    cu_state(b)->gemv_glu = on != 0;
}

extern "C" long cuda_backend_glu_gemvs(Backend *b)
{
    return cu_state(b)->glu_gemvs;
}

extern "C" int cuda_backend_profile(Backend *b, double *ms, const char **names, int cap)
{
    CuState *st = cu_state(b);
    if (!st->prof) return 0;
    int n = cap < CU_PHASES ? cap : CU_PHASES;
    for (int i = 0; i < n; i++) {
        ms[i] = st->prof->ms[i];
        names[i] = cu_phase_name(i);
        st->prof->ms[i] = 0.0;
    }
    return n;
}

extern "C" int cuda_backend_create_random(const LlamaConfig *config, int device, uint64_t seed,
                                          Backend **out, Error *err)
{
    return backend_new(NULL, config, device, seed, out, err);
}

/* Generation on the GPU (as cpu_decode.c): a KV cache holding, for every
 * layer and slot, the keys (after RoPE) and values of the tokens seen so far
 * in bf16, laid out [layer][slot * max_len + position][kv_dim].  prefill runs
 * the prompts through the ordinary forward with the cache attached;
 * decode_step runs one new token per active slot against its slot.  Slot
 * lengths live on the host (KvCache.len), so no step reads anything back
 * except the logits, which land in the caller's buffer at sync. */
#include "cuda/cuda_kernels.cuh"

#include <stdlib.h>
#include <string.h>

void cu_kv_free(Backend *b, KvCache *kv)
{
    if (!kv) return;
    CuState *st = cu_state(b);
    CuKv *c = (CuKv *)kv->impl;
    if (c) {
        cu_decode_graph_drop(st);
        cudaStreamSynchronize(st->stream); /* queued steps may still use the cache */
        if (c->k) cudaFree(c->k);
        if (c->v) cudaFree(c->v);
        if (c->step_part) cudaFree(c->step_part);
        if (c->step_done) cudaFree(c->step_done);
        free(c);
    }
    free(kv->len);
    free(kv);
}

int cu_kv_create(Backend *b, int n_slots, int max_len, KvCache **out, Error *err)
{
    CuState *st = cu_state(b);
    const LlamaConfig *cfg = &st->c;
    if (n_slots < 1 || max_len < 1)
        return error_set(err, "kv cache: %d slots of %d tokens", n_slots, max_len);
    TRY(cu_rope_tables(st, max_len, err));
    size_t n = (size_t)cfg->num_hidden_layers * n_slots * max_len * llama_kv_dim(cfg);
    KvCache *kv = (KvCache *)calloc(1, sizeof *kv);
    CuKv *c = (CuKv *)calloc(1, sizeof *c);
    if (kv) {
        kv->impl = c;
        kv->len = (int32_t *)calloc((size_t)n_slots, sizeof *kv->len);
    }
    if (!kv || !c || !kv->len) {
        if (!kv) free(c);
        cu_kv_free(b, kv);
        return error_set(err, "kv cache: out of host memory");
    }
    c->kv_dim = llama_kv_dim(cfg);
    cudaError_t e = cudaMalloc((void **)&c->k, n * sizeof(bf16));
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->v, n * sizeof(bf16));
    size_t n_done = (size_t)n_slots * cfg->num_attention_heads;
    if (e == cudaSuccess)
        e = cudaMalloc((void **)&c->step_part, cu_attention_step_workspace(cfg, n_slots) * sizeof(float));
    if (e == cudaSuccess) e = cudaMalloc((void **)&c->step_done, n_done * sizeof(int));
    if (e == cudaSuccess) e = cudaMemsetAsync(c->step_done, 0, n_done * sizeof(int), st->stream);
    int fill = st->poison ? 0xFF : 0; /* MODPO_CUDA_POISON: unwritten slots read as NaN */
    if (e == cudaSuccess) e = cudaMemsetAsync(c->k, fill, n * sizeof(bf16), st->stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(c->v, fill, n * sizeof(bf16), st->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        cu_kv_free(b, kv);
        return error_set(err, "kv cache: %d slots x %d tokens (%zu MB on the GPU): %s", n_slots,
                         max_len, 2 * n * sizeof(bf16) >> 20, cudaGetErrorString(e));
    }
    kv->n_slots = n_slots;
    kv->max_len = max_len;
    *out = kv;
    return 0;
}

typedef struct {
    const BackendAdapter *a;
    KvCache *kv;
    CuForward *f;
} StepWork;

/* The device work of a step whose rows are uploaded: every layer, then the
 * logits of each sequence's last row. */
static int forward_logits(CuState *st, void *ctx, float **logits, Error *err)
{
    StepWork *w = (StepWork *)ctx;
    const CuRows *r = &w->f->rows;
    TRY(cu_model_forward(st, w->a, w->f, w->kv, &st->scratch, err));
    *logits = cu_alloc<float>(&st->scratch, (size_t)r->n_seq * st->c.vocab_size);
    TRY(cu_arena_check(&st->scratch, "the logits", err));
    return cu_head_logits(st, w->f->x_final, r->n_seq, r->last, *logits, err);
}

/* Uploads the rows (host arrays in st->hints order, see run_rows), runs the
 * forward with the cache (fresh: a prefill, every key among these rows),
 * and queues the logits of each sequence's last row for out[slot[i] * V]. */
static int run_rows(Backend *b, KvCache *kv, BackendAdapter *a, int ns, int n_rows, int max_q,
                    int max_k, int fresh, const int32_t *h, const int *slot, float *out, Error *err)
{
    CuState *st = cu_state(b);
    int v = st->c.vocab_size;
    TRY(cu_arena_reset(&st->scratch, err));
    /* qstart[ns+1] kbase[ns] nk[ns] last[ns] | pos tok cache_row [n_rows] */
    size_t n_ints = (size_t)(ns + 1) + 3 * (size_t)ns + 3 * (size_t)n_rows;
    int32_t *d = cu_upload_ints(st, h, n_ints, &st->scratch, err);
    if (!d) return -1;
    CuForward f;
    memset(&f, 0, sizeof f);
    CuRows *r = &f.rows;
    r->n_seq = ns;
    r->n_rows = n_rows;
    r->max_q = max_q;
    r->max_k = max_k;
    r->qstart = d;
    r->kbase = d + ns + 1;
    r->nk = r->kbase + ns;
    r->last = r->nk + ns;
    r->pos = r->last + ns;
    r->tok = r->pos + n_rows;
    r->cache_row = r->tok + n_rows;
    r->fresh_cache = fresh;
    StepWork w = {a, kv, &f};
    float *logits = NULL;
    if (fresh)
        TRY(forward_logits(st, &w, &logits, err));
    else /* a decode step: the same launches every step, so a graph's replay */
        TRY(cu_decode_graph_run(st, kv, a, n_rows, forward_logits, &w, &logits, err));
    for (int i = 0; i < ns; i++)
        TRY(cu_output(st, out + (size_t)slot[i] * v, logits + (size_t)i * v, (size_t)v * sizeof(float),
                      err));
    return 0;
}

int cu_prefill(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
               const int32_t *lengths, int stride, float *out_logits, Error *err)
{
    CuState *st = cu_state(b);
    int ns = kv->n_slots, n_rows = 0, max_q = 0;
    for (int s = 0; s < ns; s++) {
        if (lengths[s] < 1 || lengths[s] > stride || lengths[s] > kv->max_len)
            return error_set(err, "prefill: slot %d prompt length %d outside [1, %d]", s,
                             lengths[s], stride < kv->max_len ? stride : kv->max_len);
        for (int t = 0; t < lengths[s]; t++) {
            int32_t tok = tokens[(size_t)s * stride + t];
            if (tok < 0 || tok >= st->c.vocab_size)
                return error_set(err, "prefill: slot %d position %d: token %d outside the "
                                 "vocabulary", s, t, tok);
        }
        n_rows += lengths[s];
        max_q = lengths[s] > max_q ? lengths[s] : max_q;
    }
    size_t n_ints = (size_t)(ns + 1) + 3 * (size_t)ns + 3 * (size_t)n_rows;
    int32_t *h = cu_host_ints(st, n_ints, err);
    int *slot = (int *)calloc((size_t)ns, sizeof *slot);
    if (!h || !slot) {
        free(slot);
        return error_set(err, "prefill: out of memory");
    }
    int32_t *qstart = h, *kbase = h + ns + 1, *nk = kbase + ns, *last = nk + ns;
    int32_t *pos = last + ns, *tk = pos + n_rows, *crow = tk + n_rows;
    int r = 0;
    for (int s = 0; s < ns; s++) {
        qstart[s] = r;
        kbase[s] = s * kv->max_len;
        nk[s] = lengths[s];
        slot[s] = s;
        for (int t = 0; t < lengths[s]; t++, r++) {
            pos[r] = t;
            tk[r] = tokens[(size_t)s * stride + t];
            crow[r] = s * kv->max_len + t;
        }
        last[s] = r - 1;
        kv->len[s] = 0; /* refilled below, so a failed prefill leaves empty slots */
    }
    qstart[ns] = r;
    int rc = run_rows(b, kv, a, ns, n_rows, max_q, max_q, 1, h, slot, out_logits, err);
    free(slot);
    if (rc) return error_prefix(err, "prefill: ");
    for (int s = 0; s < ns; s++) kv->len[s] = lengths[s];
    return 0;
}

int cu_decode_step(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                   const uint8_t *active, float *out_logits, Error *err)
{
    CuState *st = cu_state(b);
    int n = 0, max_k = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        if (active && !active[s]) continue;
        if (kv->len[s] < 1 || kv->len[s] >= kv->max_len)
            return error_set(err, "decode: slot %d holds %d of %d tokens (prefill first; "
                             "no room for more)", s, kv->len[s], kv->max_len);
        if (tokens[s] < 0 || tokens[s] >= st->c.vocab_size)
            return error_set(err, "decode: slot %d: token %d outside the vocabulary", s,
                             tokens[s]);
        n++;
        max_k = kv->len[s] + 1 > max_k ? kv->len[s] + 1 : max_k;
    }
    if (n == 0) return 0;
    size_t n_ints = (size_t)(n + 1) + 3 * (size_t)n + 3 * (size_t)n;
    int32_t *h = cu_host_ints(st, n_ints, err);
    int *slot = (int *)calloc((size_t)n, sizeof *slot);
    if (!h || !slot) {
        free(slot);
        return error_set(err, "decode: out of memory");
    }
    int32_t *qstart = h, *kbase = h + n + 1, *nk = kbase + n, *last = nk + n;
    int32_t *pos = last + n, *tk = pos + n, *crow = tk + n;
    int i = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        if (active && !active[s]) continue;
        qstart[i] = i;
        kbase[i] = s * kv->max_len;
        nk[i] = kv->len[s] + 1;
        last[i] = i;
        pos[i] = kv->len[s];
        tk[i] = tokens[s];
        crow[i] = s * kv->max_len + kv->len[s];
        slot[i] = s;
        i++;
    }
    qstart[n] = n;
    int rc = run_rows(b, kv, a, n, n, 1, max_k, 0, h, slot, out_logits, err);
    free(slot);
    if (rc) return error_prefix(err, "decode: ");
    for (int s = 0; s < kv->n_slots; s++)
        if (!active || active[s]) kv->len[s]++;
    return 0;
}

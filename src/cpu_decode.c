/* Generation on the CPU: a KV cache holding, for every layer and slot, the
 * keys (after RoPE) and values of the tokens seen so far, laid out
 * [layer][slot][position][kv_dim].  prefill runs the prompts through the
 * ordinary forward with the cache attached; decode_step runs one new token
 * per active slot, attending to its slot's cache. */
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int kv_dim;
    float *k, *v; /* [layers * n_slots * max_len * kv_dim] */
} CpuKv;

static float *slot_base(KvCache *kv, float *buf, int layer, int slot)
{
    const CpuKv *c = kv->impl;
    return buf + (((size_t)layer * kv->n_slots + slot) * kv->max_len) * c->kv_dim;
}

float *cpu_kv_k(KvCache *kv, int layer, int slot)
{
    return slot_base(kv, ((CpuKv *)kv->impl)->k, layer, slot);
}

float *cpu_kv_v(KvCache *kv, int layer, int slot)
{
    return slot_base(kv, ((CpuKv *)kv->impl)->v, layer, slot);
}

void cpu_kv_free(Backend *b, KvCache *kv)
{
    (void)b;
    if (!kv) return;
    CpuKv *c = kv->impl;
    if (c) {
        free(c->k);
        free(c->v);
        free(c);
    }
    free(kv->len);
    free(kv);
}

int cpu_kv_create(Backend *b, int n_slots, int max_len, KvCache **out, Error *err)
{
    const LlamaConfig *cfg = &b->config;
    if (n_slots < 1 || max_len < 1)
        return error_set(err, "kv cache: %d slots of %d tokens", n_slots, max_len);
    size_t n = (size_t)cfg->num_hidden_layers * n_slots * max_len * llama_kv_dim(cfg);
    KvCache *kv = calloc(1, sizeof *kv);
    CpuKv *c = calloc(1, sizeof *c);
    if (kv) kv->impl = c;
    if (kv) kv->len = calloc((size_t)n_slots, sizeof *kv->len);
    if (c) {
        c->kv_dim = llama_kv_dim(cfg);
        c->k = malloc(n * sizeof(float));
        c->v = malloc(n * sizeof(float));
    }
    if (!kv || !c || !kv->len || !c->k || !c->v) {
        if (!kv && c) {
            free(c->k);
            free(c->v);
            free(c);
        }
        cpu_kv_free(b, kv);
        return error_set(err, "kv cache: out of memory for %d slots x %d tokens (%zu MB)",
                         n_slots, max_len, 2 * n * sizeof(float) >> 20);
    }
    kv->n_slots = n_slots;
    kv->max_len = max_len;
    *out = kv;
    return 0;
}

/* Forward of the packed rows with the cache attached, then the logits of the
 * last row of each sequence into out[slot * V]. */
static int run_rows(Backend *b, KvCache *kv, BackendAdapter *a, CpuForward *f, float *out,
                    Error *err)
{
    CpuState *st = b->state;
    const LlamaConfig *c = &b->config;
    if (cpu_model_forward(st->model, a, f, kv, &st->scratch, err)) return -1;
    int n = f->rows.n_seq;
    int32_t *last = cpu_arena_alloc(&st->scratch, (size_t)n * sizeof *last);
    float *logits = cpu_arena_floats(&st->scratch, (size_t)n * c->vocab_size);
    float *head = cpu_arena_floats(&st->scratch, cpu_logprobs_scratch(c, st->chunk));
    if (!last || !logits || !head) return error_set(err, "out of memory for the logits");
    for (int s = 0; s < n; s++) last[s] = f->rows.start[s + 1] - 1;
    cpu_head_logits(st->model, st->chunk, f->x_final, n, last, logits, head);
    for (int s = 0; s < n; s++)
        memcpy(out + (size_t)f->rows.slot[s] * c->vocab_size, logits + (size_t)s * c->vocab_size,
               (size_t)c->vocab_size * sizeof(float));
    return 0;
}

static int rows_alloc(CpuRows *rows, int n_seq, int n_rows, CpuArena *arena)
{
    rows->n_seq = n_seq;
    rows->n_rows = n_rows;
    rows->start = cpu_arena_alloc(arena, (size_t)(n_seq + 1) * sizeof(int32_t));
    rows->pos = cpu_arena_alloc(arena, (size_t)n_rows * sizeof(int32_t));
    rows->tok = cpu_arena_alloc(arena, (size_t)n_rows * sizeof(int32_t));
    rows->slot = cpu_arena_alloc(arena, (size_t)n_seq * sizeof(int32_t));
    return arena->failed ? -1 : 0;
}

int cpu_prefill(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                const int32_t *lengths, int stride, float *out_logits, Error *err)
{
    CpuState *st = b->state;
    int n_rows = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        if (lengths[s] < 1 || lengths[s] > stride || lengths[s] > kv->max_len)
            return error_set(err, "prefill: slot %d prompt length %d outside [1, %d]", s,
                             lengths[s], stride < kv->max_len ? stride : kv->max_len);
        for (int t = 0; t < lengths[s]; t++) {
            int32_t tok = tokens[(size_t)s * stride + t];
            if (tok < 0 || tok >= b->config.vocab_size)
                return error_set(err, "prefill: slot %d position %d: token %d outside the "
                                 "vocabulary", s, t, tok);
        }
        n_rows += lengths[s];
    }
    cpu_arena_reset(&st->scratch);
    CpuForward f;
    memset(&f, 0, sizeof f);
    if (rows_alloc(&f.rows, kv->n_slots, n_rows, &st->scratch))
        return error_set(err, "prefill: out of memory");
    int r = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        f.rows.start[s] = r;
        f.rows.slot[s] = s;
        for (int t = 0; t < lengths[s]; t++, r++) {
            f.rows.pos[r] = t;
            f.rows.tok[r] = tokens[(size_t)s * stride + t];
        }
        kv->len[s] = 0; /* refilled below, so a failed prefill leaves empty slots */
    }
    f.rows.start[kv->n_slots] = r;
    if (run_rows(b, kv, a, &f, out_logits, err)) return error_prefix(err, "prefill: ");
    for (int s = 0; s < kv->n_slots; s++) kv->len[s] = lengths[s];
    return 0;
}

int cpu_decode_step(Backend *b, KvCache *kv, BackendAdapter *a, const int32_t *tokens,
                    const uint8_t *active, float *out_logits, Error *err)
{
    CpuState *st = b->state;
    int n = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        if (active && !active[s]) continue;
        if (kv->len[s] < 1 || kv->len[s] >= kv->max_len)
            return error_set(err, "decode: slot %d holds %d of %d tokens (prefill first; "
                             "no room for more)", s, kv->len[s], kv->max_len);
        if (tokens[s] < 0 || tokens[s] >= b->config.vocab_size)
            return error_set(err, "decode: slot %d: token %d outside the vocabulary", s,
                             tokens[s]);
        n++;
    }
    if (n == 0) return 0;
    cpu_arena_reset(&st->scratch);
    CpuForward f;
    memset(&f, 0, sizeof f);
    if (rows_alloc(&f.rows, n, n, &st->scratch)) return error_set(err, "decode: out of memory");
    int i = 0;
    for (int s = 0; s < kv->n_slots; s++) {
        if (active && !active[s]) continue;
        f.rows.start[i] = i;
        f.rows.slot[i] = s;
        f.rows.pos[i] = kv->len[s];
        f.rows.tok[i] = tokens[s];
        i++;
    }
    f.rows.start[n] = n;
    if (run_rows(b, kv, a, &f, out_logits, err)) return error_prefix(err, "decode: ");
    for (int s = 0; s < kv->n_slots; s++)
        if (!active || active[s]) kv->len[s]++;
    return 0;
}

/* The Llama forward and its LoRA-only backward over packed rows, on the GPU
 * (the maths of cpu_forward.c and cpu_backward.c):
 *     h1 = RMSNorm(x);  q, k, v = Linear(h1);  RoPE(q, k)
 *     x += o_proj(attention(q, k, v))
 *     h2 = RMSNorm(x);  x += down(silu(gate(h2)) * up(h2))
 * The residual x stays fp32; o_proj and down_proj accumulate into it
 * directly (GEMM beta = 1).  The backward runs dx (fp32) down through every
 * layer, forming LoRA gradients only. */
#include "cuda/cuda_kernels.cuh"

#include <stdlib.h>
#include <string.h>

int32_t *cu_upload_ints(CuState *st, const int32_t *h, size_t n, CuArena *arena, Error *err)
{
    int32_t *d = cu_alloc<int32_t>(arena, n ? n : 1);
    if (cu_arena_check(arena, "batch metadata", err)) return NULL;
    if (n) {
        cudaError_t e = cudaMemcpyAsync(d, h, n * sizeof(int32_t), cudaMemcpyHostToDevice, st->stream);
        if (e != cudaSuccess) {
            error_set(err, "uploading batch metadata: %s", cudaGetErrorString(e));
            return NULL;
        }
    }
    return d;
}

int32_t *cu_host_ints(CuState *st, size_t n, Error *err)
{
    if (n > st->hints_cap) {
        int32_t *p = (int32_t *)realloc(st->hints, n * sizeof(int32_t));
        if (!p) {
            error_set(err, "out of memory for batch metadata");
            return NULL;
        }
        st->hints = p;
        st->hints_cap = n;
    }
    return st->hints;
}

int cu_rows_from_batch(CuState *st, const Batch *b, CuRows *rows, CuLabels *lab, CuArena *arena,
                       Error *err)
{
    const LlamaConfig *c = &st->c;
    if (b->n_seq < 1 || b->seq_len < 1)
        return error_set(err, "empty batch (%d sequences of %d tokens)", b->n_seq, b->seq_len);
    int n_rows = 0, n_lab = 0, max_len = 0, ns = b->n_seq;
    for (int s = 0; s < ns; s++) {
        int len = b->lengths[s];
        if (len < 1 || len > b->seq_len)
            return error_set(err, "sequence %d: length %d outside [1, %d]", s, len, b->seq_len);
        const int32_t *tok = b->tokens + (size_t)s * b->seq_len;
        const uint8_t *lm = b->label_mask + (size_t)s * b->seq_len;
        for (int t = 0; t < b->seq_len; t++) {
            if (t < len && (tok[t] < 0 || tok[t] >= c->vocab_size))
                return error_set(err, "sequence %d, position %d: token %d outside the vocabulary "
                                 "of %d", s, t, tok[t], c->vocab_size);
            if (lm[t] && (t == 0 || t >= len))
                return error_set(err, "sequence %d: label at position %d, but labels need "
                                 "1 <= t < length %d", s, t, len);
            n_lab += lm[t] != 0;
        }
        n_rows += len;
        max_len = len > max_len ? len : max_len;
    }
    int n_sums = batch_n_sums(b);
    /* qstart kbase nk last | pos tok | row tgt seq | sum_start */
    size_t n_ints = (size_t)(ns + 1) + 3 * ns + 2 * (size_t)n_rows +
                    (lab ? 3 * (size_t)n_lab + n_sums + 1 : 0);
    int32_t *h = cu_host_ints(st, n_ints, err);
    if (!h) return -1;
    int32_t *qstart = h, *kbase = qstart + ns + 1, *nk = kbase + ns, *last = nk + ns;
    int32_t *pos = last + ns, *tk = pos + n_rows;
    int32_t *lrow = tk + n_rows, *ltgt = lrow + n_lab, *lseq = ltgt + n_lab, *lstart = lseq + n_lab;
    int r = 0, k = 0, sum = 0;
    for (int s = 0; s < ns; s++) {
        const int32_t *tok = b->tokens + (size_t)s * b->seq_len;
        const uint8_t *lm = b->label_mask + (size_t)s * b->seq_len;
        const uint8_t *cut = b->sum_start ? b->sum_start + (size_t)s * b->seq_len : NULL;
        qstart[s] = kbase[s] = r;
        nk[s] = b->lengths[s];
        if (lab) lstart[sum++] = k; /* each sequence's first sum */
        for (int t = 0; t < b->lengths[s]; t++, r++) {
            pos[r] = t;
            tk[r] = tok[t];
            if (lab && cut && cut[t]) lstart[sum++] = k;
            if (lab && lm[t]) { /* the logits of the previous row score token t */
                lrow[k] = r - 1;
                ltgt[k] = tok[t];
                lseq[k] = s;
                k++;
            }
        }
        last[s] = r - 1;
    }
    qstart[ns] = r;
    if (lab) lstart[n_sums] = k;
    int32_t *d = cu_upload_ints(st, h, n_ints, arena, err);
    if (!d) return -1;
    rows->n_seq = ns;
    rows->n_rows = n_rows;
    rows->max_q = rows->max_k = max_len;
    rows->qstart = d;
    rows->kbase = d + (kbase - h);
    rows->nk = d + (nk - h);
    rows->last = d + (last - h);
    rows->pos = d + (pos - h);
    rows->tok = d + (tk - h);
    rows->cache_row = NULL;
    if (lab) {
        lab->n = n_lab;
        lab->row = d + (lrow - h);
        lab->tgt = d + (ltgt - h);
        lab->seq = d + (lseq - h);
        lab->sum_start = d + (lstart - h);
        lab->n_sums = n_sums;
        lab->logp = cu_alloc<float>(arena, n_lab ? n_lab : 1);
        lab->rstd = cu_alloc<float>(arena, n_lab ? n_lab : 1);
        lab->dhn = NULL;
        TRY(cu_arena_check(arena, "labels", err));
    }
    return 0;
}

/* Whether the backward reads a buffer of a kept layer: h2 only feeds the
 * LoRA gradients of gate/up, act only those of down_proj.  A buffer that it
 * never reads is shared by every layer (7.9 GB less at 8 pairs of 512 tokens
 * on the 7B shape with the seed's q,v adapter). */
static int backward_reads(const BackendAdapter *ad, LoraTarget t)
{
    return ad && lora_has_target(&ad->host->spec, t);
}

static int acts_alloc(const CuState *st, const BackendAdapter *ad, int n, const CuActs *shared,
                      CuActs *a, CuArena *ar, Error *err)
{
    const LlamaConfig *c = &st->c;
    size_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    memset(a, 0, sizeof *a);
    if (shared) {
        a->x_in = cu_alloc<float>(ar, n * d);
        a->x_mid = cu_alloc<float>(ar, n * d);
    }
    a->rstd1 = cu_alloc<float>(ar, n);
    a->rstd2 = cu_alloc<float>(ar, n);
    a->lse = cu_alloc<float>(ar, n * (size_t)c->num_attention_heads);
    a->h1 = cu_alloc<bf16>(ar, n * d);
    a->q = cu_alloc<bf16>(ar, n * d);
    a->k = cu_alloc<bf16>(ar, n * kv);
    a->v = cu_alloc<bf16>(ar, n * kv);
    a->attn = cu_alloc<bf16>(ar, n * d);
    int own_h2 = !shared || backward_reads(ad, LORA_GATE_PROJ) || backward_reads(ad, LORA_UP_PROJ);
    a->h2 = own_h2 ? cu_alloc<bf16>(ar, n * d) : shared->h2;
    a->gate = cu_alloc<bf16>(ar, n * f);
    a->up = cu_alloc<bf16>(ar, n * f);
    a->act = !shared || backward_reads(ad, LORA_DOWN_PROJ) ? cu_alloc<bf16>(ar, n * f) : shared->act;
    for (int t = 0; ad && t < LORA_N_TARGETS; t++)
        if (lora_has_target(&ad->host->spec, (LoraTarget)t))
            a->u[t] = cu_alloc<bf16>(ar, (size_t)n * ad->host->spec.rank);
    return cu_arena_check(ar, "activations", err);
}

/* Training and scoring passes (no KV cache) attend on tensor cores when the
 * scores fit; the forward and the backward decide alike. */
static int attention_on_gemms(const CuState *st, const CuRows *rows, const KvCache *kv)
{
    return !kv && !st->attn_flash_only && cu_attention_gemm_usable(st, rows);
}

static int attention_out(CuState *st, const BackendAdapter *ad, int l, int n, CuActs *a, float *x,
                         int keep, int attn_rc, Error *err);

/* A decode step's rows (one new row per sequence, appended to its slot)
 * few enough for the GEMVs: there the step attention filled the card and
 * saved a launch (batch 1 6.29 -> 6.25 ms on an H100); at batch 64, where
 * one block per (row, head) fills it already, it measured 14.9 ms against
 * 13.1-13.3 (bench/NOTES-gpu.md step 18). */
static int decode_step_rows(const CuState *st, const CuRows *rows)
{
    return st->step_attn && !rows->fresh_cache && rows->n_rows == rows->n_seq &&
           rows->n_rows <= st->gemv_max_rows;
}

/* RMSNorm(x) -> the Linears reading it: inside their GEMV when nothing
 * keeps the normed rows (a decode or scoring pass of a few rows), else the
 * norm kernel first. */
static int norm_then_linears(CuState *st, const CuLinear *lins, int count, int n, float *x,
                             const float *w, int keep, bf16 *h, float *rstd, bf16 *const *y,
                             bf16 *const *u, Error *err)
{
    const LlamaConfig *c = &st->c;
    if (!keep && cu_linear_normed_fusable(st, lins, count, n)) {
        CuNormedX nx = {x, NULL, w, c->rms_norm_eps};
        CU_PHASE(st, CU_PH_LINEAR_FWD);
        return cu_linear_forward_many_normed(st, lins, count, n, &nx, y, u, err);
    }
    CU_PHASE(st, CU_PH_NORM);
    TRY(cu_rmsnorm_forward(st, n, c->hidden_size, x, NULL, w, c->rms_norm_eps, h, rstd, err));
    CU_PHASE(st, CU_PH_LINEAR_FWD);
    return cu_linear_forward_many(st, lins, count, n, h, y, u, err);
}

static int layer_forward(CuState *st, const BackendAdapter *ad, const CuForward *f, KvCache *kv,
                         int l, CuActs *a, float *x, Error *err)
{
    const LlamaConfig *c = &st->c;
    const CuLayerWeights *w = &st->layers[l];
    const CuRows *rows = &f->rows;
    int n = rows->n_rows, d = c->hidden_size, kvd = llama_kv_dim(c);
    size_t bytes = (size_t)n * d * sizeof(float);
    CuLinear lq = cu_linear_of(st, ad, l, LORA_Q_PROJ), lk = cu_linear_of(st, ad, l, LORA_K_PROJ);
    CuLinear lv = cu_linear_of(st, ad, l, LORA_V_PROJ);

    CU_PHASE(st, CU_PH_NORM);
    if (a->x_in) CU_TRY(cudaMemcpyAsync(a->x_in, x, bytes, cudaMemcpyDeviceToDevice, st->stream));
    const CuLinear qkv[3] = {lq, lk, lv};
    bf16 *const qkv_y[3] = {a->q, a->k, a->v};
    bf16 *const qkv_u[3] = {a->u[LORA_Q_PROJ], a->u[LORA_K_PROJ], a->u[LORA_V_PROJ]};
    TRY(norm_then_linears(st, qkv, 3, n, x, w->ln1, f->keep, a->h1, a->rstd1, qkv_y, qkv_u, err));
    CuAttn at = {a->q, a->k, a->v, kvd, a->attn, a->lse};
    if (attention_on_gemms(st, rows, kv)) { /* rotates q, k itself */
        CU_PHASE(st, CU_PH_ATTN_FWD);
        return attention_out(st, ad, l, n, a, x, f->keep,
                             cu_attention_gemm_forward(st, rows, &at, 1, err), err);
    }
    CU_PHASE(st, CU_PH_ROPE);
    if (kv) { /* this step's keys and values join their slots; attention reads the cache */
        const CuKv *ck = (const CuKv *)kv->impl;
        size_t layer_off = (size_t)l * kv->n_slots * kv->max_len * kvd;
        if (decode_step_rows(st, rows)) { /* RoPE and the cache write inside */
            CU_PHASE(st, CU_PH_ATTN_FWD);
            CuStepAttn sa = {a->q, a->k, a->v, ck->k + layer_off, ck->v + layer_off, a->attn, a->lse,
                             ck->step_part, ck->step_done,
                             cu_attention_step_splits(st, n, kv->max_len)};
            return attention_out(st, ad, l, n, a, x, f->keep, cu_attention_step(st, rows, &sa, err),
                                 err);
        }
        TRY(cu_rope_into_cache(st, n, rows->pos, rows->cache_row, a->q, a->k, a->v,
                               ck->k + layer_off, ck->v + layer_off, err));
        CU_PHASE(st, CU_PH_ATTN_FWD);
        if (rows->fresh_cache && !st->attn_flash_only && cu_attention_gemm_usable(st, rows))
            return attention_out(st, ad, l, n, a, x, f->keep,
                                 cu_attention_gemm_forward(st, rows, &at, 0, err), err);
        at.k = ck->k + layer_off;
        at.v = ck->v + layer_off;
        return attention_out(st, ad, l, n, a, x, f->keep, cu_attention_decode(st, rows, &at, err),
                             err);
    }
    TRY(cu_rope_forward(st, n, rows->pos, c->num_attention_heads, a->q, err));
    TRY(cu_rope_forward(st, n, rows->pos, c->num_key_value_heads, a->k, err));
    CU_PHASE(st, CU_PH_ATTN_FWD);
    return attention_out(st, ad, l, n, a, x, f->keep, cu_attention_forward(st, rows, &at, err), err);
}

/* The rest of the layer after attention: o_proj into the residual, then the MLP. */
static int attention_out(CuState *st, const BackendAdapter *ad, int l, int n, CuActs *a, float *x,
                         int keep, int attn_rc, Error *err)
{
    if (attn_rc) return -1;
    const LlamaConfig *c = &st->c;
    const CuLayerWeights *w = &st->layers[l];
    int d = c->hidden_size;
    size_t bytes = (size_t)n * d * sizeof(float);
    CuLinear lo = cu_linear_of(st, ad, l, LORA_O_PROJ);
    CuLinear lg = cu_linear_of(st, ad, l, LORA_GATE_PROJ);
    CuLinear lu = cu_linear_of(st, ad, l, LORA_UP_PROJ);
    CuLinear ld = cu_linear_of(st, ad, l, LORA_DOWN_PROJ);
    CU_PHASE(st, CU_PH_LINEAR_FWD);
    TRY(cu_linear_forward(st, &lo, n, a->attn, x, 1, 1.0f, a->u[LORA_O_PROJ], err));

    CU_PHASE(st, CU_PH_NORM);
    if (a->x_mid) CU_TRY(cudaMemcpyAsync(a->x_mid, x, bytes, cudaMemcpyDeviceToDevice, st->stream));
    if (!keep && !a->rerun && cu_mlp_glu_fusable(st, &lg, &lu, &ld, n)) { /* decode: two GEMVs */
        CuNormedX nx = {x, NULL, w->ln2, c->rms_norm_eps};
        CU_PHASE(st, CU_PH_LINEAR_FWD);
        return cu_mlp_forward_glu(st, &lg, &lu, &ld, n, &nx, a->act, x, err);
    }
    const CuLinear gu[2] = {lg, lu};
    bf16 *const gu_y[2] = {a->gate, a->up};
    bf16 *const gu_u[2] = {a->u[LORA_GATE_PROJ], a->u[LORA_UP_PROJ]};
    TRY(norm_then_linears(st, gu, 2, n, x, w->ln2, keep, a->h2, a->rstd2, gu_y, gu_u, err));
    if (!keep && !ld.a && cu_gemv_staged_usable(st, n, ld.in)) { /* decode: SwiGLU in the GEMV */
        CuGluX glu = {a->gate, a->up};
        CuGemvPart down = {ld.w, x, ld.out, NULL};
        return cu_gemv_many_glu(st, n, ld.in, &glu, &down, 1, 1.0f, 1.0f, 1, err);
    }
    CU_PHASE(st, CU_PH_MLP_ACT);
    TRY(cu_swiglu_forward(st, (size_t)n * c->intermediate_size, a->gate, a->up, a->act, err));
    if (a->rerun && !ld.a) return 0; /* the backward reads nothing down_proj makes */
    CU_PHASE(st, CU_PH_LINEAR_FWD);
    return cu_linear_forward(st, &ld, n, a->act, x, 1, 1.0f, a->u[LORA_DOWN_PROJ], err);
}

/* Recomputation keeps one fp32 row of the residual per layer (x_in) and
 * a single full set of activations that the backward refills layer by
 * layer: 16 KB a row a layer instead of ~116 KB, for one more forward. */
static int recompute_alloc(CuState *st, const BackendAdapter *ad, CuForward *f, CuArena *ar,
                           Error *err)
{
    int n = f->rows.n_rows, L = st->c.num_hidden_layers;
    size_t nd = (size_t)n * st->c.hidden_size;
    f->layers = st->kept_layers;
    f->work = &st->recompute_layer;
    TRY(acts_alloc(st, ad, n, NULL, f->work, ar, err));
    for (int l = 0; l < L; l++) {
        memset(&f->layers[l], 0, sizeof f->layers[l]);
        f->layers[l].x_in = cu_alloc<float>(ar, nd);
    }
    f->work->x_mid = cu_alloc<float>(ar, nd);
    return cu_arena_check(ar, "the kept layer inputs", err);
}

/* Fills f->work with layer l's activations again, from its kept input. */
static int recompute_layer(CuState *st, const BackendAdapter *ad, const CuForward *f, int l,
                           float *x, Error *err)
{
    CuActs *a = f->work;
    size_t bytes = (size_t)f->rows.n_rows * st->c.hidden_size * sizeof(float);
    CU_TRY(cudaMemcpyAsync(x, f->layers[l].x_in, bytes, cudaMemcpyDeviceToDevice, st->stream));
    a->x_in = NULL;
    a->rerun = 1;
    int rc = layer_forward(st, ad, f, NULL, l, a, x, err);
    a->rerun = 0;
    a->x_in = f->layers[l].x_in;
    return rc;
}

int cu_model_forward(CuState *st, const BackendAdapter *ad, CuForward *f, KvCache *kv,
                     CuArena *arena, Error *err)
{
    const LlamaConfig *c = &st->c;
    int n = f->rows.n_rows, n_layers = c->num_hidden_layers;
    f->recompute = f->keep && st->recompute;
    f->layers = f->keep ? st->kept_layers : &st->scratch_layer;
    int n_sets = f->keep && !f->recompute ? n_layers : f->recompute ? 0 : 1;
    if (f->recompute) TRY(recompute_alloc(st, ad, f, arena, err));
    CuActs shared;
    if (n_sets > 1) { /* the buffers no backward reads, shared by the kept layers */
        memset(&shared, 0, sizeof shared);
        shared.h2 = cu_alloc<bf16>(arena, (size_t)n * c->hidden_size);
        shared.act = cu_alloc<bf16>(arena, (size_t)n * c->intermediate_size);
        TRY(cu_arena_check(arena, "activations", err));
    }
    for (int i = 0; i < n_sets; i++)
        TRY(acts_alloc(st, ad, n, n_sets > 1 ? &shared : NULL, &f->layers[i], arena, err));
    float *x = cu_alloc<float>(arena, (size_t)n * c->hidden_size);
    TRY(cu_arena_check(arena, "the residual stream", err));
    CU_PHASE(st, CU_PH_OTHER);
    TRY(cu_embed(st, n, f->rows.tok, x, err));
    for (int l = 0; l < n_layers; l++) {
        CuActs *a = &f->layers[f->keep ? l : 0];
        float *x_mid = NULL; /* only the backward's rerun needs it */
        if (f->recompute) { /* computes in the work set, keeps only the input */
            f->work->x_in = a->x_in;
            a = f->work;
            x_mid = a->x_mid;
            a->x_mid = NULL;
        }
        int rc = layer_forward(st, ad, f, kv, l, a, x, err);
        if (x_mid) a->x_mid = x_mid;
        TRY(rc);
    }
    f->x_final = x;
    f->adapter = ad;
    return 0;
}

typedef struct {
    float *dx, *dact, *dh, *dattn, *delta, *dq, *dk, *dv; /* fp32 */
    bf16 *dxb, *dgate, *dup, *dqb, *dkb, *dvb, *du;       /* GEMM operands */
} BwdBufs;

static int bufs_alloc(CuState *st, const BackendAdapter *ad, int n, BwdBufs *b, CuArena *ar,
                      Error *err)
{
    const LlamaConfig *c = &st->c;
    size_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    b->dx = cu_alloc<float>(ar, n * d);
    b->dact = cu_alloc<float>(ar, n * f);
    b->dh = cu_alloc<float>(ar, n * d);
    b->dattn = cu_alloc<float>(ar, n * d);
    b->delta = cu_alloc<float>(ar, n * (size_t)c->num_attention_heads);
    b->dq = cu_alloc<float>(ar, n * d);
    b->dk = cu_alloc<float>(ar, n * kv);
    b->dv = cu_alloc<float>(ar, n * kv);
    b->dxb = cu_alloc<bf16>(ar, n * d);
    b->dgate = cu_alloc<bf16>(ar, n * f);
    b->dup = cu_alloc<bf16>(ar, n * f);
    b->dqb = cu_alloc<bf16>(ar, n * d);
    b->dkb = cu_alloc<bf16>(ar, n * kv);
    b->dvb = cu_alloc<bf16>(ar, n * kv);
    b->du = cu_alloc<bf16>(ar, (size_t)n * ad->host->spec.rank);
    return cu_arena_check(ar, "the backward", err);
}

static int mlp_backward(CuState *st, const BackendAdapter *ad, int l, int n, const CuActs *a,
                        BwdBufs *b, Error *err)
{
    const LlamaConfig *c = &st->c;
    int d = c->hidden_size;
    CuLinear lg = cu_linear_of(st, ad, l, LORA_GATE_PROJ);
    CuLinear lu = cu_linear_of(st, ad, l, LORA_UP_PROJ);
    CuLinear ld = cu_linear_of(st, ad, l, LORA_DOWN_PROJ);
    CU_PHASE(st, CU_PH_LINEAR_BWD);
    TRY(cu_to_bf16(st, (size_t)n * d, b->dx, b->dxb, err));
    TRY(cu_linear_backward(st, &ld, n, a->act, a->u[LORA_DOWN_PROJ], b->dxb, b->dact, 0.0f, b->du,
                           err));
    CU_PHASE(st, CU_PH_MLP_ACT);
    TRY(cu_swiglu_backward(st, (size_t)n * c->intermediate_size, a->gate, a->up, b->dact, b->dgate,
                           b->dup, err));
    CU_PHASE(st, CU_PH_LINEAR_BWD);
    TRY(cu_linear_backward(st, &lg, n, a->h2, a->u[LORA_GATE_PROJ], b->dgate, b->dh, 0.0f, b->du,
                           err));
    TRY(cu_linear_backward(st, &lu, n, a->h2, a->u[LORA_UP_PROJ], b->dup, b->dh, 1.0f, b->du, err));
    CU_PHASE(st, CU_PH_NORM);
    return cu_rmsnorm_backward(st, n, d, a->x_mid, NULL, st->layers[l].ln2, a->rstd2, b->dh, NULL,
                               b->dx, err);
}

static int attention_backward(CuState *st, const BackendAdapter *ad, int l, const CuForward *f,
                              const CuActs *a, BwdBufs *b, Error *err)
{
    const LlamaConfig *c = &st->c;
    const CuRows *rows = &f->rows;
    int n = rows->n_rows, d = c->hidden_size, kvd = llama_kv_dim(c);
    CuLinear lq = cu_linear_of(st, ad, l, LORA_Q_PROJ), lk = cu_linear_of(st, ad, l, LORA_K_PROJ);
    CuLinear lv = cu_linear_of(st, ad, l, LORA_V_PROJ), lo = cu_linear_of(st, ad, l, LORA_O_PROJ);
    CU_PHASE(st, CU_PH_LINEAR_BWD);
    TRY(cu_to_bf16(st, (size_t)n * d, b->dx, b->dxb, err));
    TRY(cu_linear_backward(st, &lo, n, a->attn, a->u[LORA_O_PROJ], b->dxb, b->dattn, 0.0f, b->du,
                           err));
    CU_PHASE(st, CU_PH_ATTN_BWD);
    CuAttn at = {a->q, a->k, a->v, kvd, a->attn, a->lse};
    if (attention_on_gemms(st, rows, NULL)) {
        TRY(cu_attention_gemm_backward(st, rows, &at, b->dattn, b->dqb, b->dkb, b->dvb, err));
    } else {
        TRY(cu_attention_backward(st, rows, &at, b->dattn, b->delta, b->dq, b->dk, b->dv, err));
        CU_PHASE(st, CU_PH_ROPE);
        TRY(cu_rope_backward(st, n, rows->pos, c->num_attention_heads, b->dq, b->dqb, err));
        TRY(cu_rope_backward(st, n, rows->pos, c->num_key_value_heads, b->dk, b->dkb, err));
        TRY(cu_to_bf16(st, (size_t)n * kvd, b->dv, b->dvb, err));
    }
    /* Below layer 0 there are only the frozen embeddings: no dx to form. */
    CU_PHASE(st, CU_PH_LINEAR_BWD);
    float *dh = l > 0 ? b->dh : NULL;
    TRY(cu_linear_backward(st, &lq, n, a->h1, a->u[LORA_Q_PROJ], b->dqb, dh, 0.0f, b->du, err));
    TRY(cu_linear_backward(st, &lk, n, a->h1, a->u[LORA_K_PROJ], b->dkb, dh, 1.0f, b->du, err));
    TRY(cu_linear_backward(st, &lv, n, a->h1, a->u[LORA_V_PROJ], b->dvb, dh, 1.0f, b->du, err));
    if (!dh) return 0;
    CU_PHASE(st, CU_PH_NORM);
    return cu_rmsnorm_backward(st, n, d, a->x_in, NULL, st->layers[l].ln1, a->rstd1, dh, NULL, b->dx,
                               err);
}

int cu_model_backward(CuState *st, const BackendAdapter *ad, const CuForward *f,
                      const float *dlogps, CuArena *arena, Error *err)
{
    const LlamaConfig *c = &st->c;
    int n = f->rows.n_rows;
    BwdBufs b;
    TRY(bufs_alloc(st, ad, n, &b, arena, err));
    CU_PHASE(st, CU_PH_HEAD_BWD);
    CU_TRY(cudaMemsetAsync(b.dx, 0, (size_t)n * c->hidden_size * sizeof(float), st->stream));
    TRY(cu_logprobs_backward(st, f, dlogps, b.dx, err));
    float *x_rerun = NULL;
    if (f->recompute) {
        x_rerun = cu_alloc<float>(arena, (size_t)n * c->hidden_size);
        TRY(cu_arena_check(arena, "the recomputed residual", err));
    }
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        if (f->recompute) TRY(recompute_layer(st, ad, f, l, x_rerun, err));
        const CuActs *a = f->recompute ? f->work : &f->layers[l];
        TRY(mlp_backward(st, ad, l, n, a, &b, err));
        TRY(attention_backward(st, ad, l, f, a, &b, err));
    }
    CU_PHASE(st, CU_PH_OTHER);
    return 0;
}

/* The Llama forward over packed rows (cpu_kernels.h): embedding, then per
 * layer
 *     h1 = RMSNorm(x);  q, k, v = Linear(h1);  RoPE(q, k)
 *     x += o_proj(attention(q, k, v))
 *     h2 = RMSNorm(x);  x += down(silu(gate(h2)) * up(h2))
 * leaving the final residual for the fused head (cpu_logprobs.c).  With
 * f->keep every layer's activations stay for the backward. */
#include "cpu_kernels.h"

#include <stdlib.h>
#include <string.h>

int cpu_rows_from_batch(const LlamaConfig *c, const Batch *b, CpuRows *rows, CpuLabels *labels,
                        CpuArena *arena, Error *err)
{
    if (b->n_seq < 1 || b->seq_len < 1)
        return error_set(err, "empty batch (%d sequences of %d tokens)", b->n_seq, b->seq_len);
    int n_rows = 0, n_labels = 0;
    for (int s = 0; s < b->n_seq; s++) {
        int len = b->lengths[s];
        if (len < 1 || len > b->seq_len)
            return error_set(err, "sequence %d: length %d outside [1, %d]", s, len, b->seq_len);
        const int32_t *tok = b->tokens + (size_t)s * b->seq_len;
        const uint8_t *lab = b->label_mask + (size_t)s * b->seq_len;
        for (int t = 0; t < b->seq_len; t++) {
            if (t < len && (tok[t] < 0 || tok[t] >= c->vocab_size))
                return error_set(err, "sequence %d, position %d: token %d outside the vocabulary "
                                 "of %d", s, t, tok[t], c->vocab_size);
            if (lab[t] && (t == 0 || t >= len))
                return error_set(err, "sequence %d: label at position %d, but labels need "
                                 "1 <= t < length %d", s, t, len);
            n_labels += lab[t] != 0;
        }
        n_rows += len;
    }
    rows->n_seq = b->n_seq;
    rows->n_rows = n_rows;
    rows->start = cpu_arena_alloc(arena, (size_t)(b->n_seq + 1) * sizeof(int32_t));
    rows->pos = cpu_arena_alloc(arena, (size_t)n_rows * sizeof(int32_t));
    rows->tok = cpu_arena_alloc(arena, (size_t)n_rows * sizeof(int32_t));
    rows->slot = NULL;
    if (labels) {
        labels->n = n_labels;
        labels->row = cpu_arena_alloc(arena, (size_t)n_labels * sizeof(int32_t));
        labels->target = cpu_arena_alloc(arena, (size_t)n_labels * sizeof(int32_t));
        labels->seq = cpu_arena_alloc(arena, (size_t)n_labels * sizeof(int32_t));
        labels->sum = b->sum_start ? cpu_arena_alloc(arena, (size_t)n_labels * sizeof(int32_t))
                                   : labels->seq;
        labels->lse = cpu_arena_floats(arena, (size_t)n_labels);
        labels->dhn = NULL;
    }
    if (arena->failed) return error_set(err, "out of memory packing a batch of %d rows", n_rows);
    int r = 0, k = 0, sum = -1;
    for (int s = 0; s < b->n_seq; s++) {
        const int32_t *tok = b->tokens + (size_t)s * b->seq_len;
        const uint8_t *lab = b->label_mask + (size_t)s * b->seq_len;
        const uint8_t *cut = b->sum_start ? b->sum_start + (size_t)s * b->seq_len : NULL;
        rows->start[s] = r;
        sum++; /* each sequence's first sum */
        for (int t = 0; t < b->lengths[s]; t++, r++) {
            rows->pos[r] = t;
            rows->tok[r] = tok[t];
            if (cut && cut[t]) sum++;
            if (labels && lab[t]) { /* logits of the previous row score token t */
                labels->row[k] = r - 1;
                labels->target[k] = tok[t];
                labels->seq[k] = s;
                if (cut) labels->sum[k] = sum;
                k++;
            }
        }
    }
    rows->start[b->n_seq] = r;
    return 0;
}

static void acts_alloc(const LlamaConfig *c, const BackendAdapter *ad, int n, int keep,
                       CpuLayerActs *a, CpuArena *arena)
{
    size_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    memset(a, 0, sizeof *a);
    if (keep) {
        a->x_in = cpu_arena_floats(arena, n * d);
        a->x_mid = cpu_arena_floats(arena, n * d);
    }
    a->rstd1 = cpu_arena_floats(arena, n);
    a->h1 = cpu_arena_floats(arena, n * d);
    a->q = cpu_arena_floats(arena, n * d);
    a->k = cpu_arena_floats(arena, n * kv);
    a->v = cpu_arena_floats(arena, n * kv);
    a->lse = cpu_arena_floats(arena, n * (size_t)c->num_attention_heads);
    a->attn = cpu_arena_floats(arena, n * d);
    a->rstd2 = cpu_arena_floats(arena, n);
    a->h2 = cpu_arena_floats(arena, n * d);
    a->gate = cpu_arena_floats(arena, n * f);
    a->up = cpu_arena_floats(arena, n * f);
    a->act = cpu_arena_floats(arena, n * f);
    for (int t = 0; ad && t < LORA_N_TARGETS; t++)
        if (lora_has_target(&ad->host->spec, (LoraTarget)t))
            a->lora_u[t] = cpu_arena_floats(arena, (size_t)n * ad->host->spec.rank);
}

static CpuAttnShape attn_shape(const LlamaConfig *c)
{
    CpuAttnShape sh = {c->num_attention_heads, c->num_key_value_heads, llama_head_dim(c),
                       c->hidden_size, llama_kv_dim(c)};
    return sh;
}

/* Attention inputs of each sequence: its own rows, or (decode) its cache
 * slot after this step's k, v rows are written there. */
static void attn_bind(const LlamaConfig *c, const CpuRows *rows, KvCache *kv, int layer,
                      CpuLayerActs *a, CpuAttnSeq *seqs)
{
    size_t d = c->hidden_size, kvd = llama_kv_dim(c), h = c->num_attention_heads;
    for (int s = 0; s < rows->n_seq; s++) {
        int r0 = rows->start[s], n = rows->start[s + 1] - r0;
        CpuAttnSeq *sq = &seqs[s];
        sq->q = a->q + r0 * d;
        sq->out = a->attn + r0 * d;
        sq->lse = a->lse + r0 * h;
        sq->n_q = n;
        if (!kv) {
            sq->k = a->k + r0 * kvd;
            sq->v = a->v + r0 * kvd;
            sq->n_k = n;
            continue;
        }
        float *ck = cpu_kv_k(kv, layer, rows->slot[s]), *cv = cpu_kv_v(kv, layer, rows->slot[s]);
        for (int r = r0; r < r0 + n; r++) {
            memcpy(ck + rows->pos[r] * kvd, a->k + r * kvd, kvd * sizeof(float));
            memcpy(cv + rows->pos[r] * kvd, a->v + r * kvd, kvd * sizeof(float));
        }
        sq->k = ck;
        sq->v = cv;
        sq->n_k = rows->pos[r0 + n - 1] + 1;
    }
}

static void add_into(size_t n, float *x, const float *y)
{
    for (size_t i = 0; i < n; i++) x[i] += y[i];
}

typedef struct {
    CpuAttnSeq *seqs;
    float *tmp;        /* [rows, D] */
    float *attn_tmp;   /* attention scratch */
} FwdScratch;

static void layer_forward(const LlamaModel *m, const BackendAdapter *ad, const CpuForward *f,
                          KvCache *kv, int l, CpuLayerActs *a, float *x, FwdScratch *s)
{
    const LlamaConfig *c = &m->config;
    const LlamaLayerWeights *w = &m->weights.layers[l];
    int n = f->rows.n_rows, d = c->hidden_size;
    CpuLinear lq = cpu_linear_of(m, ad, l, LORA_Q_PROJ), lk = cpu_linear_of(m, ad, l, LORA_K_PROJ);
    CpuLinear lv = cpu_linear_of(m, ad, l, LORA_V_PROJ), lo = cpu_linear_of(m, ad, l, LORA_O_PROJ);
    CpuLinear lg = cpu_linear_of(m, ad, l, LORA_GATE_PROJ);
    CpuLinear lu = cpu_linear_of(m, ad, l, LORA_UP_PROJ);
    CpuLinear ld = cpu_linear_of(m, ad, l, LORA_DOWN_PROJ);

    if (a->x_in) memcpy(a->x_in, x, (size_t)n * d * sizeof(float));
    cpu_rmsnorm_forward(n, d, x, w->input_layernorm, c->rms_norm_eps, a->h1, a->rstd1);
    cpu_linear_forward(&lq, n, a->h1, a->q, a->lora_u[LORA_Q_PROJ]);
    cpu_linear_forward(&lk, n, a->h1, a->k, a->lora_u[LORA_K_PROJ]);
    cpu_linear_forward(&lv, n, a->h1, a->v, a->lora_u[LORA_V_PROJ]);
    cpu_rope_apply(&f->rope, n, f->rows.pos, c->num_attention_heads, a->q, 1);
    cpu_rope_apply(&f->rope, n, f->rows.pos, c->num_key_value_heads, a->k, 1);
    CpuAttnShape sh = attn_shape(c);
    attn_bind(c, &f->rows, kv, l, a, s->seqs);
    cpu_attention_forward(&sh, f->rows.n_seq, s->seqs, s->attn_tmp);
    cpu_linear_forward(&lo, n, a->attn, s->tmp, a->lora_u[LORA_O_PROJ]);
    add_into((size_t)n * d, x, s->tmp);

    if (a->x_mid) memcpy(a->x_mid, x, (size_t)n * d * sizeof(float));
    cpu_rmsnorm_forward(n, d, x, w->post_attention_layernorm, c->rms_norm_eps, a->h2, a->rstd2);
    cpu_linear_forward(&lg, n, a->h2, a->gate, a->lora_u[LORA_GATE_PROJ]);
    cpu_linear_forward(&lu, n, a->h2, a->up, a->lora_u[LORA_UP_PROJ]);
    cpu_swiglu_forward((size_t)n * c->intermediate_size, a->gate, a->up, a->act);
    cpu_linear_forward(&ld, n, a->act, s->tmp, a->lora_u[LORA_DOWN_PROJ]);
    add_into((size_t)n * d, x, s->tmp);
}

/* The largest n_q * n_k of any sequence: the attention score block. */
static size_t max_scores(const CpuRows *rows)
{
    size_t mx = 1;
    for (int s = 0; s < rows->n_seq; s++) {
        size_t nq = rows->start[s + 1] - rows->start[s];
        size_t nk = nq ? (size_t)rows->pos[rows->start[s + 1] - 1] + 1 : 0;
        mx = nq * nk > mx ? nq * nk : mx;
    }
    return mx;
}

int cpu_model_forward(const LlamaModel *m, const BackendAdapter *ad, CpuForward *f,
                      KvCache *kv, CpuArena *arena, Error *err)
{
    const LlamaConfig *c = &m->config;
    int n = f->rows.n_rows, d = c->hidden_size, n_layers = c->num_hidden_layers;
    int max_pos = 0;
    for (int r = 0; r < n; r++) max_pos = f->rows.pos[r] > max_pos ? f->rows.pos[r] : max_pos;

    int n_sets = f->keep ? n_layers : 1;
    f->layers = cpu_arena_alloc(arena, (size_t)n_sets * sizeof *f->layers);
    if (f->layers)
        for (int i = 0; i < n_sets; i++) acts_alloc(c, ad, n, f->keep, &f->layers[i], arena);
    float *x = cpu_arena_floats(arena, (size_t)n * d);
    FwdScratch s;
    s.seqs = cpu_arena_alloc(arena, (size_t)f->rows.n_seq * sizeof *s.seqs);
    s.tmp = cpu_arena_floats(arena, (size_t)n * d);
    s.attn_tmp = cpu_arena_floats(arena, max_scores(&f->rows));
    int rope_failed = cpu_rope_build(&f->rope, max_pos + 1, llama_head_dim(c), c->rope_theta, arena);
    if (arena->failed || rope_failed)
        return error_set(err, "out of memory for the activations of %d rows", n);

    for (int r = 0; r < n; r++)
        memcpy(x + (size_t)r * d, m->weights.embed_tokens + (size_t)f->rows.tok[r] * d,
               (size_t)d * sizeof(float));
    for (int l = 0; l < n_layers; l++)
        layer_forward(m, ad, f, kv, l, &f->layers[f->keep ? l : 0], x, &s);
    f->x_final = x;
    f->adapter = ad;
    return 0;
}

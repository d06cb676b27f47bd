/* The backward of cpu_forward.c into the LoRA weights only: the base is
 * frozen, so no base-weight gradient is ever formed, but the activation
 * gradient dx runs through every layer (the residual stream) because every
 * adapted projection below the head needs it.  Per layer, in reverse:
 *     MLP:       dx += RMSNorm'(x_mid)[ gate'/up'( SwiGLU'( down'(dx) ) ) ]
 *     attention: dx += RMSNorm'(x_in)[ q'/k'/v'( RoPE'( attention'( o'(dx) ) ) ) ] */
#include "cpu_kernels.h"

#include <string.h>

typedef struct {
    float *dact, *dgate, *dup;  /* [rows, F] */
    float *dh, *dattn, *dq;     /* [rows, D] */
    float *dk, *dv;             /* [rows, kv_dim] */
    float *du;                  /* [rows, rank] */
    float *attn;                /* attention backward scratch */
    CpuAttnGrad *seqs;
} BwdScratch;

static int scratch_alloc(const LlamaConfig *c, const BackendAdapter *ad, const CpuRows *rows,
                         BwdScratch *s, CpuArena *arena)
{
    size_t n = rows->n_rows, d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    size_t longest = 1;
    for (int i = 0; i < rows->n_seq; i++) {
        size_t len = rows->start[i + 1] - rows->start[i];
        longest = len > longest ? len : longest;
    }
    s->dact = cpu_arena_floats(arena, n * f);
    s->dgate = cpu_arena_floats(arena, n * f);
    s->dup = cpu_arena_floats(arena, n * f);
    s->dh = cpu_arena_floats(arena, n * d);
    s->dattn = cpu_arena_floats(arena, n * d);
    s->dq = cpu_arena_floats(arena, n * d);
    s->dk = cpu_arena_floats(arena, n * kv);
    s->dv = cpu_arena_floats(arena, n * kv);
    s->du = cpu_arena_floats(arena, n * (size_t)ad->host->spec.rank);
    s->attn = cpu_arena_floats(arena, 2 * longest * longest + longest);
    s->seqs = cpu_arena_alloc(arena, (size_t)rows->n_seq * sizeof *s->seqs);
    return arena->failed ? -1 : 0;
}

static void mlp_backward(const LlamaModel *m, const BackendAdapter *ad, int l, int n,
                         const CpuLayerActs *a, float *dx, BwdScratch *s)
{
    const LlamaConfig *c = &m->config;
    CpuLinear lg = cpu_linear_of(m, ad, l, LORA_GATE_PROJ);
    CpuLinear lu = cpu_linear_of(m, ad, l, LORA_UP_PROJ);
    CpuLinear ld = cpu_linear_of(m, ad, l, LORA_DOWN_PROJ);
    cpu_linear_backward(&ld, n, a->act, a->lora_u[LORA_DOWN_PROJ], dx, s->dact, 0.0f, s->du);
    cpu_swiglu_backward((size_t)n * c->intermediate_size, a->gate, a->up, s->dact, s->dgate,
                        s->dup);
    cpu_linear_backward(&lg, n, a->h2, a->lora_u[LORA_GATE_PROJ], s->dgate, s->dh, 0.0f, s->du);
    cpu_linear_backward(&lu, n, a->h2, a->lora_u[LORA_UP_PROJ], s->dup, s->dh, 1.0f, s->du);
    cpu_rmsnorm_backward(n, c->hidden_size, a->x_mid, m->weights.layers[l].post_attention_layernorm,
                         a->rstd2, s->dh, dx);
}

static void attention_backward(const LlamaModel *m, const BackendAdapter *ad, int l,
                               const CpuForward *f, const CpuLayerActs *a, float *dx,
                               BwdScratch *s)
{
    const LlamaConfig *c = &m->config;
    const CpuRows *rows = &f->rows;
    int n = rows->n_rows;
    size_t d = c->hidden_size, kvd = llama_kv_dim(c), h = c->num_attention_heads;
    CpuLinear lq = cpu_linear_of(m, ad, l, LORA_Q_PROJ), lk = cpu_linear_of(m, ad, l, LORA_K_PROJ);
    CpuLinear lv = cpu_linear_of(m, ad, l, LORA_V_PROJ), lo = cpu_linear_of(m, ad, l, LORA_O_PROJ);

    cpu_linear_backward(&lo, n, a->attn, a->lora_u[LORA_O_PROJ], dx, s->dattn, 0.0f, s->du);
    for (int i = 0; i < rows->n_seq; i++) {
        size_t r0 = rows->start[i];
        CpuAttnGrad *g = &s->seqs[i];
        g->n = rows->start[i + 1] - rows->start[i];
        g->q = a->q + r0 * d;
        g->out = a->attn + r0 * d;
        g->dout = s->dattn + r0 * d;
        g->dq = s->dq + r0 * d;
        g->lse = a->lse + r0 * h;
        g->k = a->k + r0 * kvd;
        g->v = a->v + r0 * kvd;
        g->dk = s->dk + r0 * kvd;
        g->dv = s->dv + r0 * kvd;
    }
    CpuAttnShape sh = {c->num_attention_heads, c->num_key_value_heads, llama_head_dim(c),
                       c->hidden_size, llama_kv_dim(c)};
    cpu_attention_backward(&sh, rows->n_seq, s->seqs, s->attn);
    cpu_rope_apply(&f->rope, n, rows->pos, c->num_attention_heads, s->dq, -1);
    cpu_rope_apply(&f->rope, n, rows->pos, c->num_key_value_heads, s->dk, -1);
    /* Below layer 0 there are only the frozen embeddings: no dx to form. */
    float *dh = l > 0 ? s->dh : NULL;
    cpu_linear_backward(&lq, n, a->h1, a->lora_u[LORA_Q_PROJ], s->dq, dh, 0.0f, s->du);
    cpu_linear_backward(&lk, n, a->h1, a->lora_u[LORA_K_PROJ], s->dk, dh, 1.0f, s->du);
    cpu_linear_backward(&lv, n, a->h1, a->lora_u[LORA_V_PROJ], s->dv, dh, 1.0f, s->du);
    if (dh)
        cpu_rmsnorm_backward(n, c->hidden_size, a->x_in, m->weights.layers[l].input_layernorm,
                             a->rstd1, dh, dx);
}

int cpu_model_backward(const LlamaModel *m, int chunk, const BackendAdapter *ad,
                       const CpuForward *f, const float *dlogps, CpuArena *arena, Error *err)
{
    const LlamaConfig *c = &m->config;
    int n = f->rows.n_rows;
    BwdScratch s;
    float *dx = cpu_arena_floats(arena, (size_t)n * c->hidden_size);
    float *dlogp = cpu_arena_floats(arena, (size_t)f->labels.n);
    float *head = cpu_arena_floats(arena, cpu_logprobs_scratch(c, chunk));
    if (scratch_alloc(c, ad, &f->rows, &s, arena) || !dx || !dlogp || !head)
        return error_set(err, "out of memory for the backward of %d rows", n);

    memset(dx, 0, (size_t)n * c->hidden_size * sizeof(float));
    for (int i = 0; i < f->labels.n; i++) dlogp[i] = dlogps[f->labels.seq[i]];
    cpu_logprobs_backward(m, chunk, f->x_final, &f->labels, dlogp, dx, head);
    for (int l = c->num_hidden_layers - 1; l >= 0; l--) {
        mlp_backward(m, ad, l, n, &f->layers[l], dx, &s);
        attention_backward(m, ad, l, f, &f->layers[l], dx, &s);
    }
    return 0;
}

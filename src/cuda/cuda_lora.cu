/* A frozen bf16 Linear with an optional PEFT LoRA (as cpu_linear.c):
 *     y = x W^T + scale * (x A^T) B^T,   u = x A^T
 * backward into the LoRA weights only (fp32 accumulators):
 *     dB += scale * dy^T u,  du = scale * dy B,  dA += du^T x,
 *     dx  = dy W + du A.
 * The GEMMs read the adapter's bf16 copy; gradients accumulate in fp32
 * straight into the adapter's device grads (beta = 1). */
#include "cuda/cuda_kernels.cuh"

CuLinear cu_linear_of(const CuState *st, const BackendAdapter *ad, int layer, LoraTarget t)
{
    const LlamaConfig *c = &st->c;
    int d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    CuLinear lin = {};
    lin.w = st->layers[layer].w[t];
    switch (t) {
    case LORA_Q_PROJ: case LORA_O_PROJ: lin.in = d; lin.out = d; break;
    case LORA_K_PROJ: case LORA_V_PROJ: lin.in = d; lin.out = kv; break;
    case LORA_GATE_PROJ: case LORA_UP_PROJ: lin.in = d; lin.out = f; break;
    default: lin.in = f; lin.out = d; break;
    }
    const LoraSlot *s = ad ? lora_slot(ad->host, layer, t) : NULL;
    if (s) {
        const CuAdapter *ca = (const CuAdapter *)ad->impl;
        lin.a = ca->pbf + s->a_offset;
        lin.b = ca->pbf + s->b_offset;
        lin.da = ca->grads + s->a_offset;
        lin.db = ca->grads + s->b_offset;
        lin.r = ad->host->spec.rank;
        lin.scale = lora_scale(&ad->host->spec);
    }
    return lin;
}

/* y = beta y + x W^T alone. */
static int base_forward(CuState *st, const CuLinear *l, int n, const bf16 *x, void *y, int y_f32,
                        float beta, Error *err)
{
    int parts = cu_gemm_split_k(st, n, l->out, l->in);
    if (cu_gemv_usable(st, n, l->in)) return cu_gemv(st, n, l->out, l->in, x, l->w, beta, y, y_f32, err);
    if (parts > 1) return cu_gemm_rows_split(st, n, l->out, l->in, x, l->w, beta, y, y_f32, parts, err);
    return cu_gemm(st, 0, 1, n, l->out, l->in, 1.0f, x, l->in, l->w, l->in, beta, y, y_f32, l->out,
                   err);
}

/* u = x A^T, y += scale u B^T: GEMVs for a decode step's few rows (cuBLAS
 * spends more launching these tiny products than computing them). */
static int lora_forward(CuState *st, const CuLinear *l, int n, const bf16 *x, void *y, int y_f32,
                        bf16 *u, Error *err)
{
    if (!l->a) return 0;
    if (cu_gemv_usable(st, n, l->in) && cu_gemv_usable(st, n, l->r)) {
        CuGemvPart down = {l->a, u, l->r, NULL}, up = {l->b, y, l->out, NULL};
        TRY(cu_gemv_many(st, n, l->in, x, &down, 1, 1.0f, 0.0f, 0, err));
        return cu_gemv_many(st, n, l->r, u, &up, 1, l->scale, 1.0f, y_f32, err);
    }
    TRY(cu_gemm(st, 0, 1, n, l->r, l->in, 1.0f, x, l->in, l->a, l->in, 0.0f, u, 0, l->r, err));
    return cu_gemm(st, 0, 1, n, l->out, l->r, l->scale, u, l->r, l->b, l->r, 1.0f, y, y_f32,
                   l->out, err);
}

int cu_linear_forward(CuState *st, const CuLinear *l, int n, const bf16 *x, void *y, int y_f32,
                      float beta, bf16 *u, Error *err)
{
    TRY(base_forward(st, l, n, x, y, y_f32, beta, err));
    return lora_forward(st, l, n, x, y, y_f32, u, err);
}

/* Whether the few-row GEMV path takes all of these Linears together. */
static int fusable(const CuState *st, const CuLinear *l, int count, int n)
{
    if (st->gemv_unfused || count < 1 || count > GEMV_MAX_PARTS / 2 || !cu_gemv_usable(st, n, l[0].in))
        return 0;
    for (int i = 0; i < count; i++) {
        if (l[i].in != l[0].in) return 0;
        if (l[i].a && (!cu_gemv_usable(st, n, l[i].r) || l[i].r != l[0].r || l[i].scale != l[0].scale))
            return 0;
    }
    return 1;
}

int cu_linear_normed_fusable(const CuState *st, const CuLinear *l, int count, int n)
{
    return fusable(st, l, count, n) && cu_gemv_staged_usable(st, n, l[0].in);
}

/* The fused launches: first every weight and LoRA A against x (or against
 * the normalised rows nx), then every LoRA B against its u. */
static int forward_fused(CuState *st, const CuLinear *l, int count, int n, const bf16 *x,
                         const CuNormedX *nx, bf16 *const *y, bf16 *const *u, Error *err)
{
    CuGemvPart first[GEMV_MAX_PARTS], second[GEMV_MAX_PARTS];
    int n1 = 0, n2 = 0, r = 0;
    float scale = 1.0f;
    for (int i = 0; i < count; i++) {
        first[n1++] = (CuGemvPart){l[i].w, y[i], l[i].out, NULL};
        if (!l[i].a) continue;
        first[n1++] = (CuGemvPart){l[i].a, u[i], l[i].r, NULL};
        second[n2++] = (CuGemvPart){l[i].b, y[i], l[i].out, u[i]};
        r = l[i].r;
        scale = l[i].scale;
    }
    if (nx) TRY(cu_gemv_many_normed(st, n, l[0].in, nx, first, n1, 1.0f, 0.0f, 0, err));
    else TRY(cu_gemv_many(st, n, l[0].in, x, first, n1, 1.0f, 0.0f, 0, err));
    return n2 ? cu_gemv_many(st, n, r, NULL, second, n2, scale, 1.0f, 0, err) : 0;
}

int cu_linear_forward_many(CuState *st, const CuLinear *l, int count, int n, const bf16 *x,
                           bf16 *const *y, bf16 *const *u, Error *err)
{
    if (!fusable(st, l, count, n)) {
        for (int i = 0; i < count; i++) TRY(cu_linear_forward(st, &l[i], n, x, y[i], 0, 0.0f, u[i], err));
        return 0;
    }
    return forward_fused(st, l, count, n, x, NULL, y, u, err);
}

int cu_linear_forward_many_normed(CuState *st, const CuLinear *l, int count, int n,
                                  const CuNormedX *nx, bf16 *const *y, bf16 *const *u, Error *err)
{
    if (!cu_linear_normed_fusable(st, l, count, n))
        return error_set(err, "linear: %d rows of %d cannot take their norm in the GEMV", n, l[0].in);
    return forward_fused(st, l, count, n, NULL, nx, y, u, err);
}

int cu_mlp_glu_fusable(const CuState *st, const CuLinear *gate, const CuLinear *up,
                       const CuLinear *down, int n)
{
    return st->gemv_glu && !gate->a && !up->a && !down->a && cu_linear_normed_fusable(st, gate, 1, n) &&
           up->in == gate->in && up->out == gate->out && down->in == gate->out &&
           cu_gemv_staged_usable(st, n, down->in);
}

int cu_mlp_forward_glu(CuState *st, const CuLinear *gate, const CuLinear *up, const CuLinear *down,
                       int n, const CuNormedX *nx, bf16 *act, float *x_out, Error *err)
{
    if (!cu_mlp_glu_fusable(st, gate, up, down, n))
        return error_set(err, "mlp: %d rows cannot take SwiGLU in the gate/up GEMV", n);
    TRY(cu_gemv_glu_normed(st, n, gate->in, nx, gate->w, up->w, gate->out, act, err));
    st->glu_gemvs++;
    return cu_gemv(st, n, down->out, down->in, act, down->w, 1.0f, x_out, 1, err);
}

int cu_linear_backward(CuState *st, const CuLinear *l, int n, const bf16 *x, const bf16 *u,
                       const bf16 *dy, float *dx, float beta, bf16 *du, Error *err)
{
    if (dx)
        TRY(cu_gemm(st, 0, 0, n, l->in, l->out, 1.0f, dy, l->out, l->w, l->in, beta, dx, 1, l->in,
                    err));
    if (!l->a) return 0;
    TRY(cu_gemm(st, 1, 0, l->out, l->r, n, l->scale, dy, l->out, u, l->r, 1.0f, l->db, 1, l->r,
                err));
    TRY(cu_gemm(st, 0, 0, n, l->r, l->out, l->scale, dy, l->out, l->b, l->r, 0.0f, du, 0, l->r,
                err));
    TRY(cu_gemm(st, 1, 0, l->r, l->in, n, 1.0f, du, l->r, x, l->in, 1.0f, l->da, 1, l->in, err));
    if (dx)
        TRY(cu_gemm(st, 0, 0, n, l->in, l->r, 1.0f, du, l->r, l->a, l->in, 1.0f, dx, 1, l->in,
                    err));
    return 0;
}

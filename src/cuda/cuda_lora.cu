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

int cu_linear_forward(CuState *st, const CuLinear *l, int n, const bf16 *x, void *y, int y_f32,
                      float beta, bf16 *u, Error *err)
{
    int parts = cu_gemm_split_k(n, l->out, l->in);
    if (cu_gemv_usable(n, l->in))
        TRY(cu_gemv(st, n, l->out, l->in, x, l->w, beta, y, y_f32, err));
    else if (parts > 1)
        TRY(cu_gemm_rows_split(st, n, l->out, l->in, x, l->w, beta, y, y_f32, parts, err));
    else
        TRY(cu_gemm(st, 0, 1, n, l->out, l->in, 1.0f, x, l->in, l->w, l->in, beta, y, y_f32,
                    l->out, err));
    if (!l->a) return 0;
    TRY(cu_gemm(st, 0, 1, n, l->r, l->in, 1.0f, x, l->in, l->a, l->in, 0.0f, u, 0, l->r, err));
    return cu_gemm(st, 0, 1, n, l->out, l->r, l->scale, u, l->r, l->b, l->r, 1.0f, y, y_f32,
                   l->out, err);
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

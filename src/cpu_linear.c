/* A frozen Linear layer with an optional PEFT LoRA:
 *     y = x W^T + scale * (x A^T) B^T,   u = x A^T
 * and its backward into the LoRA weights only (the base is frozen):
 *     dB += scale * dy^T u,  du = scale * dy B,  dA += du^T x,
 *     dx  = dy W + du A. */
#include "cpu_kernels.h"

#include <cblas.h>

static const float *layer_weight(const LlamaLayerWeights *lw, LoraTarget t)
{
    switch (t) {
    case LORA_Q_PROJ: return lw->q_proj;
    case LORA_K_PROJ: return lw->k_proj;
    case LORA_V_PROJ: return lw->v_proj;
    case LORA_O_PROJ: return lw->o_proj;
    case LORA_GATE_PROJ: return lw->gate_proj;
    case LORA_UP_PROJ: return lw->up_proj;
    default: return lw->down_proj;
    }
}

CpuLinear cpu_linear_of(const LlamaModel *m, const BackendAdapter *ad, int l, LoraTarget t)
{
    const LlamaConfig *c = &m->config;
    int d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    CpuLinear lin = {0};
    lin.w = layer_weight(&m->weights.layers[l], t);
    switch (t) {
    case LORA_Q_PROJ: case LORA_O_PROJ: lin.in = d; lin.out = d; break;
    case LORA_K_PROJ: case LORA_V_PROJ: lin.in = d; lin.out = kv; break;
    case LORA_GATE_PROJ: case LORA_UP_PROJ: lin.in = d; lin.out = f; break;
    default: lin.in = f; lin.out = d; break;
    }
    const LoraSlot *s = ad ? lora_slot(ad->host, l, t) : NULL;
    if (s) {
        LoraAdapter *h = ad->host;
        lin.a = h->params + s->a_offset;
        lin.b = h->params + s->b_offset;
        lin.da = h->grads + s->a_offset;
        lin.db = h->grads + s->b_offset;
        lin.r = h->spec.rank;
        lin.scale = lora_scale(&h->spec);
    }
    return lin;
}

void cpu_linear_forward(const CpuLinear *lin, int n, const float *x, float *y, float *u)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->out, lin->in, 1.0f, x, lin->in,
                lin->w, lin->in, 0.0f, y, lin->out);
    if (!lin->a) return;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->r, lin->in, 1.0f, x, lin->in,
                lin->a, lin->in, 0.0f, u, lin->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, lin->out, lin->r, lin->scale, u,
                lin->r, lin->b, lin->r, 1.0f, y, lin->out);
}

void cpu_linear_backward(const CpuLinear *lin, int n, const float *x, const float *u,
                         const float *dy, float *dx, float beta, float *du)
{
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, lin->in, lin->out, 1.0f, dy,
                    lin->out, lin->w, lin->in, beta, dx, lin->in);
    if (!lin->a) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lin->out, lin->r, n, lin->scale, dy,
                lin->out, u, lin->r, 1.0f, lin->db, lin->r);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, lin->r, lin->out, lin->scale, dy,
                lin->out, lin->b, lin->r, 0.0f, du, lin->r);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, lin->r, lin->in, n, 1.0f, du, lin->r,
                x, lin->in, 1.0f, lin->da, lin->in);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, lin->in, lin->r, 1.0f, du,
                    lin->r, lin->a, lin->in, 1.0f, dx, lin->in);
}

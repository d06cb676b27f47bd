/* The decode step's weight streaming alone, for benchmarks: every layer's
 * Linears on one row, as decode_step runs them (q/k/v and gate/up fused
 * unless MODPO_CUDA_GEMV=unfused, with the norms and SwiGLU formed in their
 * prologues), then the LM head, back to back on the stream with nothing
 * else between them.  Compared with a whole decode step it separates the
 * GEMVs' own time from the small kernels around them. */
#include "cuda/cuda_kernels.cuh"
#include "cuda_backend.h"

struct GemvBenchBufs {
    bf16 *x, *y[5];
    float *res, *logits;
};

static void bufs_free(GemvBenchBufs *b)
{
    cudaFree(b->x);
    for (int i = 0; i < 5; i++) cudaFree(b->y[i]);
    cudaFree(b->res);
    cudaFree(b->logits);
}

static int bufs_alloc(const LlamaConfig *c, GemvBenchBufs *b, Error *err)
{
    size_t wide = (size_t)(c->intermediate_size > c->hidden_size ? c->intermediate_size : c->hidden_size);
    CU_TRY(cudaMalloc((void **)&b->x, wide * sizeof(bf16)));
    CU_TRY(cudaMemset(b->x, 0, wide * sizeof(bf16)));
    for (int i = 0; i < 5; i++) CU_TRY(cudaMalloc((void **)&b->y[i], wide * sizeof(bf16)));
    CU_TRY(cudaMalloc((void **)&b->res, (size_t)c->hidden_size * sizeof(float)));
    CU_TRY(cudaMemset(b->res, 0, (size_t)c->hidden_size * sizeof(float)));
    CU_TRY(cudaMalloc((void **)&b->logits, (size_t)c->vocab_size * sizeof(float)));
    return 0;
}

/* RMSNorm(res) -> the Linears reading it, as norm_then_linears does for a
 * decode row: inside their GEMV when it can form x itself. */
static int normed_linears(CuState *st, const CuLinear *lin, int count, const float *res, const float *w,
                          bf16 *const *y, const GemvBenchBufs *b, Error *err)
{
    bf16 *const no_u[3] = {NULL, NULL, NULL};
    if (cu_linear_normed_fusable(st, lin, count, 1)) {
        CuNormedX nx = {res, NULL, w, st->c.rms_norm_eps};
        return cu_linear_forward_many_normed(st, lin, count, 1, &nx, y, no_u, err);
    }
    TRY(cu_rmsnorm_forward(st, 1, st->c.hidden_size, res, NULL, w, st->c.rms_norm_eps, b->x, NULL, err));
    return cu_linear_forward_many(st, lin, count, 1, b->x, y, no_u, err);
}

/* The MLP into the residual as attention_out runs it for a decode row:
 * SwiGLU in gate/up's epilogue when it can, else in down_proj's prologue. */
static int mlp(CuState *st, const CuLinear *lin, const float *ln2, const GemvBenchBufs *b, Error *err)
{
    const CuLinear *lg = &lin[LORA_GATE_PROJ], *lu = &lin[LORA_UP_PROJ], *ld = &lin[LORA_DOWN_PROJ];
    if (cu_mlp_glu_fusable(st, lg, lu, ld, 1)) {
        CuNormedX nx = {b->res, NULL, ln2, st->c.rms_norm_eps};
        return cu_mlp_forward_glu(st, lg, lu, ld, 1, &nx, b->x, b->res, err);
    }
    bf16 *const gu_y[2] = {b->y[3], b->y[4]};
    TRY(normed_linears(st, lg, 2, b->res, ln2, gu_y, b, err));
    if (cu_gemv_staged_usable(st, 1, ld->in)) {
        CuGluX glu = {b->y[3], b->y[4]};
        CuGemvPart down = {ld->w, b->res, ld->out, NULL};
        return cu_gemv_many_glu(st, 1, ld->in, &glu, &down, 1, 1.0f, 1.0f, 1, err);
    }
    TRY(cu_swiglu_forward(st, (size_t)st->c.intermediate_size, b->y[3], b->y[4], b->x, err));
    return cu_linear_forward(st, ld, 1, b->x, b->res, 1, 1.0f, NULL, err);
}

/* The GEMVs form x as a decode step's do (the norm or SwiGLU in their
 * prologue): a kernel timeline showed those prologues, not the streaming,
 * to be most of the GEMVs' gap to the copy rate (bench/NOTES-gpu.md step
 * 18), which a pass on a ready-made x never saw. */
static int one_pass(CuState *st, const GemvBenchBufs *b, Error *err)
{
    const LlamaConfig *c = &st->c;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        CuLinear lin[LORA_N_TARGETS];
        for (int t = 0; t < LORA_N_TARGETS; t++) lin[t] = cu_linear_of(st, NULL, l, (LoraTarget)t);
        bf16 *const qkv_y[3] = {b->y[0], b->y[1], b->y[2]};
        TRY(normed_linears(st, lin, 3, b->res, st->layers[l].ln1, qkv_y, b, err));
        TRY(cu_linear_forward(st, &lin[LORA_O_PROJ], 1, b->y[0], b->res, 1, 1.0f, NULL, err));
        TRY(mlp(st, lin, st->layers[l].ln2, b, err));
    }
    CuNormedX nx = {b->res, NULL, st->norm, c->rms_norm_eps};
    CuGemvPart head = {st->lm_head, b->logits, c->vocab_size, NULL};
    return cu_gemv_many_normed(st, 1, c->hidden_size, &nx, &head, 1, 1.0f, 0.0f, 1, err);
}

static int timed_passes(CuState *st, const GemvBenchBufs *b, int reps, float *ms, Error *err)
{
    cudaEvent_t e0, e1;
    CU_TRY(cudaEventCreate(&e0));
    CU_TRY(cudaEventCreate(&e1));
    int rc = one_pass(st, b, err); /* warm-up */
    if (!rc && cudaEventRecord(e0, st->stream) != cudaSuccess) rc = error_set(err, "event record");
    for (int i = 0; !rc && i < reps; i++) rc = one_pass(st, b, err);
    if (!rc && (cudaEventRecord(e1, st->stream) != cudaSuccess || cudaEventSynchronize(e1) != cudaSuccess ||
                cudaEventElapsedTime(ms, e0, e1) != cudaSuccess))
        rc = error_set(err, "timing the GEMV passes");
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return rc;
}

extern "C" int cuda_backend_gemv_bench(Backend *be, int reps, double *ms_per_pass, double *bytes_per_pass,
                                       Error *err)
{
    CuState *st = cu_state(be);
    const LlamaConfig *c = &st->c;
    GemvBenchBufs b = {};
    float ms = 0;
    int rc = bufs_alloc(c, &b, err) || timed_passes(st, &b, reps, &ms, err);
    bufs_free(&b);
    if (rc) return error_prefix(err, "gemv bench: ");
    double d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    *bytes_per_pass = 2.0 * (c->num_hidden_layers * (2 * d * d + 2 * d * kv + 3 * d * f) +
                             (double)c->vocab_size * d);
    *ms_per_pass = ms / reps;
    return 0;
}

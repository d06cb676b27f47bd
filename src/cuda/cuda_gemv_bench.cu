/* The decode step's weight streaming alone, for benchmarks: every layer's
 * Linears on one row, as decode_step runs them (q/k/v and gate/up fused
 * unless MODPO_CUDA_GEMV=unfused), then the LM head, back to back on the
 * stream with nothing else between them.  Compared with a whole decode step
 * it separates the GEMVs' own bandwidth from the small kernels around them. */
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
    CU_TRY(cudaMalloc((void **)&b->logits, (size_t)c->vocab_size * sizeof(float)));
    return 0;
}

static int one_pass(CuState *st, const GemvBenchBufs *b, Error *err)
{
    const LlamaConfig *c = &st->c;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        CuLinear lin[LORA_N_TARGETS];
        for (int t = 0; t < LORA_N_TARGETS; t++) lin[t] = cu_linear_of(st, NULL, l, (LoraTarget)t);
        bf16 *const qkv_y[3] = {b->y[0], b->y[1], b->y[2]}, *const gu_y[2] = {b->y[3], b->y[4]};
        bf16 *const no_u[3] = {NULL, NULL, NULL};
        TRY(cu_linear_forward_many(st, lin, 3, 1, b->x, qkv_y, no_u, err));
        TRY(cu_linear_forward(st, &lin[LORA_O_PROJ], 1, b->x, b->res, 1, 1.0f, NULL, err));
        TRY(cu_linear_forward_many(st, lin + LORA_GATE_PROJ, 2, 1, b->x, gu_y, no_u, err));
        TRY(cu_linear_forward(st, &lin[LORA_DOWN_PROJ], 1, b->x, b->res, 1, 1.0f, NULL, err));
    }
    return cu_gemv(st, 1, c->vocab_size, c->hidden_size, b->x, st->lm_head, 0.0f, b->logits, 1, err);
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

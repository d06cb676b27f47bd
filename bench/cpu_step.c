/* CPU backend training step: forward (logps, keep) + backward of the summed
 * completion logps into a LoRA (q_proj, v_proj, r 16, alpha 32), on a random
 * Llama made in memory (no files).  bench/torch_cpu_step.py times the same
 * step in PyTorch; bench/run_cpu_bench.sh runs both.
 *
 *   cpu_step [--shape tiny|100m] [--batch 4] [--seq 256] [--completion 128]
 *            [--steps 3] [--warmup 1] [--chunk 0 (LM head rows per chunk; 0: default)]
 *
 * Prints one JSON line: the best (minimum) and median seconds per step,
 * forward+backward and forward alone, and tokens/s of the best step (every
 * token of the batch counts).  The best step is the number to compare on a
 * shared machine: interference only ever adds time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "model_io.h"

typedef struct {
    const char *shape;
    int batch, seq, completion, steps, warmup, chunk;
} Args;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* The presets' shapes (src/model_presets.c); tiny with Llama-2's vocab. */
static int shape_config(const char *name, LlamaConfig *c)
{
    LlamaConfig tiny = {64, 176, 2, 4, 2, 32000, 512, 1e-5f, 10000.0f, false, 1, 2};
    LlamaConfig m100 = {768, 2048, 12, 12, 12, 32000, 2048, 1e-5f, 10000.0f, true, 1, 2};
    if (strcmp(name, "tiny") == 0) *c = tiny;
    else if (strcmp(name, "100m") == 0) *c = m100;
    else return -1;
    return 0;
}

static int parse_args(int argc, char **argv, Args *a)
{
    *a = (Args){"tiny", 4, 256, 128, 3, 1, 0};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--shape") == 0) a->shape = v;
        else if (strcmp(k, "--batch") == 0) a->batch = atoi(v);
        else if (strcmp(k, "--seq") == 0) a->seq = atoi(v);
        else if (strcmp(k, "--completion") == 0) a->completion = atoi(v);
        else if (strcmp(k, "--steps") == 0) a->steps = atoi(v);
        else if (strcmp(k, "--warmup") == 0) a->warmup = atoi(v);
        else if (strcmp(k, "--chunk") == 0) a->chunk = atoi(v);
        else return -1;
    }
    if (argc % 2 == 0 || a->batch < 1 || a->seq < 2 || a->completion < 1 ||
        a->completion >= a->seq || a->steps < 1 || a->warmup < 0)
        return -1;
    return 0;
}

/* Full-length sequences (no padding, like the torch side), random tokens,
 * the last `completion` positions labelled. */
static int make_batch(const Args *a, int vocab, Batch *b)
{
    size_t n = (size_t)a->batch * a->seq;
    memset(b, 0, sizeof *b);
    b->n_seq = a->batch;
    b->seq_len = a->seq;
    b->tokens = malloc(n * sizeof *b->tokens);
    b->lengths = malloc((size_t)a->batch * sizeof *b->lengths);
    b->label_mask = calloc(n, 1);
    if (!b->tokens || !b->lengths || !b->label_mask) return -1;
    uint64_t x = 88172645463325252ull;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        b->tokens[i] = 3 + (int32_t)(x % (uint64_t)(vocab - 3));
        b->label_mask[i] = (int)(i % (size_t)a->seq) >= a->seq - a->completion;
    }
    for (int s = 0; s < a->batch; s++) b->lengths[s] = a->seq;
    return 0;
}

static int run(const Args *a, Error *err)
{
    LlamaConfig cfg;
    if (shape_config(a->shape, &cfg)) return error_set(err, "unknown shape %s", a->shape);
    LlamaModel model;
    LoraAdapter lora;
    Backend *be = NULL;
    BackendAdapter *ba = NULL;
    Batch batch = {0};
    if (llama_model_init_random(&model, &cfg, 1234, err)) return -1;
    LoraSpec spec = {16, 32.0f, (1u << LORA_Q_PROJ) | (1u << LORA_V_PROJ)};
    int rc = lora_adapter_init(&lora, &cfg, spec, err);
    if (rc == 0) {
        lora_adapter_randomize(&lora, 7);
        CpuBackendOptions opts = {a->chunk};
        rc = cpu_backend_create(&model, &opts, &be, err);
    }
    if (rc == 0) rc = be->ops->adapter_bind(be, &lora, &ba, err);
    if (rc == 0 && make_batch(a, cfg.vocab_size, &batch)) rc = error_set(err, "out of memory");

    float *lp = malloc((size_t)a->batch * sizeof *lp), *dl = malloc((size_t)a->batch * sizeof *dl);
    double *t_step = calloc((size_t)a->steps, sizeof *t_step);
    double *t_fwd = calloc((size_t)a->steps, sizeof *t_fwd);
    if (rc == 0 && (!lp || !dl || !t_step || !t_fwd)) rc = error_set(err, "out of memory");
    for (int s = 0; rc == 0 && s < a->batch; s++) dl[s] = 1.0f;
    for (int it = -a->warmup; rc == 0 && it < a->steps; it++) {
        double t0 = now();
        rc = be->ops->adapter_zero_grads(be, ba, err);
        if (rc == 0) rc = backend_logps(be, ba, &batch, lp, 1, err);
        if (rc == 0) rc = backend_backward(be, ba, &batch, dl, err);
        if (rc == 0) rc = backend_sync(be, err);
        double t1 = now();
        if (rc == 0) rc = backend_logps(be, ba, &batch, lp, 0, err);
        double t2 = now();
        if (it >= 0) {
            t_step[it] = t1 - t0;
            t_fwd[it] = t2 - t1;
        }
    }
    if (rc == 0) {
        double step_med = median(t_step, a->steps), fwd_med = median(t_fwd, a->steps);
        double step = t_step[0], fwd = t_fwd[0]; /* sorted by median() */
        double tokens = (double)a->batch * a->seq;
        printf("{\"impl\": \"modpo-cpu\", \"shape\": \"%s\", \"batch\": %d, \"seq\": %d, "
               "\"completion\": %d, \"steps\": %d, \"step_s\": %.4f, \"step_s_median\": %.4f, "
               "\"fwd_s\": %.4f, \"fwd_s_median\": %.4f, \"step_tokens_per_s\": %.1f, "
               "\"fwd_tokens_per_s\": %.1f}\n",
               a->shape, a->batch, a->seq, a->completion, a->steps, step, step_med, fwd, fwd_med,
               tokens / step, tokens / fwd);
    }
    free(lp);
    free(dl);
    free(t_step);
    free(t_fwd);
    free(batch.tokens);
    free(batch.lengths);
    free(batch.label_mask);
    if (ba) be->ops->adapter_unbind(be, ba);
    backend_destroy(be);
    lora_adapter_free(&lora);
    llama_model_free(&model);
    return rc;
}

int main(int argc, char **argv)
{
    Args a;
    if (parse_args(argc, argv, &a)) {
        fprintf(stderr, "usage: cpu_step [--shape tiny|100m] [--batch B] [--seq T] "
                        "[--completion C] [--steps N] [--warmup W] [--chunk ROWS]\n");
        return 2;
    }
    Error err;
    if (run(&a, &err)) {
        fprintf(stderr, "cpu_step: %s\n", err.msg);
        return 1;
    }
    return 0;
}

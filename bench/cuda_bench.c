/* The CUDA side of the GPU benchmarks (bench/README.md, issue 7); the
 * PyTorch side is bench/torch_gpu_bench.py and bench/run_gpu_bench.sh runs
 * both in one device call.  The model is random (Llama-2-7B's shape by
 * default, made on the GPU: no files), the workload is the one the PyTorch
 * script runs:
 *
 *   gemm        bf16 8192^3 GEMM (cuBLAS) TFLOP/s and device copy GB/s
 *   modpo       the MODPO training step at P pairs per micro-batch: policy
 *               logps (kept) -> MODPO dL/dlogp on the GPU against cached
 *               reference and margin values -> backward -> sync (the loss
 *               and metrics on the host) -> clip 1.0, AdamW; as the trainer
 *               does it
 *   precompute  the frozen passes: reference logps (no adapter) and margin
 *               logps (a second adapter) of B sequences
 *   precompute_pairs
 *               the same two passes as the precompute stage runs them
 *               (pair_logps_all) over pairs shaped like a HelpSteer split's
 *               helpfulness pairs (--pairs-data DIR: its train.jsonl.gz gives
 *               the prompt groups and the j < k pairs; the tokens are random,
 *               --seq-len each, labels from --prompt-len): a response that is
 *               a side of several pairs is computed once, so the pairs cost
 *               fewer passes than 2 sequences each.  Batches of --batches
 *               sequences (B/2 pairs, as the stage's batch_size); the first
 *               --precompute-pairs N pairs (default: all)
 *   decode      prefill + greedy decode with the KV cache, batch 1 and 64, of
 *               the base model (and with --gen-lora 1 under a LoRA, as the
 *               generate stage decodes its policy)
 *   startup     (--model-dir DIR, a Hugging Face folder) from process start:
 *               load the model, put it on the GPU, bind a LoRA and finish
 *               one MODPO step of 1 pair, as `modpo modpo` does
 *
 * Under mpirun every rank takes its node-local GPU and the ranks form groups
 * of --group-size (default: all): a group runs data-parallel MODPO steps,
 * its gradients summed by the trainer's own path (NCCL, ZeRO-1 AdamW); the
 * groups run at once, independently, as the w grid's rank groups do.
 *
 *   cuda_bench [--what gemm,modpo,precompute,precompute_pairs,decode]
 *              [--preset llama2-7b] [--pairs 1,2,4,8] [--seq-len 512] [--prompt-len 256]
 *              [--batches 8,16,32] [--pairs-data data/helpsteer-sample]
 *              [--precompute-pairs N] [--gen-batches 1,64] [--gen-prompt-len 128]
 *              [--gen-new 128] [--gen-lora 0|1] [--steps 5] [--warmup 2] [--recompute 0|1]
 *              [--optimizer backend|host] [--out FILE]
 *
 * --optimizer: where the MODPO step's clip + AdamW runs -- on the GPU
 * (adamw_step, the trainer's default; gradients summed by NCCL in place) or
 * on the host (gradients pulled, ZeRO-1 AdamW, params pushed back).
 *
 * Each measurement prints one JSON line (and appends it to --out).  FLOPs
 * follow the PyTorch script's convention: N_mm = parameters of every Linear
 * including the LM head; per token fwd = 2 N_mm + 2 layers seq d, a
 * LoRA-only backward = 2 N_mm + 4 layers seq d. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "backend.h"
#include "cuda_backend.h"
#include "dist/dist_allreduce.h"
#include "dist/dist_world.h"
#include "dist/dist_zero.h"
#include "helpsteer.h"
#include "lora.h"
#include "losses.h"
#include "model_io.h"
#include "model_presets.h"
#include "pairs.h"
#include "precompute.h"
#include "sampling.h"
#include "unique_sequences.h"

#define MAX_LIST 8

typedef struct {
    int v[MAX_LIST], n;
} IntList;

typedef struct {
    const char *what, *preset, *out, *model_dir;
    const char *pairs_data; /* a HelpSteer folder: the pair structure of precompute_pairs */
    int precompute_pairs;   /* the first N of its helpfulness pairs (0: all) */
    double t_start; /* process start, for startup */
    int quiet;      /* no records */
    IntList pairs, batches, gen_batches;
    int seq_len, prompt_len, gen_prompt_len, gen_new, steps, warmup, group_size;
    int recompute;      /* activation recomputation in the training step */
    int host_optimizer; /* --optimizer host: AdamW on the host, as before the device step */
    int gen_lora;       /* --gen-lora 1: decode also with a LoRA (r 16, q/v) bound */
    double gemm_tflops; /* measured in this run (or --gemm-tflops), for MFU */
    DistComm *group;    /* this rank's data-parallel group */
    int n_groups;
} Args;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int parse_list(const char *s, IntList *l)
{
    l->n = 0;
    while (*s && l->n < MAX_LIST) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 1) return -1;
        l->v[l->n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    return l->n ? 0 : -1;
}

/* An exact name of the --what list ("precompute" is not "precompute_pairs"). */
static int wants(const Args *a, const char *what)
{
    size_t n = strlen(what);
    for (const char *w = a->what; *w;) {
        size_t len = strcspn(w, ",");
        if (len == n && strncmp(w, what, n) == 0) return 1;
        w += len + (w[len] == ',');
    }
    return 0;
}

/* ---------------- JSON records ---------------- */

typedef struct {
    char buf[4096];
    size_t len;
} Record;

static void rec_add(Record *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->buf + r->len, sizeof r->buf - r->len, fmt, ap);
    va_end(ap);
    if (n > 0) r->len += (size_t)n < sizeof r->buf - r->len ? (size_t)n : sizeof r->buf - r->len - 1;
}

static void rec_begin(Record *r, const char *bench, const Args *a)
{
    char card[256] = "unknown", date[32];
    struct cudaDeviceProp prop;
    int dev = 0;
    if (cudaGetDevice(&dev) == cudaSuccess && cudaGetDeviceProperties(&prop, dev) == cudaSuccess)
        snprintf(card, sizeof card, "%s", prop.name);
    time_t t = time(NULL);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", gmtime(&t));
    const char *graphs = getenv("MODPO_CUDA_GRAPHS"); /* the backend's default: on */
    r->len = 0;
    rec_add(r, "{\"bench\": \"%s\", \"impl\": \"modpo-cuda\", \"card\": \"%s\", \"date\": \"%s\", "
            "\"shape\": \"%s\", \"seq_len\": %d, \"prompt_len\": %d, \"ranks_per_group\": %d, "
            "\"groups\": %d, \"group\": %d, \"recompute\": %d, \"optimizer\": \"%s\", "
            "\"cuda_graphs\": %d",
            bench, card, date, a->preset, a->seq_len, a->prompt_len, dist_size(a->group),
            a->n_groups, a->group ? a->group->color : 0, a->recompute,
            a->host_optimizer ? "host" : "backend", !graphs || strcmp(graphs, "0") != 0);
}

/* Only a group's first rank reports. */
static void rec_end(Record *r, const Args *a)
{
    if (!dist_is_root(a->group) || a->quiet) return;
    rec_add(r, "}");
    printf("%s\n", r->buf);
    fflush(stdout);
    if (a->out) {
        FILE *f = fopen(a->out, "a");
        if (f) {
            fprintf(f, "%s\n", r->buf);
            fclose(f);
        }
    }
}

static double device_used_gib(void)
{
    size_t free_b = 0, total = 0;
    if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) return -1.0;
    return (double)(total - free_b) / (1024.0 * 1024.0 * 1024.0);
}

/* ---------------- FLOPs ---------------- */

static double linear_params(const LlamaConfig *c)
{
    double d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    double layer = d * d * 2 + 2 * d * kv + 3 * d * f;
    return layer * c->num_hidden_layers + (double)c->vocab_size * d;
}

static double fwd_flops_per_token(const LlamaConfig *c, int seq)
{
    return 2 * linear_params(c) + 2.0 * c->num_hidden_layers * seq * c->hidden_size;
}

static double bwd_flops_per_token(const LlamaConfig *c, int seq)
{
    return 2 * linear_params(c) + 4.0 * c->num_hidden_layers * seq * c->hidden_size;
}

/* ---------------- gemm ceiling and copy bandwidth ---------------- */

#define CUDA_OK(call)                                                                      \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess) {                                                           \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call,                  \
                    cudaGetErrorString(e_));                                               \
            return -1;                                                                     \
        }                                                                                  \
    } while (0)

static int bench_gemm(Args *a)
{
    const int n = 8192, reps = 10;
    void *A, *B, *C;
    size_t bytes = (size_t)n * n * 2;
    CUDA_OK(cudaMalloc(&A, bytes));
    CUDA_OK(cudaMalloc(&B, bytes));
    CUDA_OK(cudaMalloc(&C, bytes));
    /* Random operands: constant ones let the card run cooler and faster
     * than any real GEMM does. */
    uint16_t *host = malloc(bytes);
    if (!host) return -1;
    uint64_t rs = 12345;
    for (size_t i = 0; i < (size_t)n * n; i++) {
        rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17;
        host[i] = (uint16_t)(0x3c00 | (rs & 0x7f) | ((rs >> 8 & 1) << 15)); /* +-[0.0078, 0.0156) */
    }
    CUDA_OK(cudaMemcpy(A, host, bytes, cudaMemcpyHostToDevice));
    CUDA_OK(cudaMemcpy(B, host, bytes, cudaMemcpyHostToDevice));
    free(host);
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) return -1;
    float one = 1.0f, zero = 0.0f;
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    double best = 0;
    for (int r = 0; r < reps + 2; r++) {
        cudaEventRecord(e0, 0);
        cublasStatus_t s = cublasGemmEx(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, A, CUDA_R_16BF,
                                        n, B, CUDA_R_16BF, n, &zero, C, CUDA_R_16BF, n,
                                        CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        if (s != CUBLAS_STATUS_SUCCESS) return -1;
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        double tf = 2.0 * n * n * (double)n / (ms * 1e-3) / 1e12;
        if (r >= 2 && tf > best) best = tf;
    }
    cublasDestroy(h);
    cudaFree(A);
    cudaFree(B);
    cudaFree(C);
    size_t cbytes = (size_t)1 << 30;
    CUDA_OK(cudaMalloc(&A, cbytes));
    CUDA_OK(cudaMalloc(&B, cbytes));
    double best_bw = 0;
    for (int r = 0; r < 12; r++) {
        cudaEventRecord(e0, 0);
        cudaMemcpyAsync(B, A, cbytes, cudaMemcpyDeviceToDevice, 0);
        cudaEventRecord(e1, 0);
        cudaEventSynchronize(e1);
        float ms;
        cudaEventElapsedTime(&ms, e0, e1);
        double bw = 2.0 * cbytes / (ms * 1e-3) / 1e9;
        if (r >= 2 && bw > best_bw) best_bw = bw;
    }
    cudaFree(A);
    cudaFree(B);
    a->gemm_tflops = best;
    Record r;
    rec_begin(&r, "gemm", a);
    rec_add(&r, ", \"gemm_tflops\": %.1f, \"copy_gbs\": %.0f", best, best_bw);
    rec_end(&r, a);
    return 0;
}

/* ---------------- batches and adapters ---------------- */

static uint64_t bench_rng(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* n_seq sequences of seq_len random tokens, labels from prompt_len on. */
static int make_batch(Batch *b, int n_seq, int seq_len, int prompt_len, int vocab, uint64_t seed)
{
    memset(b, 0, sizeof *b);
    b->n_seq = n_seq;
    b->seq_len = seq_len;
    b->tokens = malloc((size_t)n_seq * seq_len * sizeof *b->tokens);
    b->lengths = malloc((size_t)n_seq * sizeof *b->lengths);
    b->label_mask = calloc((size_t)n_seq * seq_len, 1);
    if (!b->tokens || !b->lengths || !b->label_mask) return -1;
    uint64_t s = seed | 1;
    for (int i = 0; i < n_seq; i++) {
        b->lengths[i] = seq_len;
        for (int t = 0; t < seq_len; t++) {
            b->tokens[(size_t)i * seq_len + t] = t == 0 ? 1 : 3 + (int)(bench_rng(&s) % (uint64_t)(vocab - 3));
            b->label_mask[(size_t)i * seq_len + t] = t >= prompt_len && t > 0;
        }
    }
    return 0;
}

/* PEFT's init, then B small and random so that every gradient is non-zero. */
static int make_adapter(LoraAdapter *ad, const LlamaConfig *c, uint64_t seed, Error *err)
{
    LoraSpec spec = {16, 32.0f, (1u << LORA_Q_PROJ) | (1u << LORA_V_PROJ)};
    if (lora_adapter_init(ad, c, spec, err)) return -1;
    lora_adapter_randomize(ad, seed);
    uint64_t s = seed * 2654435761u + 1;
    for (int l = 0; l < ad->n_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *sl = lora_slot(ad, l, (LoraTarget)t);
            if (!sl) continue;
            size_t nb = (size_t)sl->out_features * spec.rank;
            for (size_t i = 0; i < nb; i++)
                ad->params[sl->b_offset + i] = 0.01f * ((float)(bench_rng(&s) >> 40) / 16777216.0f - 0.5f);
        }
    return 0;
}

static void print_profile(Backend *be, const char *what)
{
    double ms[16];
    const char *names[16];
    int n = cuda_backend_profile(be, ms, names, 16);
    if (!n) return;
    double total = 0;
    for (int i = 0; i < n; i++) total += ms[i];
    fprintf(stderr, "profile %s (GPU ms over the timed steps):", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %s %.1f (%.0f%%)", names[i], ms[i], 100 * ms[i] / total);
    fprintf(stderr, "\n");
}

/* ---------------- the MODPO step ---------------- */

typedef struct {
    Backend *be;
    BackendAdapter *pol;
    LoraAdapter *host;
    GradComm gc;
    ZeroOptimizer zero;
    Batch batch;
    int pairs;
    float *logps, *dlogps, *ref, *margin;
    int host_optimizer;
    double opt_seconds; /* all-reduce + clip + AdamW (host: with the pull and the push) */
} Step;

static int sum_on_stream(void *ctx, float *x, size_t n, void *queue, Error *err)
{
    (void)n;
    return grad_comm_allreduce_sum_queued((GradComm *)ctx, x, queue, err);
}

/* The trainer's two ways (trainer.c): on the device, or through the host. */
static int optimizer_step(Step *s, Error *err)
{
    const BackendOps *o = s->be->ops;
    double norm;
    if (s->host_optimizer)
        return o->adapter_pull_grads(s->be, s->pol, err) ||
               zero_step(&s->zero, s->host->params, s->host->grads, 1.0, 1e-4, &norm, err) ||
               o->adapter_push(s->be, s->pol, err) || o->sync(s->be, err) ? -1 : 0;
    AdamW *opt = &s->zero.opt;
    BackendAdamWStep req = {opt->cfg, ++opt->step, 1e-4, 1.0, {NULL, NULL}};
    if (dist_is_multi(s->gc.comm)) req.sum = (BackendGradSum){sum_on_stream, &s->gc};
    return o->adamw_step(s->be, s->pol, &req, &norm, err);
}

static int modpo_step(Step *s, Error *err)
{
    const BackendOps *o = s->be->ops;
    int P = s->pairs;
    PrefLossSpec loss = {(size_t)P, s->ref, s->ref + P, s->margin, s->margin + P,
                         pref_reward_form(0.1, 1, 0.5), PREF_LOSS_SIGMOID, 1.0};
    if (o->adapter_zero_grads(s->be, s->pol, err) ||
        o->logps(s->be, s->pol, &s->batch, s->logps, 1, err) ||
        o->pref_backward(s->be, s->pol, &s->batch, &loss, err) || o->sync(s->be, err))
        return -1;
    /* the metrics the trainer logs, from the same logps, after the sync */
    PrefBatch pb = {(size_t)P, s->logps, s->logps + P, s->ref, s->ref + P};
    PrefMetrics m;
    PrefGrads g = {s->dlogps, s->dlogps + P};
    if (modpo_loss(&pb, s->margin, s->margin + P, 0.1, 0.5, PREF_LOSS_SIGMOID, 1.0, &m, &g, err)) return -1;
    double t0 = now();
    int rc = optimizer_step(s, err);
    s->opt_seconds += now() - t0;
    return rc ? -1 : 0;
}

static int bench_modpo_pairs(const Args *a, Backend *be, BackendAdapter *pol, LoraAdapter *host,
                             int P, Error *err)
{
    const LlamaConfig *c = &be->config;
    Step s = {0};
    s.be = be;
    s.pol = pol;
    s.host = host;
    s.pairs = P;
    s.host_optimizer = a->host_optimizer;
    GradCommKind kind;
    if (grad_comm_kind_from_name("auto", "cuda", &kind) ||
        grad_comm_init(&s.gc, a->group, kind, host->n_params, err) ||
        zero_init(&s.zero, &s.gc, host->n_params, adamw_default_config(0.05), err))
        return -1;
    int rank = dist_rank(a->group) + dist_size(a->group) * (a->group ? a->group->color : 0);
    if (make_batch(&s.batch, 2 * P, a->seq_len, a->prompt_len, c->vocab_size, 1000 + P + 7919 * rank))
        return error_set(err, "out of memory");
    s.logps = calloc(2 * P, sizeof(float));
    s.dlogps = calloc(2 * P, sizeof(float));
    s.ref = calloc(2 * P, sizeof(float));
    s.margin = calloc(2 * P, sizeof(float));
    uint64_t rs = 77;
    for (int i = 0; i < 2 * P; i++) {
        s.margin[i] = (float)(bench_rng(&rs) % 1000) / 1000.0f - 0.5f;
    }
    int rc = 0;
    double best = 1e30, total = 0;
    /* The reference values of the cache: the policy's own logps at start. */
    rc = be->ops->logps(be, NULL, &s.batch, s.ref, 0, err) || be->ops->sync(be, err);
    for (int i = 0; !rc && i < a->warmup; i++) rc = modpo_step(&s, err);
    print_profile(be, "warmup");
    s.opt_seconds = 0;
    s.gc.seconds = 0;
    for (int i = 0; !rc && i < a->steps; i++) {
        double t0 = now();
        rc = modpo_step(&s, err);
        double dt = now() - t0;
        total += dt;
        best = dt < best ? dt : best;
    }
    if (!rc) {
        print_profile(be, "modpo");
        /* The group's step time is its slowest rank's. */
        double mean = total / a->steps, tokens = 2.0 * P * a->seq_len, gpus = dist_size(a->group);
        if (dist_is_multi(a->group)) {
            double v = mean;
            MPI_Allreduce(&v, &mean, 1, MPI_DOUBLE, MPI_MAX, a->group->comm);
        }
        double flops = tokens * (fwd_flops_per_token(c, a->seq_len) + bwd_flops_per_token(c, a->seq_len));
        Record r;
        rec_begin(&r, "modpo_step", a);
        rec_add(&r, ", \"micro_batch_pairs\": %d, \"step_ms\": %.1f, \"best_step_ms\": %.1f, "
                "\"pairs_per_s\": %.2f, \"pairs_per_s_per_gpu\": %.2f, \"tokens_per_s\": %.0f, "
                "\"tflops\": %.1f, \"comm_ms_per_step\": %.1f, \"optimizer_ms_per_step\": %.1f",
                P, 1e3 * mean, 1e3 * best, gpus * P / mean, P / mean, gpus * tokens / mean,
                flops / mean / 1e12, 1e3 * s.gc.seconds / a->steps, 1e3 * s.opt_seconds / a->steps);
        if (a->gemm_tflops > 0) rec_add(&r, ", \"mfu\": %.3f", flops / mean / 1e12 / a->gemm_tflops);
        rec_add(&r, ", \"device_mem_used_gib\": %.1f", device_used_gib());
        rec_end(&r, a);
    }
    zero_free(&s.zero);
    grad_comm_free(&s.gc);
    batch_free(&s.batch);
    free(s.logps);
    free(s.dlogps);
    free(s.ref);
    free(s.margin);
    return rc;
}

/* One micro-batch size, with an adapter of its own. */
static int bench_modpo_one(const Args *a, Backend *be, int P, Error *err)
{
    LoraAdapter host;
    BackendAdapter *pol = NULL;
    if (make_adapter(&host, &be->config, 11, err) || be->ops->adapter_bind(be, &host, &pol, err))
        return -1;
    int rc = bench_modpo_pairs(a, be, pol, &host, P, err);
    be->ops->adapter_unbind(be, pol);
    lora_adapter_free(&host);
    return rc;
}

static int bench_modpo(const Args *a, Backend *be, Error *err)
{
    /* A micro-batch that does not fit is recorded and ends the sweep. */
    for (int i = 0; i < a->pairs.n; i++)
        if (bench_modpo_one(a, be, a->pairs.v[i], err)) {
            Record r;
            rec_begin(&r, "modpo_step", a);
            rec_add(&r, ", \"micro_batch_pairs\": %d, \"error\": \"%s\"", a->pairs.v[i], err->msg);
            rec_end(&r, a);
            break;
        }
    return 0;
}

/* ---------------- precompute ---------------- */

static int bench_precompute_batch(const Args *a, Backend *be, BackendAdapter *margin, int B,
                                  Error *err)
{
    const LlamaConfig *c = &be->config;
    Batch batch;
    if (make_batch(&batch, B, a->seq_len, a->prompt_len, c->vocab_size, 5000 + B))
        return error_set(err, "out of memory");
    float *ref = calloc(B, sizeof(float)), *mar = calloc(B, sizeof(float));
    int rc = 0;
    double total = 0;
    for (int i = 0; !rc && i < a->warmup + a->steps; i++) {
        double t0 = now();
        rc = be->ops->logps(be, NULL, &batch, ref, 0, err) ||
             be->ops->logps(be, margin, &batch, mar, 0, err) || be->ops->sync(be, err);
        if (i >= a->warmup) total += now() - t0;
        if (i == a->warmup - 1) print_profile(be, "warmup");
    }
    if (!rc) {
        print_profile(be, "precompute");
        double mean = total / a->steps, tokens = (double)B * a->seq_len;
        double flops = 2 * tokens * fwd_flops_per_token(c, a->seq_len);
        Record r;
        rec_begin(&r, "precompute", a);
        rec_add(&r, ", \"batch_seqs\": %d, \"ms\": %.1f, \"seqs_per_s\": %.2f, \"tokens_per_s\": %.0f, "
                "\"tflops\": %.1f, \"device_mem_used_gib\": %.1f",
                B, 1e3 * mean, B / mean, tokens / mean, flops / mean / 1e12, device_used_gib());
        rec_end(&r, a);
    }
    batch_free(&batch);
    free(ref);
    free(mar);
    return rc;
}

static int bench_precompute(const Args *a, Backend *be, Error *err)
{
    LoraAdapter host;
    BackendAdapter *margin = NULL;
    if (make_adapter(&host, &be->config, 23, err) || be->ops->adapter_bind(be, &host, &margin, err))
        return -1;
    int rc = 0;
    for (int i = 0; !rc && i < a->batches.n; i++)
        rc = bench_precompute_batch(a, be, margin, a->batches.v[i], err);
    be->ops->adapter_unbind(be, margin);
    lora_adapter_free(&host);
    return rc;
}

/* ---------------- precompute over HelpSteer's pairs ---------------- */

/* The helpfulness pairs of a HelpSteer split with random tokens: one prompt
 * per prompt group, one response per row, so a pair side is its row's
 * sequence and the sides repeat exactly as the rows do in the real pairs.
 * Text is not tokenized: only which pairs share a side matters here (and
 * every sequence has one length, as in the plain precompute record). */
typedef struct {
    int32_t *row_tokens; /* [n_rows * seq_len] */
    PairSequences ps;    /* sides point into row_tokens */
} PairWorkload;

static void fill_random(int32_t *t, int n, int vocab, uint64_t *s)
{
    for (int i = 0; i < n; i++) t[i] = 3 + (int)(bench_rng(s) % (uint64_t)(vocab - 3));
}

/* Row r's sequence: BOS + its group's prompt (prompt_len tokens in all),
 * then its own response up to seq_len. */
static int fill_rows(const Args *a, int vocab, const HelpSteerData *d, PairWorkload *w, Error *err)
{
    int L = a->seq_len, P = a->prompt_len;
    w->row_tokens = malloc(d->n_rows * (size_t)L * sizeof *w->row_tokens);
    if (!w->row_tokens) return error_set(err, "out of memory for %zu rows", d->n_rows);
    uint64_t s = 4242;
    for (size_t g = 0; g < d->n_rows; g = helpsteer_group_end(d, g)) {
        int32_t *first = w->row_tokens + g * (size_t)L;
        first[0] = 1;
        fill_random(first + 1, P - 1, vocab, &s);
        for (size_t r = g; r < helpsteer_group_end(d, g); r++) {
            int32_t *row = w->row_tokens + r * (size_t)L;
            memcpy(row, first, (size_t)P * sizeof *row);
            fill_random(row + P, L - P, vocab, &s);
        }
    }
    return 0;
}

static int pair_sides(const Args *a, const PairSet *set, PairWorkload *w, Error *err)
{
    size_t n = a->precompute_pairs > 0 && (size_t)a->precompute_pairs < set->n ? (size_t)a->precompute_pairs
                                                                               : set->n;
    w->ps.chosen = malloc((n + 1) * sizeof *w->ps.chosen);
    w->ps.rejected = malloc((n + 1) * sizeof *w->ps.rejected);
    if (!w->ps.chosen || !w->ps.rejected) return error_set(err, "out of memory for %zu pairs", n);
    w->ps.n = n;
    for (size_t i = 0; i < n; i++) {
        size_t rc = set->pairs[i].row_chosen, rr = set->pairs[i].row_rejected;
        w->ps.chosen[i] = (Sequence){w->row_tokens + rc * (size_t)a->seq_len, a->seq_len, a->prompt_len};
        w->ps.rejected[i] = (Sequence){w->row_tokens + rr * (size_t)a->seq_len, a->seq_len, a->prompt_len};
    }
    return 0;
}

static void pair_workload_free(PairWorkload *w)
{
    free(w->row_tokens);
    free(w->ps.chosen);
    free(w->ps.rejected);
    memset(w, 0, sizeof *w);
}

static int pair_workload_make(const Args *a, int vocab, PairWorkload *w, Error *err)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/train.jsonl.gz", a->pairs_data);
    memset(w, 0, sizeof *w);
    HelpSteerData data;
    PairSet set;
    if (helpsteer_load(path, false, &data, err)) return -1;
    int rc = pairs_build(&data, DIM_HELPFULNESS, &set, err);
    if (rc == 0) {
        rc = fill_rows(a, vocab, &data, w, err) || pair_sides(a, &set, w, err);
        pairs_free(&set);
    }
    helpsteer_free(&data);
    if (rc) pair_workload_free(w);
    return rc ? -1 : 0;
}

static int bench_precompute_pairs_batch(const Args *a, Backend *be, BackendAdapter *margin,
                                        const PairWorkload *w, size_t distinct, int batch_pairs,
                                        Error *err)
{
    const LlamaConfig *c = &be->config;
    size_t n = w->ps.n;
    float *chosen = malloc((n + 1) * sizeof *chosen), *rejected = malloc((n + 1) * sizeof *rejected);
    int rc = chosen && rejected ? 0 : error_set(err, "out of memory");
    double total = 0;
    for (int i = 0; !rc && i < a->warmup + a->steps; i++) {
        double t0 = now();
        /* as the stage does it: the reference pass, then the margin pass */
        rc = pair_logps_all(NULL, be, NULL, &w->ps, batch_pairs, chosen, rejected, err) ||
             pair_logps_all(NULL, be, margin, &w->ps, batch_pairs, chosen, rejected, err);
        if (i >= a->warmup) total += now() - t0;
        if (i == a->warmup - 1) print_profile(be, "warmup");
    }
    if (!rc) {
        print_profile(be, "precompute_pairs");
        double mean = total / a->steps, computed = (double)distinct * a->seq_len;
        double slots = 2.0 * n * a->seq_len;
        double flops = 2 * computed * fwd_flops_per_token(c, a->seq_len);
        Record r;
        rec_begin(&r, "precompute_pairs", a);
        rec_add(&r, ", \"batch_pairs\": %d, \"batch_seqs\": %d, \"pairs\": %zu, \"distinct_seqs\": %zu, "
                "\"sequence_slots\": %zu, \"ms\": %.1f, \"pairs_per_s\": %.2f, "
                "\"computed_tokens_per_s\": %.0f, \"pair_tokens_per_s\": %.0f, \"tflops\": %.1f, "
                "\"device_mem_used_gib\": %.1f",
                batch_pairs, 2 * batch_pairs, n, distinct, 2 * n, 1e3 * mean, n / mean,
                computed / mean, slots / mean, flops / mean / 1e12, device_used_gib());
        rec_end(&r, a);
    }
    free(chosen);
    free(rejected);
    return rc;
}

static int bench_precompute_pairs(const Args *a, Backend *be, Error *err)
{
    PairWorkload w;
    UniqueSequences u;
    if (pair_workload_make(a, be->config.vocab_size, &w, err)) return -1;
    if (unique_sequences_build(&w.ps, &u, err)) {
        pair_workload_free(&w);
        return -1;
    }
    size_t distinct = u.n;
    unique_sequences_free(&u);
    fprintf(stderr, "precompute_pairs: %zu helpfulness pairs of %s, %zu distinct sequences of %zu sides\n",
            w.ps.n, a->pairs_data, distinct, 2 * w.ps.n);
    LoraAdapter host;
    BackendAdapter *margin = NULL;
    memset(&host, 0, sizeof host);
    int rc = make_adapter(&host, &be->config, 23, err) || be->ops->adapter_bind(be, &host, &margin, err);
    for (int i = 0; !rc && i < a->batches.n; i++) {
        int batch_pairs = a->batches.v[i] / 2 > 0 ? a->batches.v[i] / 2 : 1;
        rc = bench_precompute_pairs_batch(a, be, margin, &w, distinct, batch_pairs, err);
    }
    if (margin) be->ops->adapter_unbind(be, margin);
    lora_adapter_free(&host);
    pair_workload_free(&w);
    return rc ? -1 : 0;
}

/* ---------------- decode ---------------- */

/* pol: NULL decodes the base model (as the PyTorch script's `generate`);
 * a LoRA decodes as the generate stage does with its policy. */
static int bench_decode_batch(const Args *a, Backend *be, BackendAdapter *pol, int B, Error *err)
{
    const LlamaConfig *c = &be->config;
    int V = c->vocab_size, P = a->gen_prompt_len, N = a->gen_new;
    KvCache *kv = NULL;
    int32_t *tok = malloc((size_t)B * P * sizeof *tok), *len = malloc((size_t)B * sizeof *len);
    int32_t *next = malloc((size_t)B * sizeof *next);
    float *logits = malloc((size_t)B * V * sizeof *logits);
    if (!tok || !len || !next || !logits) return error_set(err, "out of memory");
    uint64_t s = 99;
    for (int i = 0; i < B; i++) {
        len[i] = P;
        for (int t = 0; t < P; t++) tok[(size_t)i * P + t] = t ? 3 + (int)(bench_rng(&s) % (V - 3)) : 1;
    }
    int rc = be->ops->kv_create(be, B, P + N, &kv, err);
    double prefill_s = 0, decode_s = 0;
    double pick_s = 0, launch_s = 0; /* host argmax; decode_step until it returns (the rest: waiting) */
    for (int rep = 0; !rc && rep < 2; rep++) { /* the first is a warm-up */
        double t0 = now();
        rc = be->ops->prefill(be, kv, pol, tok, len, P, logits, err) || be->ops->sync(be, err);
        double t1 = now();
        pick_s = launch_s = 0;
        for (int step = 0; !rc && step < N - 1; step++) {
            double ta = now();
            /* rows in parallel, as the generate stage samples its slots (one on
             * this thread, as it does too) */
#pragma omp parallel for schedule(static) if (B > 1)
            for (int i = 0; i < B; i++) next[i] = sampling_argmax(logits + (size_t)i * V, V);
            double tb = now();
            rc = be->ops->decode_step(be, kv, pol, next, NULL, logits, err);
            double tc = now();
            rc = rc || be->ops->sync(be, err);
            pick_s += tb - ta;
            launch_s += tc - tb;
        }
        prefill_s = t1 - t0;
        decode_s = now() - t1;
        print_profile(be, rep ? "decode" : "decode warm-up");
    }
    if (kv) be->ops->kv_free(be, kv);
    if (!rc) {
        double per_step = decode_s / (N - 1);
        /* What a decode step must read: every weight once, and the KV cache so far. */
        double weight_bytes = 2 * linear_params(c);
        double kv_bytes = 2.0 * 2 * c->num_hidden_layers * llama_kv_dim(c) * (P + N / 2.0) * B;
        Record r;
        rec_begin(&r, pol ? "generate_lora" : "generate", a);
        rec_add(&r, ", \"batch\": %d, \"prompt_len_gen\": %d, \"new_tokens\": %d, "
                "\"prefill_ms\": %.1f, \"ms_per_step\": %.3f, \"new_tokens_per_s\": %.1f, "
                "\"bytes_per_step\": %.0f, \"argmax_ms_per_step\": %.3f, \"launch_ms_per_step\": %.3f",
                B, P, N, 1e3 * prefill_s, 1e3 * per_step, B * N / (prefill_s + decode_s),
                weight_bytes + kv_bytes, 1e3 * pick_s / (N - 1), 1e3 * launch_s / (N - 1));
        rec_end(&r, a);
    }
    free(tok);
    free(len);
    free(next);
    free(logits);
    return rc;
}

/* The batch-1 step's GEMVs alone: how close the weight streaming itself
 * comes to the copy bandwidth, apart from the small kernels around it. */
static int bench_gemv(const Args *a, Backend *be, Error *err)
{
    double ms, bytes;
    if (cuda_backend_gemv_bench(be, 20, &ms, &bytes, err)) return -1;
    Record r;
    rec_begin(&r, "decode_gemvs", a);
    rec_add(&r, ", \"ms_per_pass\": %.3f, \"bytes_per_pass\": %.0f, \"gbs\": %.0f", ms, bytes,
            bytes / ms * 1e-6);
    rec_end(&r, a);
    return 0;
}

static int bench_decode(const Args *a, Backend *be, Error *err)
{
    if (bench_gemv(a, be, err)) return -1;
    for (int i = 0; i < a->gen_batches.n; i++)
        if (bench_decode_batch(a, be, NULL, a->gen_batches.v[i], err)) return -1;
    if (!a->gen_lora) return 0;
    LoraAdapter ad;
    BackendAdapter *pol = NULL;
    if (make_adapter(&ad, &be->config, 7, err)) return -1;
    int rc = be->ops->adapter_bind(be, &ad, &pol, err);
    for (int i = 0; !rc && i < a->gen_batches.n; i++)
        rc = bench_decode_batch(a, be, pol, a->gen_batches.v[i], err);
    if (pol) be->ops->adapter_unbind(be, pol);
    lora_adapter_free(&ad);
    return rc ? -1 : 0;
}

/* ---------------- main ---------------- */

static int parse_args(int argc, char **argv, Args *a)
{
    memset(a, 0, sizeof *a);
    a->what = "gemm,modpo,precompute,precompute_pairs,decode";
    a->pairs_data = "data/helpsteer-sample";
    a->preset = "llama2-7b";
    a->seq_len = 512;
    a->prompt_len = 256;
    a->gen_prompt_len = 128;
    a->gen_new = 128;
    a->steps = 5;
    a->warmup = 2;
    parse_list("1,2,4,8", &a->pairs);
    parse_list("8,16,32", &a->batches);
    parse_list("1,64", &a->gen_batches);
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return fprintf(stderr, "%s needs a value\n", k), -1;
        i++;
        if (!strcmp(k, "--what")) a->what = v;
        else if (!strcmp(k, "--preset")) a->preset = v;
        else if (!strcmp(k, "--out")) a->out = v;
        else if (!strcmp(k, "--pairs")) { if (parse_list(v, &a->pairs)) return -1; }
        else if (!strcmp(k, "--batches")) { if (parse_list(v, &a->batches)) return -1; }
        else if (!strcmp(k, "--gen-batches")) { if (parse_list(v, &a->gen_batches)) return -1; }
        else if (!strcmp(k, "--seq-len")) a->seq_len = atoi(v);
        else if (!strcmp(k, "--prompt-len")) a->prompt_len = atoi(v);
        else if (!strcmp(k, "--gen-prompt-len")) a->gen_prompt_len = atoi(v);
        else if (!strcmp(k, "--gen-new")) a->gen_new = atoi(v);
        else if (!strcmp(k, "--gen-lora")) a->gen_lora = atoi(v);
        else if (!strcmp(k, "--steps")) a->steps = atoi(v);
        else if (!strcmp(k, "--warmup")) a->warmup = atoi(v);
        else if (!strcmp(k, "--group-size")) a->group_size = atoi(v);
        else if (!strcmp(k, "--model-dir")) a->model_dir = v;
        else if (!strcmp(k, "--pairs-data")) a->pairs_data = v;
        else if (!strcmp(k, "--precompute-pairs")) a->precompute_pairs = atoi(v);
        else if (!strcmp(k, "--gemm-tflops")) a->gemm_tflops = atof(v);
        else if (!strcmp(k, "--recompute")) a->recompute = atoi(v);
        else if (!strcmp(k, "--optimizer") && (!strcmp(v, "host") || !strcmp(v, "backend")))
            a->host_optimizer = !strcmp(v, "host");
        else return fprintf(stderr, "unknown option %s\n", k), -1;
    }
    char what[256];
    snprintf(what, sizeof what, "%s", a->what);
    for (char *w = strtok(what, ","); w; w = strtok(NULL, ","))
        if (strcmp(w, "gemm") && strcmp(w, "modpo") && strcmp(w, "precompute") &&
            strcmp(w, "precompute_pairs") && strcmp(w, "decode"))
            return fprintf(stderr, "--what: unknown measurement '%s' (gemm, modpo, precompute, "
                           "precompute_pairs, decode)\n", w), -1;
    if (a->seq_len < 2 || a->prompt_len < 1 || a->prompt_len >= a->seq_len || a->steps < 1 ||
        a->warmup < 0 || a->gen_new < 2 || a->gen_prompt_len < 1 || a->precompute_pairs < 0)
        return fprintf(stderr, "bad lengths or step counts\n"), -1;
    return 0;
}

static int run(Args *args, int world_size);

static int bench_startup(Args *a, Error *err)
{
    LlamaModel model;
    Backend *be = NULL;
    double t0 = now();
    if (llama_model_load(a->model_dir, &model, err)) return -1;
    double t1 = now();
    if (cuda_backend_create(&model, cuda_backend_default_device(), &be, err)) {
        llama_model_free(&model);
        return -1;
    }
    double t2 = now();
    Args one = *a;
    one.steps = 1;
    one.warmup = 0;
    one.quiet = 1; /* the step's own record is not the startup figure */
    int rc = bench_modpo_one(&one, be, 1, err);
    double t3 = now();
    be->ops->destroy(be);
    llama_model_free(&model);
    if (rc) return -1;
    Record r;
    rec_begin(&r, "startup", a);
    rec_add(&r, ", \"model_dir\": \"%s\", \"process_to_main_s\": %.2f, \"load_s\": %.2f, "
            "\"upload_s\": %.2f, \"first_step_s\": %.2f, \"total_s\": %.2f",
            a->model_dir, t0 - a->t_start, t1 - t0, t2 - t1, t3 - t2, t3 - a->t_start);
    rec_end(&r, a);
    return 0;
}

/* Splits the world into groups of a->group_size consecutive ranks. */
static int make_groups(DistWorld *w, Args *a, DistComm *group, Error *err)
{
    int size = w->world.size, g = a->group_size > 0 ? a->group_size : size;
    if (size % g) return error_set(err, "%d ranks do not split into groups of %d", size, g);
    group->color = w->world.rank / g;
    if (dist_check(MPI_Comm_split(w->world.comm, group->color, w->world.rank, &group->comm),
                   "MPI_Comm_split", err))
        return -1;
    MPI_Comm_rank(group->comm, &group->rank);
    MPI_Comm_size(group->comm, &group->size);
    a->group = group;
    a->n_groups = size / g;
    return 0;
}

int main(int argc, char **argv)
{
    double t_start = now();
    Args a;
    DistWorld world;
    DistComm group;
    Error err = {0};
    if (dist_world_init(&world, &argc, &argv, &err)) {
        fprintf(stderr, "cuda_bench: %s\n", err.msg);
        return 1;
    }
    int rc = parse_args(argc, argv, &a) ? 2 : make_groups(&world, &a, &group, &err) ? 1 : 0;
    if (rc) {
        if (rc == 1) fprintf(stderr, "cuda_bench: %s\n", err.msg);
        dist_world_finalize(&world);
        return rc;
    }
    a.t_start = t_start;
    if (a.model_dir) {
        rc = bench_startup(&a, &err);
        if (rc) fprintf(stderr, "cuda_bench: %s\n", err.msg);
    } else {
        rc = run(&a, world.world.size);
    }
    MPI_Comm_free(&group.comm);
    dist_world_finalize(&world);
    return rc;
}

static int run(Args *args, int world_size)
{
    Args a = *args;
    const LlamaPreset *p = llama_preset_find(a.preset);
    if (!p) return fprintf(stderr, "unknown preset %s\n", a.preset), 2;
    LlamaConfig c = p->config;
    if (c.vocab_size == 0) c.vocab_size = 32000;
    c.tie_word_embeddings = false;
    Error err = {0};
    int single = world_size == 1; /* several ranks: the MODPO step only */
    if (single && wants(&a, "gemm") && bench_gemm(&a)) return 1;
    Backend *be = NULL;
    double t0 = now();
    if (cuda_backend_create_random(&c, cuda_backend_default_device(), 1, &be, &err)) {
        fprintf(stderr, "cuda_bench: %s\n", err.msg);
        return 1;
    }
    cuda_backend_set_recompute(be, a.recompute);
    fprintf(stderr, "random %s model on the GPU in %.1f s\n", a.preset, now() - t0);
    int rc = 0;
    if (!rc && wants(&a, "modpo")) rc = bench_modpo(&a, be, &err);
    if (!rc && single && wants(&a, "precompute")) rc = bench_precompute(&a, be, &err);
    if (!rc && single && wants(&a, "precompute_pairs")) rc = bench_precompute_pairs(&a, be, &err);
    if (!rc && single && wants(&a, "decode")) rc = bench_decode(&a, be, &err);
    if (rc) fprintf(stderr, "cuda_bench: %s\n", err.msg);
    be->ops->destroy(be);
    return rc ? 1 : 0;
}

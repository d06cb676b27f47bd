/* The CUDA backend against PyTorch on a model written by
 * tests/cuda/gen_torch_reference.py (a Llama-2-7B-shaped random model on the
 * GPU machine): per-sequence logps with and without the adapter, and the LoRA
 * gradients of sum_s coef_s logp_s, against torch fp32 (the ground truth),
 * with torch bf16's own distance to fp32 printed beside ours.  Then the time
 * of a logps + backward step (median of 5).
 *     check_cuda_torch DIR [--cpu]      (--cpu: the CPU backend, to test the harness)
 * Exits 1 when logps rel err >= 1e-2, or the gradient cosine is at most 0.999
 * and below torch bf16's own. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cuda_backend.h"
#include "lora_peft.h"
#include "model_io.h"
#include "safetensors.h"

static void die(int rc, const Error *err, const char *what)
{
    if (rc == 0) return;
    fprintf(stderr, "%s: %s\n", what, err->msg);
    exit(2);
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *read_tensor(SafetensorsFile *f, const char *name, int as_int, size_t *n)
{
    Error err;
    const SafetensorsTensor *t = safetensors_find(f, name);
    if (!t) {
        fprintf(stderr, "reference has no %s\n", name);
        exit(2);
    }
    void *v = malloc(t->n_elements * 8);
    if (as_int) die(safetensors_tensor_to_i64(f, t, v, &err), &err, name);
    else die(safetensors_tensor_to_f32(f, t, v, &err), &err, name);
    if (n) *n = t->n_elements;
    return v;
}

static double cosine(const float *a, const float *b, size_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

/* Worst (layer, target, A|B) tensor cosine of a vs b. */
static double worst_tensor(const LoraAdapter *ad, const float *a, const float *b)
{
    double w = 1;
    for (int l = 0; l < ad->n_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(ad, l, (LoraTarget)t);
            if (!s) continue;
            size_t na = (size_t)ad->spec.rank * s->in_features;
            size_t nb = (size_t)s->out_features * ad->spec.rank;
            double ca = cosine(a + s->a_offset, b + s->a_offset, na);
            double cb = cosine(a + s->b_offset, b + s->b_offset, nb);
            w = ca < w ? ca : w;
            w = cb < w ? cb : w;
        }
    return w;
}

static double max_rel(const float *a, const float *ref, int n)
{
    double w = 0;
    for (int i = 0; i < n; i++) {
        double e = fabs((double)a[i] - ref[i]) / fabs((double)ref[i]);
        w = e > w || e != e ? e : w;
    }
    return w;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [--cpu]\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int use_cpu = argc > 2 && strcmp(argv[2], "--cpu") == 0;
    char path[1024];
    Error err;
    double t0 = now_ms();
    LlamaModel model;
    snprintf(path, sizeof path, "%s/model", dir);
    die(llama_model_load(path, &model, &err), &err, "model");
    LoraAdapter ad, g32, g16;
    snprintf(path, sizeof path, "%s/adapter", dir);
    die(lora_peft_load(path, &model.config, &ad, &err), &err, "adapter");
    snprintf(path, sizeof path, "%s/grads_fp32", dir);
    die(lora_peft_load(path, &model.config, &g32, &err), &err, "grads_fp32");
    snprintf(path, sizeof path, "%s/grads_bf16", dir);
    die(lora_peft_load(path, &model.config, &g16, &err), &err, "grads_bf16");
    SafetensorsFile *ref;
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    die(safetensors_open(path, &ref, &err), &err, "reference");
    const SafetensorsTensor *tt = safetensors_find(ref, "tokens");
    Batch b;
    memset(&b, 0, sizeof b);
    b.n_seq = (int)tt->shape[0];
    b.seq_len = (int)tt->shape[1];
    size_t n = (size_t)b.n_seq * b.seq_len;
    int64_t *tok = read_tensor(ref, "tokens", 1, NULL), *len = read_tensor(ref, "lengths", 1, NULL);
    int64_t *lab = read_tensor(ref, "label_mask", 1, NULL);
    b.tokens = malloc(n * sizeof *b.tokens);
    b.label_mask = malloc(n);
    b.lengths = malloc((size_t)b.n_seq * sizeof *b.lengths);
    int tokens = 0;
    for (size_t i = 0; i < n; i++) {
        b.tokens[i] = (int32_t)tok[i];
        b.label_mask[i] = (uint8_t)lab[i];
    }
    for (int s = 0; s < b.n_seq; s++) tokens += b.lengths[s] = (int32_t)len[s];
    float *coef = read_tensor(ref, "coef", 0, NULL);
    float *la32 = read_tensor(ref, "logps_adapter_fp32", 0, NULL);
    float *lb32 = read_tensor(ref, "logps_base_fp32", 0, NULL);
    float *la16 = read_tensor(ref, "logps_adapter_bf16", 0, NULL);
    float *lb16 = read_tensor(ref, "logps_base_bf16", 0, NULL);
    double t1 = now_ms();
    const LlamaConfig *c = &model.config;
    printf("model %s: hidden %d, %d layers, %d heads / %d kv, ffn %d, vocab %d; LoRA r %d "
           "(%zu params); %d sequences, %d tokens (loaded in %.1f s)\n",
           dir, c->hidden_size, c->num_hidden_layers, c->num_attention_heads,
           c->num_key_value_heads, c->intermediate_size, c->vocab_size, ad.spec.rank, ad.n_params,
           b.n_seq, tokens, (t1 - t0) / 1e3);

    Backend *be;
    if (use_cpu) die(cpu_backend_create(&model, NULL, &be, &err), &err, "cpu backend");
    else die(cuda_backend_create(&model, 0, &be, &err), &err, "cuda backend");
    double t2 = now_ms();
    printf("%s backend created in %.1f s\n", be->ops->name, (t2 - t1) / 1e3);
    BackendAdapter *ba;
    die(be->ops->adapter_bind(be, &ad, &ba, &err), &err, "bind");
    float *lp = calloc((size_t)b.n_seq, sizeof(float)), *lbase = calloc((size_t)b.n_seq, sizeof(float));
    die(be->ops->adapter_zero_grads(be, ba, &err) || be->ops->logps(be, ba, &b, lp, 1, &err) ||
        be->ops->sync(be, &err) || be->ops->backward(be, ba, &b, coef, &err) ||
        be->ops->adapter_pull_grads(be, ba, &err), &err, "step");
    die(be->ops->logps(be, NULL, &b, lbase, 0, &err) || be->ops->sync(be, &err), &err, "base");

    int fails = 0;
    double e_a = max_rel(lp, la32, b.n_seq), e_b = max_rel(lbase, lb32, b.n_seq);
    double t_a = max_rel(la16, la32, b.n_seq), t_b = max_rel(lb16, lb32, b.n_seq);
    double cs = cosine(ad.grads, g32.params, ad.n_params), ct = cosine(g16.params, g32.params, ad.n_params);
    double ws = worst_tensor(&ad, ad.grads, g32.params), wt = worst_tensor(&ad, g16.params, g32.params);
    double dd = 0, dt = 0;
    for (int s = 0; s < b.n_seq; s++) {
        double ref_d = la32[s] - lb32[s];
        double x = fabs((lp[s] - lbase[s]) - ref_d), y = fabs((la16[s] - lb16[s]) - ref_d);
        dd = x > dd ? x : dd;
        dt = y > dt ? y : dt;
    }
    printf("                                   %-12s torch bf16 (vs torch fp32)\n", be->ops->name);
    printf("logps (adapter) max rel err        %-12.3g %.3g\n", e_a, t_a);
    printf("logps (base)    max rel err        %-12.3g %.3g\n", e_b, t_b);
    printf("max |d(logp_adapter - logp_base)|  %-12.4g %.4g\n", dd, dt);
    printf("LoRA grads cosine (all)            %-12.6f %.6f\n", cs, ct);
    printf("LoRA grads cosine (worst tensor)   %-12.6f %.6f\n", ws, wt);
    printf("seq 0: logp torch fp32 %.4f, %s %.4f, torch bf16 %.4f\n", la32[0], be->ops->name, lp[0],
           la16[0]);
    printf("log-ratio logp_adapter - logp_base, torch fp32:");
    for (int s = 0; s < b.n_seq; s++) printf(" %.4f", la32[s] - lb32[s]);
    printf("\n");
    /* Gradients: > 0.999, or (on a deep random model where torch's own bf16
     * run cannot reach that) at least torch bf16's cosine. */
    double need = ct < 0.999 ? ct : 0.999;
    fails += !(e_a < 1e-2) + !(e_b < 1e-2) + !(cs > need);

    if (safetensors_find(ref, "logits") && be->ops->debug_logits) {
        /* Error of the logits by position: where along the sequence do we drift? */
        size_t V = c->vocab_size, nl;
        float *want = read_tensor(ref, "logits", 0, &nl);
        float *got = malloc(nl * sizeof *got);
        die(be->ops->debug_logits(be, ba, &b, got, &err), &err, "debug_logits");
        printf("logits max |ours - ref| by position (seq 0):");
        for (int p0 = 0; p0 < b.lengths[0]; p0 += b.lengths[0] / 8 > 0 ? b.lengths[0] / 8 : 1) {
            double m = 0;
            for (size_t j = 0; j < V; j++) {
                double d = fabs((double)got[(size_t)p0 * V + j] - want[(size_t)p0 * V + j]);
                m = d > m ? d : m;
            }
            printf(" p%d %.2g", p0, m);
        }
        printf("\n");
        free(want);
        free(got);
    }
    if (!use_cpu) {
        double t[5];
        for (int i = 0; i < 5; i++) {
            double s0 = now_ms();
            die(be->ops->adapter_zero_grads(be, ba, &err) || be->ops->logps(be, ba, &b, lp, 1, &err) ||
                be->ops->sync(be, &err) || be->ops->backward(be, ba, &b, coef, &err) ||
                be->ops->adapter_pull_grads(be, ba, &err), &err, "timed step");
            t[i] = now_ms() - s0;
        }
        for (int i = 0; i < 5; i++)
            for (int j = i + 1; j < 5; j++)
                if (t[j] < t[i]) { double x = t[i]; t[i] = t[j]; t[j] = x; }
        double s0 = now_ms();
        for (int i = 0; i < 3; i++)
            die(be->ops->logps(be, NULL, &b, lbase, 0, &err) || be->ops->sync(be, &err), &err, "fwd");
        double fwd = (now_ms() - s0) / 3;
        printf("cuda step (logps keep + backward): %.1f ms median of 5 = %.0f tokens/s; "
               "forward only %.1f ms\n", t[2], tokens / t[2] * 1e3, fwd);
    }
    be->ops->adapter_unbind(be, ba);
    backend_destroy(be);
    printf("%s\n", fails ? "FAILED" : "PASSED");
    return fails ? 1 : 0;
}

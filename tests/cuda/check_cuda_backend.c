/* The CUDA backend (bf16) against the CPU reference backend (fp32, itself
 * checked against PyTorch by tests/check_cpu_backend.c), on random Llamas
 * made in memory: for each case
 *   - per-sequence logps under a LoRA adapter (every projection, B nonzero
 *     so gradients reach A too) and under the base model: relative error;
 *   - LoRA gradients after backward(dlogps): cosine similarity over the
 *     whole vector and the worst (layer, projection) tensor;
 *   - gradient accumulation: a second backward doubles the gradients;
 *   - decode: prefill + decode steps (one slot paused) against the CPU
 *     decode and against the CUDA full forward (debug_logits) at the same
 *     positions;
 *   - the time of a CUDA logps + backward (median of 5);
 *   - activation recomputation: the same logps and gradients as the kept pass;
 *   - the optimizer on the device (adamw_step): the host AdamW's bits;
 *   - decode steps replayed from CUDA graphs: the launch-by-launch bits;
 *   - several sums per sequence (Batch.sum_start) from one forward;
 *   - decoding 1 and 2 slots (the GEMV path) against the full forward;
 *   - the decode MLP with SwiGLU in gate/up's GEMV epilogue: its bits
 *     against SwiGLU in down_proj's prologue.
 * Weights are rounded to bf16 first, so both backends run the same model.
 * Runs on a machine with a GPU; prints one line per check and exits 1 if
 * any fails.  Usage: check_cuda_backend [case ...]  (default: every case;
 * cases: tiny tied gqa128 batch24 small-100m wide deep). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "backend.h"
#include "grad_clip.h"
#include "cuda_backend.h"
#include "../label_cuts.h"
#include "lora.h"
#include "model_io.h"
#include "model_presets.h"
#include "safetensors.h"

#define LOGPS_TOL 1e-2
#define GRAD_COS_MIN 0.999
#define DECODE_TOL 2e-2

static int failures;

static void check(int ok, const char *what, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
#include <stdarg.h>
static void check(int ok, const char *what, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%-4s %-34s ", ok ? "ok" : "FAIL", what);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    failures += !ok;
}

static void die(int rc, const Error *err, const char *what)
{
    if (rc == 0) return;
    fprintf(stderr, "%s: %s\n", what, err->msg);
    exit(2);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static double uniform(void) { return (next_u64() >> 11) * (1.0 / 9007199254740992.0); }

typedef struct {
    const char *name;
    LlamaConfig cfg;
    int n_seq, max_len, rank;
    unsigned targets; /* 0: every projection */
} Case;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void make_batch(const LlamaConfig *c, int n_seq, int max_len, Batch *b)
{
    memset(b, 0, sizeof *b);
    b->n_seq = n_seq;
    b->seq_len = max_len;
    b->tokens = calloc((size_t)n_seq * max_len, sizeof *b->tokens);
    b->label_mask = calloc((size_t)n_seq * max_len, 1);
    b->lengths = calloc((size_t)n_seq, sizeof *b->lengths);
    for (int s = 0; s < n_seq; s++) {
        int len = s == 0 ? max_len : max_len / 2 + (int)(uniform() * (max_len / 2));
        if (len < 4) len = 4;
        int prompt = 1 + (int)(uniform() * (len / 2));
        b->lengths[s] = len;
        for (int t = 0; t < len; t++) {
            b->tokens[(size_t)s * max_len + t] = t == 0 ? c->bos_token_id
                                                        : 3 + (int)(uniform() * (c->vocab_size - 3));
            b->label_mask[(size_t)s * max_len + t] = t >= prompt;
        }
    }
}

static double cosine(const float *a, const float *b, size_t n, double *na, double *nb)
{
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (na) *na = sqrt(aa);
    if (nb) *nb = sqrt(bb);
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : (aa == bb ? 1.0 : 0.0);
}

/* max|a - b| / max|b| */
static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d != d) return INFINITY;
        num = d > num ? d : num;
        den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

typedef struct {
    float *logps, *base, *grads, *dec; /* dec: [steps + 1][n_seq * V] */
} Result;

/* Slot 1's pause makes step 2 the first of a steady batch: step 3 (or 4)
 * is captured as a CUDA graph, later steps replay it. */
#define DEC_STEPS 6

/* The prompt of slot s is the first plen[s] tokens of sequence s; decode
 * step k feeds token plen[s] + k; slot 1 is paused at step 1. */
static int run_decode(Backend *be, BackendAdapter *ba, const Batch *b, const int32_t *plen,
                      float *dec, Error *err)
{
    int n = b->n_seq, V = be->config.vocab_size;
    KvCache *kv = NULL;
    int32_t *next = malloc((size_t)n * sizeof *next);
    uint8_t *active = malloc((size_t)n);
    int32_t *pos = calloc((size_t)n, sizeof *pos);
    int rc = be->ops->kv_create(be, n, b->seq_len + 1, &kv, err) ||
             be->ops->prefill(be, kv, ba, b->tokens, plen, b->seq_len, dec, err) ||
             be->ops->sync(be, err);
    for (int s = 0; s < n; s++) pos[s] = plen[s];
    for (int k = 1; rc == 0 && k <= DEC_STEPS; k++) {
        float *out = dec + (size_t)k * n * V;
        memcpy(out, out - (size_t)n * V, (size_t)n * V * sizeof(float)); /* paused rows keep theirs */
        for (int s = 0; s < n; s++) {
            active[s] = !(s == 1 && k == 1);
            next[s] = b->tokens[(size_t)s * b->seq_len + pos[s]];
        }
        rc = be->ops->decode_step(be, kv, ba, next, active, out, err) || be->ops->sync(be, err);
        for (int s = 0; s < n; s++) pos[s] += active[s];
    }
    if (kv) be->ops->kv_free(be, kv);
    free(next);
    free(active);
    free(pos);
    return rc ? -1 : 0;
}

static void run_backend(Backend *be, LoraAdapter *ad, const Batch *b, const float *dlogps,
                        const int32_t *plen, Result *r, int time_it)
{
    Error err;
    BackendAdapter *ba = NULL;
    int V = be->config.vocab_size;
    die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
    r->logps = calloc((size_t)b->n_seq, sizeof(float));
    r->base = calloc((size_t)b->n_seq, sizeof(float));
    r->grads = calloc(ad->n_params, sizeof(float));
    r->dec = calloc((size_t)(DEC_STEPS + 1) * b->n_seq * V, sizeof(float));
    die(be->ops->adapter_zero_grads(be, ba, &err), &err, "zero");
    die(be->ops->logps(be, ba, b, r->logps, 1, &err) || be->ops->sync(be, &err), &err, "logps");
    die(be->ops->backward(be, ba, b, dlogps, &err), &err, "backward");
    die(be->ops->adapter_pull_grads(be, ba, &err), &err, "pull");
    memcpy(r->grads, ad->grads, ad->n_params * sizeof(float));
    die(be->ops->logps(be, NULL, b, r->base, 0, &err) || be->ops->sync(be, &err), &err, "base logps");
    die(run_decode(be, ba, b, plen, r->dec, &err), &err, "decode");
    if (time_it) {
        /* accumulation: a second backward on the same batch doubles the grads */
        float *tmp = calloc((size_t)b->n_seq, sizeof(float));
        die(be->ops->logps(be, ba, b, tmp, 1, &err) || be->ops->sync(be, &err) ||
            be->ops->backward(be, ba, b, dlogps, &err) ||
            be->ops->adapter_pull_grads(be, ba, &err), &err, "accumulate");
        float *twice = malloc(ad->n_params * sizeof(float));
        for (size_t i = 0; i < ad->n_params; i++) twice[i] = 2.0f * r->grads[i];
        double n1, n2;
        double cs = cosine(ad->grads, twice, ad->n_params, &n1, &n2);
        check(cs > 0.99999 && fabs(n1 / n2 - 1) < 1e-3, "cuda grad accumulation (x2)",
              "cos %.7f, norm ratio %.6f", cs, n1 / n2);
        free(twice);
        double t[5];
        for (int i = 0; i < 5; i++) {
            double t0 = now_ms();
            die(be->ops->adapter_zero_grads(be, ba, &err) ||
                be->ops->logps(be, ba, b, tmp, 1, &err) || be->ops->sync(be, &err) ||
                be->ops->backward(be, ba, b, dlogps, &err) ||
                be->ops->adapter_pull_grads(be, ba, &err), &err, "timed step");
            t[i] = now_ms() - t0;
        }
        for (int i = 0; i < 5; i++)
            for (int j = i + 1; j < 5; j++)
                if (t[j] < t[i]) { double x = t[i]; t[i] = t[j]; t[j] = x; }
        int tokens = 0;
        for (int s = 0; s < b->n_seq; s++) tokens += b->lengths[s];
        printf("     cuda logps+backward: %.2f ms median of 5 (%d tokens, %.0f tokens/s)\n", t[2],
               tokens, tokens / t[2] * 1e3);
        free(tmp);
    }
    be->ops->adapter_unbind(be, ba);
}

/* Activation recomputation (cuda_backend_set_recompute) reruns the same
 * kernels on the same inputs: its logps and gradients must equal the kept
 * pass's up to reduction order. */
static void check_recompute(Backend *be, LoraAdapter *ad, const Batch *b, const float *dlogps,
                            const Result *kept)
{
    Error err;
    BackendAdapter *ba = NULL;
    float *logps = calloc((size_t)b->n_seq, sizeof(float));
    die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
    cuda_backend_set_recompute(be, 1);
    double t[3];
    for (int i = 0; i < 3; i++) {
        double t0 = now_ms();
        die(be->ops->adapter_zero_grads(be, ba, &err) ||
            be->ops->logps(be, ba, b, logps, 1, &err) || be->ops->sync(be, &err) ||
            be->ops->backward(be, ba, b, dlogps, &err) ||
            be->ops->adapter_pull_grads(be, ba, &err), &err, "recompute step");
        t[i] = now_ms() - t0;
    }
    cuda_backend_set_recompute(be, 0);
    double worst = 0;
    for (int s = 0; s < b->n_seq; s++) {
        double e = fabs(logps[s] - kept->logps[s]) / fabs(kept->logps[s]);
        worst = e > worst ? e : worst;
    }
    double n1, n2, cs = cosine(ad->grads, kept->grads, ad->n_params, &n1, &n2);
    check(worst < 1e-6, "recompute: logps vs kept pass", "rel err %.3g", worst);
    check(cs > 0.999999 && fabs(n1 / n2 - 1) < 1e-5, "recompute: grads vs kept pass",
          "cos %.9f, norm ratio %.8f (step %.2f ms, fastest of 3)", cs, n1 / n2,
          t[0] < t[1] ? (t[0] < t[2] ? t[0] : t[2]) : (t[1] < t[2] ? t[1] : t[2]));
    be->ops->adapter_unbind(be, ba);
    free(logps);
}

/* Distance in units in the last place between two floats of one sign. */
static long ulps(float a, float b)
{
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    long d = (long)ia - (long)ib;
    return d < 0 ? -d : d;
}

static long worst_ulps(const float *a, const float *b, size_t n, size_t *differ)
{
    long w = 0;
    *differ = 0;
    for (size_t i = 0; i < n; i++) {
        long u = ulps(a[i], b[i]);
        *differ += u != 0;
        w = u > w ? u : w;
    }
    return w;
}

/* The device optimizer step (adamw_step) against the host's grad_clip_norm
 * + adamw_step (checked against torch by tests/check_optim.c), from the same
 * gradients: four steps, the first at lr 0, clipping on, off and on.  Both
 * run optimizer_math.h, so params and moments should agree to the bit; the
 * norm is summed in another order on the device, which may move the clip
 * coefficient by an ulp.  Then: the bf16 copy the GEMMs use follows the new
 * params, and a non-finite gradient is refused with nothing changed. */
static void check_optimizer(Backend *be, LoraAdapter *ad, const Batch *b, const float *dlogps)
{
    Error err;
    size_t n = ad->n_params;
    float *saved = malloc(n * sizeof(float)), *g = malloc(n * sizeof(float));
    float *gh = malloc(n * sizeof(float)), *hp = malloc(n * sizeof(float));
    float *m = malloc(n * sizeof(float)), *v = malloc(n * sizeof(float));
    float *lp_step = calloc((size_t)b->n_seq, sizeof(float)), *lp_push = calloc((size_t)b->n_seq, sizeof(float));
    memcpy(saved, ad->params, n * sizeof(float));
    BackendAdapter *ba = NULL;
    die(be->ops->adapter_bind(be, ad, &ba, &err) || be->ops->adapter_zero_grads(be, ba, &err) ||
        be->ops->logps(be, ba, b, lp_step, 1, &err) || be->ops->sync(be, &err) ||
        be->ops->backward(be, ba, b, dlogps, &err) || be->ops->adapter_pull_grads(be, ba, &err),
        &err, "optimizer: gradients");
    memcpy(g, ad->grads, n * sizeof(float));
    memcpy(hp, ad->params, n * sizeof(float));
    double gnorm = sqrt(grad_sum_squares(g, n));
    AdamW host;
    die(adamw_init(&host, n, adamw_default_config(0.05), &err), &err, "adamw");
    const double lr[4] = {0.0, 1e-3, 2e-3, 5e-4};
    const double max_norm[4] = {0.5 * gnorm, 0.0, 2.0 * gnorm, 0.1 * gnorm};
    double worst_norm = 0;
    for (int k = 0; k < 4; k++) {
        memcpy(gh, g, n * sizeof(float));
        double hn = grad_clip_norm(gh, n, max_norm[k]), dn = 0;
        die(adamw_step(&host, hp, gh, n, lr[k], &err), &err, "host adamw");
        BackendAdamWStep req = {host.cfg, k + 1, lr[k], max_norm[k], {NULL, NULL}};
        die(be->ops->adamw_step(be, ba, &req, &dn, &err), &err, "device adamw");
        double e = fabs(dn - hn) / hn;
        worst_norm = e > worst_norm ? e : worst_norm;
    }
    die(be->ops->adamw_pull(be, ba, m, v, &err), &err, "adamw_pull");
    size_t dp, dm, dv;
    long up = worst_ulps(ad->params, hp, n, &dp), um = worst_ulps(m, host.m, n, &dm),
         uv = worst_ulps(v, host.v, n, &dv);
    check(worst_norm < 1e-12, "optimizer: grad norm vs host", "rel diff %.3g (norm %.6g)", worst_norm, gnorm);
    check(up <= 1 && um <= 1 && uv <= 1, "optimizer: 4 AdamW steps vs host",
          "worst ulps params %ld (%zu of %zu differ), m %ld (%zu), v %ld (%zu)", up, dp, n, um, dm, uv, dv);
    /* the bf16 copy: logps after the device step == logps after pushing its params */
    die(be->ops->logps(be, ba, b, lp_step, 0, &err) || be->ops->sync(be, &err) ||
        be->ops->adapter_push(be, ba, &err) || be->ops->logps(be, ba, b, lp_push, 0, &err) ||
        be->ops->sync(be, &err), &err, "optimizer: logps");
    check(memcmp(lp_step, lp_push, (size_t)b->n_seq * sizeof(float)) == 0,
          "optimizer: bf16 copy follows the step", "logps seq 0 %.6f / %.6f", lp_step[0], lp_push[0]);
    /* a NaN gradient: refused, params and moments unchanged */
    float *bad = malloc((size_t)b->n_seq * sizeof(float));
    memcpy(bad, dlogps, (size_t)b->n_seq * sizeof(float));
    bad[0] = NAN;
    die(be->ops->adapter_zero_grads(be, ba, &err) || be->ops->logps(be, ba, b, lp_step, 1, &err) ||
        be->ops->sync(be, &err) || be->ops->backward(be, ba, b, bad, &err), &err, "optimizer: nan grads");
    memcpy(hp, ad->params, n * sizeof(float));
    BackendAdamWStep req = {host.cfg, 5, 1e-3, 1.0, {NULL, NULL}};
    double dn = 0;
    int rc = be->ops->adamw_step(be, ba, &req, &dn, &err);
    die(be->ops->adamw_pull(be, ba, gh, NULL, &err), &err, "adamw_pull");
    check(rc != 0 && memcmp(ad->params, hp, n * sizeof(float)) == 0 && memcmp(gh, m, n * sizeof(float)) == 0,
          "optimizer: NaN gradient refused", "%s", rc ? err.msg : "accepted");
    be->ops->adapter_unbind(be, ba);
    memcpy(ad->params, saved, n * sizeof(float));
    adamw_free(&host);
    free(saved); free(g); free(gh); free(hp); free(m); free(v); free(lp_step); free(lp_push); free(bad);
}

/* pref_backward forms MODPO's dL/dlogp on the device from the kept logps
 * (pref_loss_math.h, double); the host's modpo_loss (held to torch by
 * check_losses) on the same logps, uploaded through backward, must give the
 * same gradients.  The device's exp and log1p may differ from glibc's by an
 * ulp in double, which only rarely reaches the fp32 dlogps. */
static void check_pref_backward(Backend *be, LoraAdapter *ad, const Batch *full, const float *base)
{
    Error err;
    Batch b = *full;
    b.n_seq -= b.n_seq % 2;
    int n = b.n_seq / 2;
    size_t np = ad->n_params;
    float *lp = calloc((size_t)b.n_seq, sizeof(float)), *d = calloc((size_t)b.n_seq, sizeof(float));
    float *margin = calloc((size_t)b.n_seq, sizeof(float)), *host = malloc(np * sizeof(float));
    for (int i = 0; i < b.n_seq; i++) margin[i] = (float)(uniform() * 2 - 1);
    BackendAdapter *ba = NULL;
    die(be->ops->adapter_bind(be, ad, &ba, &err) || be->ops->adapter_zero_grads(be, ba, &err) ||
        be->ops->logps(be, ba, &b, lp, 1, &err) || be->ops->sync(be, &err), &err, "pref: logps");
    double spread = 0;
    for (int i = 0; i < b.n_seq; i++) spread = fmax(spread, fabs(lp[i] - base[i]));
    double beta = 1.0 / (spread > 0 ? spread : 1.0); /* every pair's logit of order 1 */
    PrefBatch pb = {(size_t)n, lp, lp + n, base, base + n};
    PrefGrads g = {d, d + n};
    PrefMetrics met;
    die(modpo_loss(&pb, margin, margin + n, beta, 0.4, PREF_LOSS_SIGMOID, 0.5, &met, &g, &err) ||
        be->ops->backward(be, ba, &b, d, &err) || be->ops->adapter_pull_grads(be, ba, &err), &err,
        "pref: host loss");
    memcpy(host, ad->grads, np * sizeof(float));
    PrefLossSpec spec = {(size_t)n, base, base + n, margin, margin + n, pref_reward_form(beta, 1, 0.4),
                         PREF_LOSS_SIGMOID, 0.5};
    double t0 = now_ms();
    die(be->ops->adapter_zero_grads(be, ba, &err) || be->ops->logps(be, ba, &b, lp, 1, &err) ||
        be->ops->pref_backward(be, ba, &b, &spec, &err) || be->ops->sync(be, &err), &err, "pref: device loss");
    double t1 = now_ms();
    die(be->ops->adapter_pull_grads(be, ba, &err), &err, "pref: pull");
    size_t differ;
    long u = worst_ulps(ad->grads, host, np, &differ);
    double n1, n2, cs = cosine(ad->grads, host, np, &n1, &n2);
    check(cs > 0.9999999 && fabs(n1 / n2 - 1) < 1e-6, "pref_backward vs host modpo_loss",
          "cos %.9f, worst ulps %ld (%zu of %zu differ), loss %.4f, step %.2f ms", cs, u, differ, np,
          met.loss, t1 - t0);
    spec.n_pairs = (size_t)n + 1;
    int rc = be->ops->logps(be, ba, &b, lp, 1, &err) || be->ops->pref_backward(be, ba, &b, &spec, &err);
    check(rc != 0 && strstr(err.msg, "pairs need") != NULL, "pref_backward: wrong pair count refused",
          "%s", rc ? err.msg : "accepted");
    die(be->ops->sync(be, &err), &err, "pref: sync");
    be->ops->adapter_unbind(be, ba);
    free(lp); free(d); free(margin); free(host);
}

/* The decode of run_backend (graphs on: steps 3.. captured and replayed)
 * again with every kernel launched from the host: the same bits. */
static void check_graphs(Backend *be, LoraAdapter *ad, const Batch *b, const int32_t *plen,
                         const float *dec_graphs, long graph_steps)
{
    Error err;
    BackendAdapter *ba = NULL;
    size_t n = (size_t)(DEC_STEPS + 1) * b->n_seq * be->config.vocab_size;
    float *dec = malloc(n * sizeof(float));
    cuda_backend_set_graphs(be, 0);
    die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
    die(run_decode(be, ba, b, plen, dec, &err), &err, "decode without graphs");
    be->ops->adapter_unbind(be, ba);
    cuda_backend_set_graphs(be, 1);
    /* Step 3 at the earliest (4 of 6 steps); one later when step 2 outgrew
     * the scratch block and step 3's reset moved it.  At least the capture
     * and one replay. */
    check(graph_steps >= 2 && graph_steps <= DEC_STEPS - 2, "decode graphs: steps run from a graph",
          "%ld of %d", graph_steps, DEC_STEPS);
    size_t differ = 0;
    long worst = worst_ulps(dec, dec_graphs, n, &differ);
    check(differ == 0, "decode graphs: logits equal launch by launch", "%zu differ, worst %ld ulps",
          differ, worst);
    free(dec);
}

/* Batch.sum_start on the GPU: each sequence cut in the middle of its
 * labels gives two sums that add up to its logp (the adapter pass of
 * run_backend) and whose second equals the logp labelled from the cut on. */
static void check_label_sums(Backend *be, LoraAdapter *ad, Batch *b, const float *whole)
{
    Error err;
    BackendAdapter *ba = NULL;
    int n = b->n_seq, T = b->seq_len;
    uint8_t *mask = b->label_mask, *tail = calloc((size_t)n * T, 1);
    int *cut = malloc((size_t)n * sizeof *cut);
    label_cuts_mid(b, cut, tail);
    float *sums = malloc((size_t)batch_n_sums(b) * sizeof *sums), *from_cut = malloc((size_t)n * sizeof *from_cut);
    die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
    die(be->ops->logps(be, ba, b, sums, 0, &err) || be->ops->sync(be, &err), &err, "logps with sums");
    uint8_t *cuts = b->sum_start;
    b->sum_start = NULL;
    b->label_mask = tail;
    die(be->ops->logps(be, ba, b, from_cut, 0, &err) || be->ops->sync(be, &err), &err, "logps from the cuts");
    b->label_mask = mask;
    be->ops->adapter_unbind(be, ba);
    double worst_whole = 0, worst_tail = 0;
    for (int s = 0, o = 0; s < n; s++) {
        double sum = sums[o] + (cut[s] >= 0 ? sums[o + 1] : 0.0);
        double e = fabs(sum - whole[s]) / fabs(whole[s]);
        worst_whole = e > worst_whole ? e : worst_whole;
        if (cut[s] >= 0) {
            double et = fabs(sums[o + 1] - from_cut[s]) / fabs(from_cut[s]);
            worst_tail = et > worst_tail ? et : worst_tail;
        }
        o += cut[s] >= 0 ? 2 : 1;
    }
    check(worst_whole < 1e-5, "label sums: two sums add up to the logp", "rel err %.3g", worst_whole);
    check(worst_tail < 1e-5, "label sums: second sum vs logp from the cut", "rel err %.3g", worst_tail);
    free(cuts);
    free(tail);
    free(cut);
    free(sums);
    free(from_cut);
}

/* Decode logits vs the CUDA full forward at the same positions. */
static double decode_vs_full(Backend *be, LoraAdapter *ad, const Batch *b, const int32_t *plen,
                             const float *dec)
{
    Error err;
    BackendAdapter *ba = NULL;
    size_t V = be->config.vocab_size;
    float *full = malloc((size_t)b->n_seq * b->seq_len * V * sizeof(float));
    die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
    die(be->ops->debug_logits(be, ba, b, full, &err), &err, "debug_logits");
    be->ops->adapter_unbind(be, ba);
    double worst = 0;
    for (int s = 0; s < b->n_seq; s++) {
        int p = plen[s];
        for (int k = 0; k <= DEC_STEPS; k++) {
            int consumed = k == 0 ? 0 : (s == 1 ? k - 1 : k); /* slot 1 paused at step 1 */
            const float *f = full + ((size_t)s * b->seq_len + p - 1 + consumed) * V;
            double e = rel_err(dec + ((size_t)k * b->n_seq + s) * V, f, V);
            worst = e > worst ? e : worst;
        }
    }
    free(full);
    return worst;
}

/* Decoding 1 and 2 slots: the GEMV path (at most GEMV_DEFAULT_ROWS rows,
 * with the norms and SwiGLU formed inside the GEMVs, replayed from graphs)
 * against the full forward.  The third run decodes one slot from a 1-token
 * prompt: its first steps have fewer keys than the step attention has key
 * splits (cu_attention_step_splits), so most splits see no key. */
static void check_few_rows(Backend *be, LoraAdapter *ad, const Batch *b, const int32_t *plen)
{
    Error err;
    size_t V = be->config.vocab_size;
    const int32_t one_token[1] = {1};
    for (int run = 0; run < 3; run++) {
        int ns = run == 1 ? 2 : 1;
        if (ns > b->n_seq) continue;
        const int32_t *prompts = run == 2 ? one_token : plen;
        Batch sub = *b; /* the first ns sequences: rows are contiguous */
        sub.n_seq = ns;
        BackendAdapter *ba = NULL;
        float *dec = malloc((size_t)(DEC_STEPS + 1) * ns * V * sizeof(float));
        die(be->ops->adapter_bind(be, ad, &ba, &err), &err, "bind");
        die(run_decode(be, ba, &sub, prompts, dec, &err), &err, "few-row decode");
        be->ops->adapter_unbind(be, ba);
        double e = decode_vs_full(be, ad, &sub, prompts, dec);
        char what[64];
        snprintf(what, sizeof what, "decode of %d slot%s%s vs full forward", ns, ns > 1 ? "s" : "",
                 run == 2 ? " from a 1-token prompt" : "");
        check(e < DECODE_TOL, what, "%.3g", e);
        free(dec);
    }
}

/* The decode MLP with SwiGLU in gate/up's GEMV epilogue against the same
 * steps with it in down_proj's prologue: the same bits.  Decoded on the
 * base model, whose Linears have no LoRA, so every layer can take it. */
static void check_glu_epilogue(Backend *be, const Batch *b, const int32_t *plen)
{
    Error err;
    size_t count = (size_t)(DEC_STEPS + 1) * be->config.vocab_size;
    Batch sub = *b;
    sub.n_seq = 1;
    float *on = malloc(count * sizeof(float)), *off = malloc(count * sizeof(float));
    long start = cuda_backend_glu_gemvs(be);
    die(run_decode(be, NULL, &sub, plen, on, &err), &err, "decode, SwiGLU in the epilogue");
    long used = cuda_backend_glu_gemvs(be) - start;
    cuda_backend_set_gemv_glu(be, 0);
    die(run_decode(be, NULL, &sub, plen, off, &err), &err, "decode, SwiGLU in the prologue");
    long used_off = cuda_backend_glu_gemvs(be) - start - used;
    cuda_backend_set_gemv_glu(be, 1);
    check(used > 0 && used_off == 0, "decode MLP: SwiGLU epilogue taken", "%ld GEMVs on, %ld off",
          used, used_off);
    size_t differ = 0;
    for (size_t i = 0; i < count; i++) differ += memcmp(&on[i], &off[i], sizeof(float)) != 0;
    check(differ == 0, "decode MLP: epilogue = prologue", "%zu of %zu logits differ", differ, count);
    free(on);
    free(off);
}

static void run_case(const Case *cs)
{
    Error err;
    LlamaModel model;
    printf("== %s: hidden %d, %d layers, %d heads / %d kv (head_dim %d), ffn %d, vocab %d%s; "
           "%d sequences of <= %d tokens, LoRA r %d (targets 0x%x)\n",
           cs->name, cs->cfg.hidden_size, cs->cfg.num_hidden_layers, cs->cfg.num_attention_heads,
           cs->cfg.num_key_value_heads, llama_head_dim(&cs->cfg), cs->cfg.intermediate_size,
           cs->cfg.vocab_size, cs->cfg.tie_word_embeddings ? ", tied" : "", cs->n_seq,
           cs->max_len, cs->rank, cs->targets ? cs->targets : (1u << LORA_N_TARGETS) - 1);
    fflush(stdout);
    die(llama_model_init_random(&model, &cs->cfg, 1234, &err), &err, "init model");
    /* bf16-representable weights (as a model saved in bf16 is): both backends
     * then run the same model and the comparison measures compute precision
     * only, not the rounding of the weights the CUDA backend would add. */
    float *w = model.storage;
    for (size_t i = 0; i < model.storage_bytes / sizeof(float); i++)
        w[i] = safetensors_bf16_to_f32(safetensors_f32_to_bf16(w[i]));
    LoraAdapter ad;
    LoraSpec spec = {cs->rank, 2.0f * cs->rank,
                     cs->targets ? cs->targets : (1u << LORA_N_TARGETS) - 1};
    die(lora_adapter_init(&ad, &cs->cfg, spec, &err), &err, "adapter");
    lora_adapter_randomize(&ad, 77);
    for (int l = 0; l < ad.n_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(&ad, l, (LoraTarget)t);
            if (!s) continue;
            for (size_t i = 0; i < (size_t)s->out_features * cs->rank; i++)
                ad.params[s->b_offset + i] = (float)((uniform() * 2 - 1) * 0.05);
        }
    Batch b;
    make_batch(&cs->cfg, cs->n_seq, cs->max_len, &b);
    float *dlogps = malloc((size_t)b.n_seq * sizeof(float));
    for (int s = 0; s < b.n_seq; s++) dlogps[s] = (float)(uniform() * 2 - 1);
    int32_t *plen = malloc((size_t)b.n_seq * sizeof *plen);
    for (int s = 0; s < b.n_seq; s++) plen[s] = b.lengths[s] - DEC_STEPS - 1 - s % 3;

    Backend *cpu = NULL, *gpu = NULL;
    Result rc, rg;
    double t0 = now_ms();
    die(cpu_backend_create(&model, NULL, &cpu, &err), &err, "cpu backend");
    run_backend(cpu, &ad, &b, dlogps, plen, &rc, 0);
    backend_destroy(cpu);
    double t1 = now_ms();
    die(cuda_backend_create(&model, 0, &gpu, &err), &err, "cuda backend");
    double t2 = now_ms();
    run_backend(gpu, &ad, &b, dlogps, plen, &rg, 1);
    long graph_steps = cuda_backend_graph_launches(gpu);
    printf("     cpu reference %.0f ms; cuda create %.0f ms\n", t1 - t0, t2 - t1);

    double worst = 0, worst_base = 0, worst_diff = 0;
    for (int s = 0; s < b.n_seq; s++) {
        double e = fabs(rg.logps[s] - rc.logps[s]) / fabs(rc.logps[s]);
        double eb = fabs(rg.base[s] - rc.base[s]) / fabs(rc.base[s]);
        double dd = fabs((rg.logps[s] - rg.base[s]) - (rc.logps[s] - rc.base[s]));
        worst = e > worst ? e : worst;
        worst_base = eb > worst_base ? eb : worst_base;
        worst_diff = dd > worst_diff ? dd : worst_diff;
    }
    check(worst < LOGPS_TOL, "logps (adapter) rel err", "%.3g (seq 0: cpu %.4f cuda %.4f)", worst,
          rc.logps[0], rg.logps[0]);
    check(worst_base < LOGPS_TOL, "logps (base) rel err", "%.3g", worst_base);
    printf("     max |(logp_adapter - logp_base) cuda - cpu| = %.4g (cpu seq 0: %.4f)\n",
           worst_diff, rc.logps[0] - rc.base[0]);
    double nc, ng;
    double cos_all = cosine(rg.grads, rc.grads, ad.n_params, &ng, &nc);
    double cos_min = 1;
    const char *min_name = "";
    int min_layer = 0;
    for (int l = 0; l < ad.n_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(&ad, l, (LoraTarget)t);
            if (!s) continue;
            size_t na = (size_t)cs->rank * s->in_features, nb = (size_t)s->out_features * cs->rank;
            double ca = cosine(rg.grads + s->a_offset, rc.grads + s->a_offset, na, NULL, NULL);
            double cb = cosine(rg.grads + s->b_offset, rc.grads + s->b_offset, nb, NULL, NULL);
            double c = ca < cb ? ca : cb;
            if (c < cos_min) {
                cos_min = c;
                min_name = lora_target_name((LoraTarget)t);
                min_layer = l;
            }
        }
    check(cos_all > GRAD_COS_MIN, "LoRA grads cosine (all)", "%.6f (|g| cpu %.4g cuda %.4g)",
          cos_all, nc, ng);
    check(cos_min > 0.99, "LoRA grads cosine (worst tensor)", "%.6f (layer %d %s)", cos_min,
          min_layer, min_name);
    size_t V = cs->cfg.vocab_size;
    double dec_err = rel_err(rg.dec, rc.dec, (size_t)(DEC_STEPS + 1) * b.n_seq * V);
    check(dec_err < DECODE_TOL, "decode logits vs cpu decode", "%.3g", dec_err);
    double full_err = decode_vs_full(gpu, &ad, &b, plen, rg.dec);
    check(full_err < DECODE_TOL, "decode logits vs cuda full forward", "%.3g", full_err);
    check_recompute(gpu, &ad, &b, dlogps, &rg);
    check_optimizer(gpu, &ad, &b, dlogps);
    check_pref_backward(gpu, &ad, &b, rg.base);
    check_graphs(gpu, &ad, &b, plen, rg.dec, graph_steps);
    check_label_sums(gpu, &ad, &b, rg.logps);
    check_few_rows(gpu, &ad, &b, plen);
    check_glu_epilogue(gpu, &b, plen);
    backend_destroy(gpu);
    lora_adapter_free(&ad);
    llama_model_free(&model);
    batch_free(&b);
    free(dlogps);
    free(plen);
    free(rc.logps); free(rc.base); free(rc.grads); free(rc.dec);
    free(rg.logps); free(rg.base); free(rg.grads); free(rg.dec);
}

int main(int argc, char **argv)
{
    LlamaConfig tiny = llama_preset_find("tiny")->config;
    tiny.vocab_size = 512;
    LlamaConfig tied = tiny;
    tied.num_key_value_heads = tied.num_attention_heads; /* MHA */
    tied.tie_word_embeddings = true;
    LlamaConfig g128 = tiny; /* head_dim 128 (4 values per lane), GQA 4:1 */
    g128.hidden_size = 512;
    g128.num_attention_heads = 4;
    g128.num_key_value_heads = 1;
    g128.intermediate_size = 1024;
    g128.vocab_size = 1000;
    LlamaConfig many = g128; /* 24 slots: decode takes the split-K GEMMs (cu_gemm_split_k) */
    many.num_key_value_heads = 4;
    LlamaConfig small = llama_preset_find("small-100m")->config;
    LlamaConfig wide = llama_preset_find("llama2-7b")->config; /* 7B's width, 2 layers */
    wide.num_hidden_layers = 2;
    LlamaConfig deep = llama_preset_find("llama2-7b")->config; /* 7B's depth, narrow */
    deep.hidden_size = 512;
    deep.num_attention_heads = deep.num_key_value_heads = 4;
    deep.intermediate_size = 1376;
    unsigned qv = (1u << LORA_Q_PROJ) | (1u << LORA_V_PROJ);
    Case cases[] = {
        {"tiny", tiny, 5, 70, 8, 0},
        {"tied", tied, 3, 40, 4, 0},
        {"gqa128", g128, 4, 150, 16, 0},
        {"batch24", many, 24, 64, 8, 0},
        {"small-100m", small, 4, 256, 16, 0},
        {"wide", wide, 4, 512, 16, qv},
        {"deep", deep, 4, 512, 16, qv},
    };
    int n_cases = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n_cases; i++) {
        int want = argc < 2;
        for (int a = 1; a < argc; a++) want |= strcmp(argv[a], cases[i].name) == 0;
        if (want) run_case(&cases[i]);
    }
    printf("%s: %d failure(s)\n", failures ? "FAILED" : "PASSED", failures);
    return failures ? 1 : 0;
}

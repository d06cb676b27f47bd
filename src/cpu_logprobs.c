/* The end of the model, fused: final RMSNorm, LM head, log-softmax and the
 * gather of the label's log-prob, a chunk of rows at a time so that no more
 * than [chunk, V] logits are ever alive, and only for rows that carry a label.
 *     logp = logits[target] - lse,  lse = log sum_j exp(logits[j])
 * With hn the normed row and W the head, d logp / d hn = W[target] - p^T W
 * (p = softmax(logits)): a [D] vector per row that does not depend on the
 * loss.  The forward computes it while the chunk's logits are alive (one
 * extra GEMM), so the backward is dlogp * that vector through the final norm,
 * and never touches the LM head again. */
#include "cpu_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

typedef struct {
    float *xg;     /* [chunk, D] gathered residual rows */
    float *hn;     /* [chunk, D] their final norm (then reused for dx) */
    float *rstd;   /* [chunk] */
    float *logits; /* [chunk, V] */
    float *dh;     /* [chunk, D] */
} HeadScratch;

size_t cpu_logprobs_scratch(const LlamaConfig *c, int chunk)
{
    return (size_t)chunk * (3 * (size_t)c->hidden_size + 1 + (size_t)c->vocab_size);
}

static HeadScratch split_scratch(const LlamaConfig *c, int chunk, float *s)
{
    size_t cd = (size_t)chunk * c->hidden_size;
    HeadScratch h = {s, s + cd, s + 2 * cd, s + 2 * cd + chunk, NULL};
    h.dh = h.logits + (size_t)chunk * c->vocab_size;
    return h;
}

/* xg <- rows of x, hn <- their final norm; returns nothing, fills rstd. */
static void gather_norm(const LlamaModel *m, const float *x, const int32_t *row, int n,
                        HeadScratch *h)
{
    int d = m->config.hidden_size;
    for (int i = 0; i < n; i++)
        memcpy(h->xg + (size_t)i * d, x + (size_t)row[i] * d, (size_t)d * sizeof(float));
    cpu_rmsnorm_forward(n, d, h->xg, m->weights.norm, m->config.rms_norm_eps, h->hn, h->rstd);
}

static void head_matmul(const LlamaModel *m, int n, const float *hn, float *logits)
{
    int d = m->config.hidden_size, v = m->config.vocab_size;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, v, d, 1.0f, hn, d,
                m->weights.lm_head, d, 0.0f, logits, v);
}

/* dhn[i] = W[target_i] - p_i^T W for the chunk's rows, p already in probs. */
static void logp_direction(const LlamaModel *m, int nc, const int32_t *target,
                           const float *probs, float *dhn)
{
    int d = m->config.hidden_size, v = m->config.vocab_size;
    const float *w = m->weights.lm_head;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nc, d, v, -1.0f, probs, v, w, d,
                0.0f, dhn, d);
    for (int i = 0; i < nc; i++) {
        const float *wt = w + (size_t)target[i] * d;
        float *g = dhn + (size_t)i * d;
        for (int j = 0; j < d; j++) g[j] += wt[j];
    }
}

/* Largest of v >= 1 floats; four running maxima keep the loop free of one
 * long compare chain. */
static float row_max(const float *x, int v)
{
    float m0 = x[0], m1 = x[0], m2 = x[0], m3 = x[0];
    int j = 0;
    for (; j + 4 <= v; j += 4) {
        m0 = x[j] > m0 ? x[j] : m0;
        m1 = x[j + 1] > m1 ? x[j + 1] : m1;
        m2 = x[j + 2] > m2 ? x[j + 2] : m2;
        m3 = x[j + 3] > m3 ? x[j + 3] : m3;
    }
    for (; j < v; j++) m0 = x[j] > m0 ? x[j] : m0;
    m0 = m1 > m0 ? m1 : m0;
    m2 = m3 > m2 ? m3 : m2;
    return m2 > m0 ? m2 : m0;
}

/* x[j] <- exp(x[j] - mx); returns their sum, in double.  Four partial sums,
 * for the same reason as row_max. */
static double row_exp_sum(float *x, int v, float mx)
{
    for (int j = 0; j < v; j++) x[j] = expf(x[j] - mx);
    double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
    int j = 0;
    for (; j + 4 <= v; j += 4) {
        s0 += x[j];
        s1 += x[j + 1];
        s2 += x[j + 2];
        s3 += x[j + 3];
    }
    for (; j < v; j++) s0 += x[j];
    return (s0 + s1) + (s2 + s3);
}

/* One row: its label's log-prob and log-sum-exp; the row is overwritten by
 * its exps and, with probs, by softmax(row). */
static float row_logp(float *lg, int v, int target, float *lse, int probs)
{
    float mx = row_max(lg, v);
    float shifted = lg[target] - mx;
    double sum = row_exp_sum(lg, v, mx);
    if (probs) {
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < v; j++) lg[j] *= inv;
    }
    float log_sum = (float)log(sum);
    *lse = mx + log_sum;
    return shifted - log_sum; /* torch's order: (x - max) - log(sum exp(x - max)) */
}

void cpu_logprobs_forward(const LlamaModel *m, int chunk, const float *x, CpuLabels *labels,
                          float *logp, float *scratch)
{
    int v = m->config.vocab_size, d = m->config.hidden_size;
    HeadScratch h = split_scratch(&m->config, chunk, scratch);
    for (int c0 = 0; c0 < labels->n; c0 += chunk) {
        int nc = labels->n - c0 < chunk ? labels->n - c0 : chunk;
        gather_norm(m, x, labels->row + c0, nc, &h);
        head_matmul(m, nc, h.hn, h.logits);
        for (int i = 0; i < nc; i++)
            logp[c0 + i] = row_logp(h.logits + (size_t)i * v, v, labels->target[c0 + i],
                                    &labels->lse[c0 + i], labels->dhn != NULL);
        if (labels->dhn)
            logp_direction(m, nc, labels->target + c0, h.logits, labels->dhn + (size_t)c0 * d);
    }
}

void cpu_logprobs_backward(const LlamaModel *m, int chunk, const float *x,
                           const CpuLabels *labels, const float *dlogp, float *dx,
                           float *scratch)
{
    int d = m->config.hidden_size;
    HeadScratch h = split_scratch(&m->config, chunk, scratch);
    for (int c0 = 0; c0 < labels->n; c0 += chunk) {
        int nc = labels->n - c0 < chunk ? labels->n - c0 : chunk;
        gather_norm(m, x, labels->row + c0, nc, &h);
        for (int i = 0; i < nc; i++) {
            const float *g = labels->dhn + (size_t)(c0 + i) * d;
            for (int j = 0; j < d; j++) h.dh[(size_t)i * d + j] = dlogp[c0 + i] * g[j];
        }
        memset(h.hn, 0, (size_t)nc * d * sizeof(float));
        cpu_rmsnorm_backward(nc, d, h.xg, m->weights.norm, h.rstd, h.dh, h.hn);
        for (int i = 0; i < nc; i++) {
            float *dst = dx + (size_t)labels->row[c0 + i] * d;
            const float *src = h.hn + (size_t)i * d;
            for (int j = 0; j < d; j++) dst[j] += src[j];
        }
    }
}

void cpu_head_logits(const LlamaModel *m, int chunk, const float *x, int n, const int32_t *row,
                     float *out, float *scratch)
{
    HeadScratch h = split_scratch(&m->config, chunk, scratch);
    for (int c0 = 0; c0 < n; c0 += chunk) {
        int nc = n - c0 < chunk ? n - c0 : chunk;
        gather_norm(m, x, row + c0, nc, &h);
        head_matmul(m, nc, h.hn, out + (size_t)c0 * m->config.vocab_size);
    }
}

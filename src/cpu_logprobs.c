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

/* dhn[i] = W[target_i] - p_i^T W for the chunk's rows; p overwrites logits. */
static void logp_direction(const LlamaModel *m, int nc, const int32_t *target, const float *lse,
                           float *logits, float *dhn)
{
    int d = m->config.hidden_size, v = m->config.vocab_size;
    const float *w = m->weights.lm_head;
#pragma omp parallel for schedule(static)
    for (int i = 0; i < nc; i++) {
        float *lg = logits + (size_t)i * v;
        for (int j = 0; j < v; j++) lg[j] = expf(lg[j] - lse[i]);
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nc, d, v, -1.0f, logits, v, w, d,
                0.0f, dhn, d);
    for (int i = 0; i < nc; i++) {
        const float *wt = w + (size_t)target[i] * d;
        float *g = dhn + (size_t)i * d;
        for (int j = 0; j < d; j++) g[j] += wt[j];
    }
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
#pragma omp parallel for schedule(static)
        for (int i = 0; i < nc; i++) {
            const float *lg = h.logits + (size_t)i * v;
            float mx = lg[0];
            for (int j = 1; j < v; j++) mx = lg[j] > mx ? lg[j] : mx;
            double sum = 0.0;
            for (int j = 0; j < v; j++) sum += expf(lg[j] - mx);
            float log_sum = (float)log(sum);
            /* torch's order: (x - max) - log(sum exp(x - max)) */
            logp[c0 + i] = (lg[labels->target[c0 + i]] - mx) - log_sum;
            labels->lse[c0 + i] = mx + log_sum;
        }
        if (labels->dhn)
            logp_direction(m, nc, labels->target + c0, labels->lse + c0, h.logits,
                           labels->dhn + (size_t)c0 * d);
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

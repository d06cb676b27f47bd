/* Causal scaled-dot-product attention with grouped-query heads (query head h
 * reads key/value head h / (n_heads / n_kv_heads), as HF's repeat_kv), one
 * sequence and head at a time:
 *     S = Q K^T / sqrt(head_dim)   (causal: query i sees keys <= its position)
 *     P = softmax(S),  O = P V,    lse_i = log sum_j exp(S_ij)
 * The backward recomputes P = exp(S - lse) instead of keeping T x T
 * probabilities per head, then
 *     dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),
 *     dQ = dS K / sqrt(hd),  dK += dS^T Q / sqrt(hd),  dV += P^T dO. */
#include "cpu_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

/* Softmax of each row of s[n_q, n_k] over its visible keys, in place; masked
 * entries become 0.  Optionally stores each row's log-sum-exp. */
static void causal_softmax(float *s, int n_q, int n_k, float *lse, int lse_stride)
{
#pragma omp parallel for schedule(static) if ((long)n_q * n_k > 16384)
    for (int i = 0; i < n_q; i++) {
        float *row = s + (size_t)i * n_k;
        int last = n_k - n_q + i; /* the row's own position */
        float mx = row[0];
        for (int j = 1; j <= last; j++) mx = row[j] > mx ? row[j] : mx;
        double sum = 0.0;
        for (int j = 0; j <= last; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        float inv = (float)(1.0 / sum);
        for (int j = 0; j <= last; j++) row[j] *= inv;
        for (int j = last + 1; j < n_k; j++) row[j] = 0.0f;
        if (lse) lse[(size_t)i * lse_stride] = mx + (float)log(sum);
    }
}

static void head_forward(const CpuAttnShape *sh, const CpuAttnSeq *sq, int h, float *s)
{
    int hd = sh->head_dim, kvh = h / (sh->n_heads / sh->n_kv_heads);
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = sq->q + h * hd, *k = sq->k + kvh * hd, *v = sq->v + kvh * hd;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, sq->n_q, sq->n_k, hd, scale, q,
                sh->q_stride, k, sh->kv_stride, 0.0f, s, sq->n_k);
    causal_softmax(s, sq->n_q, sq->n_k, sq->lse ? sq->lse + h : NULL, sh->n_heads);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, sq->n_q, hd, sq->n_k, 1.0f, s,
                sq->n_k, v, sh->kv_stride, 0.0f, sq->out + h * hd, sh->q_stride);
}

void cpu_attention_forward(const CpuAttnShape *sh, int n_seq, const CpuAttnSeq *seqs,
                           float *scratch)
{
    for (int s = 0; s < n_seq; s++)
        for (int h = 0; h < sh->n_heads; h++) head_forward(sh, &seqs[s], h, scratch);
}

/* P = exp(scale * Q K^T - lse) on the causal triangle, 0 above it. */
static void recompute_probs(const CpuAttnShape *sh, const CpuAttnGrad *g, int h, float *p)
{
    int n = g->n, hd = sh->head_dim, kvh = h / (sh->n_heads / sh->n_kv_heads);
    float scale = 1.0f / sqrtf((float)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, scale, g->q + h * hd,
                sh->q_stride, g->k + kvh * hd, sh->kv_stride, 0.0f, p, n);
#pragma omp parallel for schedule(static) if ((long)n * n > 16384)
    for (int i = 0; i < n; i++) {
        float *row = p + (size_t)i * n;
        float l = g->lse[(size_t)i * sh->n_heads + h];
        for (int j = 0; j <= i; j++) row[j] = expf(row[j] - l);
        for (int j = i + 1; j < n; j++) row[j] = 0.0f;
    }
}

static void head_backward(const CpuAttnShape *sh, const CpuAttnGrad *g, int h, float *scratch)
{
    int n = g->n, hd = sh->head_dim, kvh = h / (sh->n_heads / sh->n_kv_heads);
    int qs = sh->q_stride, ks = sh->kv_stride;
    float scale = 1.0f / sqrtf((float)hd);
    float *p = scratch, *dp = scratch + (size_t)n * n, *delta = dp + (size_t)n * n;
    const float *dout = g->dout + h * hd, *out = g->out + h * hd;

    recompute_probs(sh, g, h, p);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, hd, 1.0f, dout, qs,
                g->v + kvh * hd, ks, 0.0f, dp, n);
#pragma omp parallel for schedule(static) if ((long)n * n > 16384)
    for (int i = 0; i < n; i++) {
        double dd = 0.0; /* rowsum(dO * O) = rowsum(P * dP) */
        for (int j = 0; j < hd; j++) dd += (double)dout[(size_t)i * qs + j] * out[(size_t)i * qs + j];
        delta[i] = (float)dd;
        float *dpi = dp + (size_t)i * n, *pi = p + (size_t)i * n;
        for (int j = 0; j <= i; j++) dpi[j] = pi[j] * (dpi[j] - delta[i]);
        for (int j = i + 1; j < n; j++) dpi[j] = 0.0f;
    }
    /* dp now holds dS */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, n, scale, dp, n,
                g->k + kvh * hd, ks, 0.0f, g->dq + h * hd, qs);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, scale, dp, n, g->q + h * hd,
                qs, 1.0f, g->dk + kvh * hd, ks);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, hd, n, 1.0f, p, n, dout, qs, 1.0f,
                g->dv + kvh * hd, ks);
}

void cpu_attention_backward(const CpuAttnShape *sh, int n_seq, const CpuAttnGrad *seqs,
                            float *scratch)
{
    for (int s = 0; s < n_seq; s++) {
        const CpuAttnGrad *g = &seqs[s];
        /* dk, dv rows of one sequence are contiguous; heads of a GQA group add up. */
        memset(g->dk, 0, (size_t)g->n * sh->kv_stride * sizeof(float));
        memset(g->dv, 0, (size_t)g->n * sh->kv_stride * sizeof(float));
        for (int h = 0; h < sh->n_heads; h++) head_backward(sh, g, h, scratch);
    }
}

/* Causal scaled-dot-product attention with grouped-query heads (query head h
 * reads key/value head h / (n_heads / n_kv_heads), as HF's repeat_kv), one
 * sequence and head at a time:
 *     S = Q K^T / sqrt(head_dim)   (causal: query i sees keys <= its position)
 *     P = softmax(S),  O = P V,    lse_i = log sum_j exp(S_ij)
 * The backward recomputes P = exp(S - lse) instead of keeping T x T
 * probabilities per head, then
 *     dP = dO V^T,  dS = P * (dP - rowsum(dO * O)),
 *     dQ = dS K / sqrt(hd),  dK += dS^T Q / sqrt(hd),  dV += P^T dO.
 * Queries go in blocks of ATTN_BLOCK rows, each against only the keys its
 * last row can see, so the GEMMs skip most of the masked upper triangle. */
#include "cpu_kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define ATTN_BLOCK 64

/* Softmax of each row of s[n_rows, n_cols] over its first visible[i] =
 * first_visible + i entries, in place; the rest become 0.  Optionally stores
 * each row's log-sum-exp. */
static void causal_softmax(float *s, int n_rows, int n_cols, int first_visible, float *lse,
                           int lse_stride)
{
    for (int i = 0; i < n_rows; i++) {
        float *row = s + (size_t)i * n_cols;
        int n = first_visible + i;
        float mx = row[0];
        for (int j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
        for (int j = 0; j < n; j++) row[j] = expf(row[j] - mx);
        double sum = 0.0;
        for (int j = 0; j < n; j++) sum += row[j];
        float inv = (float)(1.0 / sum);
        for (int j = 0; j < n; j++) row[j] *= inv;
        for (int j = n; j < n_cols; j++) row[j] = 0.0f;
        if (lse) lse[(size_t)i * lse_stride] = mx + (float)log(sum);
    }
}

static void head_forward(const CpuAttnShape *sh, const CpuAttnSeq *sq, int h, float *s)
{
    int hd = sh->head_dim, kvh = h / (sh->n_heads / sh->n_kv_heads);
    int qs = sh->q_stride, ks = sh->kv_stride, past = sq->n_k - sq->n_q;
    float scale = 1.0f / sqrtf((float)hd);
    const float *k = sq->k + kvh * hd, *v = sq->v + kvh * hd;
    for (int i0 = 0; i0 < sq->n_q; i0 += ATTN_BLOCK) {
        int nb = sq->n_q - i0 < ATTN_BLOCK ? sq->n_q - i0 : ATTN_BLOCK;
        int nk = past + i0 + nb; /* keys the block's last row sees */
        const float *q = sq->q + (size_t)i0 * qs + h * hd;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nk, hd, scale, q, qs, k, ks,
                    0.0f, s, nk);
        causal_softmax(s, nb, nk, past + i0 + 1,
                       sq->lse ? sq->lse + (size_t)i0 * sh->n_heads + h : NULL, sh->n_heads);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, nk, 1.0f, s, nk, v, ks,
                    0.0f, sq->out + (size_t)i0 * qs + h * hd, qs);
    }
}

void cpu_attention_forward(const CpuAttnShape *sh, int n_seq, const CpuAttnSeq *seqs,
                           float *scratch)
{
    for (int s = 0; s < n_seq; s++)
        for (int h = 0; h < sh->n_heads; h++) head_forward(sh, &seqs[s], h, scratch);
}

/* One query block [i0, i0 + nb) of one head; p and dp are [nb, i0 + nb]. */
static void block_backward(const CpuAttnShape *sh, const CpuAttnGrad *g, int h, int i0, int nb,
                           float *p, float *dp)
{
    int hd = sh->head_dim, kvh = h / (sh->n_heads / sh->n_kv_heads);
    int qs = sh->q_stride, ks = sh->kv_stride, nk = i0 + nb;
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = g->q + (size_t)i0 * qs + h * hd, *dout = g->dout + (size_t)i0 * qs + h * hd;
    const float *out = g->out + (size_t)i0 * qs + h * hd;
    const float *k = g->k + kvh * hd, *v = g->v + kvh * hd;

    /* P = exp(scale * Q K^T - lse) on the causal triangle, 0 above it */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nk, hd, scale, q, qs, k, ks, 0.0f,
                p, nk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, nk, hd, 1.0f, dout, qs, v, ks,
                0.0f, dp, nk);
    for (int i = 0; i < nb; i++) {
        float *pi = p + (size_t)i * nk, *dpi = dp + (size_t)i * nk;
        float l = g->lse[(size_t)(i0 + i) * sh->n_heads + h];
        double dd = 0.0; /* rowsum(dO * O) = rowsum(P * dP) */
        for (int j = 0; j < hd; j++) dd += (double)dout[(size_t)i * qs + j] * out[(size_t)i * qs + j];
        float delta = (float)dd;
        int n = i0 + i + 1;
        for (int j = 0; j < n; j++) {
            pi[j] = expf(pi[j] - l);
            dpi[j] = pi[j] * (dpi[j] - delta); /* dS */
        }
        for (int j = n; j < nk; j++) pi[j] = dpi[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, hd, nk, scale, dp, nk, k, ks,
                0.0f, g->dq + (size_t)i0 * qs + h * hd, qs);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nb, scale, dp, nk, q, qs, 1.0f,
                g->dk + kvh * hd, ks);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, hd, nb, 1.0f, p, nk, dout, qs, 1.0f,
                g->dv + kvh * hd, ks);
}

void cpu_attention_backward(const CpuAttnShape *sh, int n_seq, const CpuAttnGrad *seqs,
                            float *scratch)
{
    for (int s = 0; s < n_seq; s++) {
        const CpuAttnGrad *g = &seqs[s];
        /* dk, dv rows of one sequence are contiguous; blocks and the heads of a
         * GQA group add into them. */
        memset(g->dk, 0, (size_t)g->n * sh->kv_stride * sizeof(float));
        memset(g->dv, 0, (size_t)g->n * sh->kv_stride * sizeof(float));
        int block = g->n < ATTN_BLOCK ? g->n : ATTN_BLOCK;
        float *p = scratch, *dp = scratch + (size_t)block * g->n;
        for (int h = 0; h < sh->n_heads; h++)
            for (int i0 = 0; i0 < g->n; i0 += ATTN_BLOCK) {
                int nb = g->n - i0 < ATTN_BLOCK ? g->n - i0 : ATTN_BLOCK;
                block_backward(sh, g, h, i0, nb, p, dp);
            }
    }
}

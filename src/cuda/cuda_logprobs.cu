/* The end of the model, fused as in cpu_logprobs.c: final RMSNorm of the
 * labelled rows only, LM head GEMM, log-softmax and the gather of the
 * label's log-prob, a chunk of rows at a time so that at most [chunk, V]
 * fp32 logits (+ bf16 probabilities when training) exist.
 *     logp = (logit[target] - max) - log sum exp(logit - max)
 * With keep, the direction d logp / d hn = W[target] - p^T W is formed while
 * the chunk's probabilities are alive (one more GEMM), so the backward is
 * dlogp * that vector through the final norm and never touches the head. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

#define THREADS 256
#define HEAD_BUDGET ((size_t)192 << 20) /* bytes of logits + probabilities per chunk */

int cu_head_chunk(const CuState *st)
{
    size_t per_row = (size_t)st->c.vocab_size * (sizeof(float) + sizeof(bf16));
    size_t chunk = HEAD_BUDGET / per_row;
    return chunk < 1 ? 1 : chunk > 4096 ? 4096 : (int)chunk;
}

__global__ void log_softmax_gather_kernel(int v, const float *__restrict__ logits,
                                          const int32_t *__restrict__ tgt,
                                          float *__restrict__ logp, bf16 *__restrict__ probs)
{
    __shared__ float sh[32];
    int i = blockIdx.x;
    const float *lg = logits + (size_t)i * v;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < v; j += blockDim.x) mx = fmaxf(mx, lg[j]);
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < v; j += blockDim.x) sum += expf(lg[j] - mx);
    sum = block_sum(sum, sh);
    float log_sum = logf(sum);
    if (threadIdx.x == 0) logp[i] = (lg[tgt[i]] - mx) - log_sum;
    if (probs) {
        float lse = mx + log_sum;
        bf16 *pr = probs + (size_t)i * v;
        for (int j = threadIdx.x; j < v; j += blockDim.x) pr[j] = __float2bfloat16(expf(lg[j] - lse));
    }
}

/* dhn[i] += W[tgt[i]] */
__global__ void add_target_rows_kernel(int d, const int32_t *__restrict__ tgt,
                                       const bf16 *__restrict__ w, float *__restrict__ dhn)
{
    int i = blockIdx.x;
    const bf16 *wr = w + (size_t)tgt[i] * d;
    float *g = dhn + (size_t)i * d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) g[j] += __bfloat162float(wr[j]);
}

__global__ void seq_sum_kernel(const float *__restrict__ logp, const int32_t *__restrict__ start,
                               float *__restrict__ out)
{
    __shared__ double sh[32];
    int s = blockIdx.x;
    double acc = 0.0;
    for (int k = start[s] + threadIdx.x; k < start[s + 1]; k += blockDim.x) acc += logp[k];
    acc = block_sum_d(acc, sh);
    if (threadIdx.x == 0) out[s] = (float)acc;
}

__global__ void expand_kernel(int n, const int32_t *__restrict__ seq,
                              const float *__restrict__ per_seq, float *__restrict__ out)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = per_seq[seq[i]];
}

int cu_logprobs_forward(CuState *st, const CuForward *f, int keep, float *seq_logp, Error *err)
{
    const LlamaConfig *c = &st->c;
    const CuLabels *lab = &f->lab;
    int d = c->hidden_size, v = c->vocab_size, chunk = cu_head_chunk(st);
    int nc_max = lab->n < chunk ? lab->n : chunk;
    CuArena *a = &st->scratch;
    bf16 *hn = cu_alloc<bf16>(a, (size_t)(nc_max > 0 ? nc_max : 1) * d);
    float *logits = cu_alloc<float>(a, (size_t)(nc_max > 0 ? nc_max : 1) * v);
    bf16 *probs = keep ? cu_alloc<bf16>(a, (size_t)(nc_max > 0 ? nc_max : 1) * v) : NULL;
    TRY(cu_arena_check(a, "the LM head", err));
    for (int c0 = 0; c0 < lab->n; c0 += chunk) {
        int nc = lab->n - c0 < chunk ? lab->n - c0 : chunk;
        TRY(cu_rmsnorm_forward(st, nc, d, f->x_final, lab->row + c0, st->norm, c->rms_norm_eps, hn,
                               lab->rstd + c0, err));
        TRY(cu_gemm(st, 0, 1, nc, v, d, 1.0f, hn, d, st->lm_head, d, 0.0f, logits, 1, v, err));
        log_softmax_gather_kernel<<<nc, THREADS, 0, st->stream>>>(v, logits, lab->tgt + c0,
                                                                 lab->logp + c0, probs);
        CU_LAUNCHED();
        if (keep) {
            float *dhn = lab->dhn + (size_t)c0 * d;
            TRY(cu_gemm(st, 0, 0, nc, d, v, -1.0f, probs, v, st->lm_head, d, 0.0f, dhn, 1, d,
                        err));
            add_target_rows_kernel<<<nc, THREADS, 0, st->stream>>>(d, lab->tgt + c0, st->lm_head,
                                                                  dhn);
            CU_LAUNCHED();
        }
    }
    seq_sum_kernel<<<lab->n_sums, THREADS, 0, st->stream>>>(lab->logp, lab->sum_start, seq_logp);
    CU_LAUNCHED();
    return 0;
}

int cu_logprobs_backward(CuState *st, const CuForward *f, const float *dlogps, float *dx,
                         Error *err)
{
    const CuLabels *lab = &f->lab;
    if (lab->n == 0) return 0;
    float *dlogp = cu_alloc<float>(&st->scratch, (size_t)lab->n);
    TRY(cu_arena_check(&st->scratch, "the LM head backward", err));
    expand_kernel<<<cu_blocks(lab->n, 256), 256, 0, st->stream>>>(lab->n, lab->seq, dlogps, dlogp);
    CU_LAUNCHED();
    /* Label rows are distinct, so the scatter-add into dx has no conflicts. */
    return cu_rmsnorm_backward(st, lab->n, st->c.hidden_size, f->x_final, lab->row, st->norm,
                               lab->rstd, lab->dhn, dlogp, dx, err);
}

int cu_head_logits(CuState *st, const float *x, int n, const int32_t *rows, float *out,
                   Error *err)
{
    const LlamaConfig *c = &st->c;
    int d = c->hidden_size, v = c->vocab_size, chunk = cu_head_chunk(st);
    int nc_max = n < chunk ? n : chunk;
    bf16 *hn = cu_alloc<bf16>(&st->scratch, (size_t)(nc_max > 0 ? nc_max : 1) * d);
    TRY(cu_arena_check(&st->scratch, "the LM head", err));
    for (int c0 = 0; c0 < n; c0 += chunk) {
        int nc = n - c0 < chunk ? n - c0 : chunk;
        if (cu_gemv_staged_usable(st, nc, d)) { /* decode: the norm inside the GEMV */
            CuNormedX nx = {x, rows + c0, st->norm, c->rms_norm_eps};
            CuGemvPart head = {st->lm_head, out + (size_t)c0 * v, v, NULL};
            TRY(cu_gemv_many_normed(st, nc, d, &nx, &head, 1, 1.0f, 0.0f, 1, err));
            continue;
        }
        TRY(cu_rmsnorm_forward(st, nc, d, x, rows + c0, st->norm, c->rms_norm_eps, hn, NULL, err));
        if (cu_gemv_usable(st, nc, d))
            TRY(cu_gemv(st, nc, v, d, hn, st->lm_head, 0.0f, out + (size_t)c0 * v, 1, err));
        else
            TRY(cu_gemm(st, 0, 1, nc, v, d, 1.0f, hn, d, st->lm_head, d, 0.0f,
                        out + (size_t)c0 * v, 1, v, err));
    }
    return 0;
}

#include "adamw.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

AdamWConfig adamw_default_config(double weight_decay)
{
    return (AdamWConfig){ .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = weight_decay };
}

int adamw_init(AdamW *opt, size_t n, AdamWConfig cfg, Error *err)
{
    memset(opt, 0, sizeof *opt);
    if (!(cfg.beta1 >= 0.0 && cfg.beta1 < 1.0 && cfg.beta2 >= 0.0 && cfg.beta2 < 1.0))
        return error_set(err, "AdamW betas must be in [0, 1), got (%g, %g)", cfg.beta1, cfg.beta2);
    if (!(cfg.eps >= 0.0) || !(cfg.weight_decay >= 0.0))
        return error_set(err, "AdamW eps and weight decay must be >= 0, got %g and %g",
                         cfg.eps, cfg.weight_decay);
    opt->cfg = cfg;
    opt->n = n;
    opt->m = calloc(n ? n : 1, sizeof *opt->m);
    opt->v = calloc(n ? n : 1, sizeof *opt->v);
    if (!opt->m || !opt->v) {
        adamw_free(opt);
        return error_set(err, "out of memory for AdamW state of %zu parameters", n);
    }
    return 0;
}

void adamw_free(AdamW *opt)
{
    free(opt->m);
    free(opt->v);
    memset(opt, 0, sizeof *opt);
}

/* fma(a, b, c) rounded once to fp32.  torch's vectorised CPU kernels (AVX2,
 * AVX-512, NEON) fuse the multiply-add in lerp and addcmul; a double
 * multiply-add of fp32 operands (exact product) then one rounding gives the
 * same fp32 result without needing an FMA unit or a slow libm fmaf. */
static inline float fma_f32(float a, float b, float c)
{
    return (float)((double)a * (double)b + (double)c);
}

/* torch.lerp(a, b, w) on fp32: the branch on w keeps it exact at both ends. */
static inline float lerp_f32(float a, float b, float w)
{
    return fabsf(w) < 0.5f ? fma_f32(w, b - a, a) : fma_f32(-(b - a), 1.0f - w, b);
}

int adamw_step(AdamW *opt, float *params, const float *grads, size_t n, double lr, Error *err)
{
    if (n != opt->n)
        return error_set(err, "AdamW was made for %zu parameters, stepped with %zu", opt->n, n);
    const AdamWConfig *c = &opt->cfg;
    opt->step++;
    /* The scalars as torch forms them: Python doubles, rounded to fp32 when
     * they meet an fp32 tensor. */
    double t = (double)opt->step;
    float decay = (float)(1.0 - lr * c->weight_decay);
    float w1 = (float)(1.0 - c->beta1);
    float b2 = (float)c->beta2, w2 = (float)(1.0 - c->beta2);
    float neg_step = (float)(-(lr / (1.0 - pow(c->beta1, t))));
    float bc2_sqrt = (float)pow(1.0 - pow(c->beta2, t), 0.5); /* torch: bc2 ** 0.5 */
    float eps = (float)c->eps;
    float *m = opt->m, *v = opt->v;
    /* Element-wise, so threads change no bit of the result. */
#pragma omp parallel for if (n > 65536) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grads[i];
        params[i] *= decay;
        m[i] = lerp_f32(m[i], g, w1);                /* exp_avg.lerp_(g, 1 - beta1) */
        v[i] = fma_f32(w2 * g, g, v[i] * b2);        /* exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2) */
        float denom = sqrtf(v[i]) / bc2_sqrt + eps;  /* (v.sqrt() / bc2_sqrt).add_(eps) */
        params[i] = params[i] + neg_step * m[i] / denom; /* addcdiv_(m, denom, -step_size) */
    }
    return 0;
}

int adamw_set_state(AdamW *opt, int64_t step, const float *m, const float *v, size_t n, Error *err)
{
    if (n != opt->n)
        return error_set(err, "AdamW state has %zu parameters, the optimizer %zu", n, opt->n);
    if (step < 0) return error_set(err, "AdamW state has a negative step (%lld)", (long long)step);
    memcpy(opt->m, m, n * sizeof *m);
    memcpy(opt->v, v, n * sizeof *v);
    opt->step = step;
    return 0;
}

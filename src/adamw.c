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

AdamWScalars adamw_scalars(const AdamWConfig *c, int64_t t, double lr)
{
    AdamWScalars s;
    s.decay = (float)(1.0 - lr * c->weight_decay);
    s.w1 = (float)(1.0 - c->beta1);
    s.b2 = (float)c->beta2;
    s.w2 = (float)(1.0 - c->beta2);
    s.neg_step = (float)(-(lr / (1.0 - pow(c->beta1, (double)t))));
    s.bc2_sqrt = (float)pow(1.0 - pow(c->beta2, (double)t), 0.5); /* torch: bc2 ** 0.5 */
    s.eps = (float)c->eps;
    return s;
}

void adamw_apply(const AdamWScalars *s, float *params, const float *grads, float *m, float *v,
                 size_t n)
{
    /* Element-wise, so threads change no bit of the result. */
#pragma omp parallel for if (n > 65536) schedule(static)
    for (size_t i = 0; i < n; i++) adamw_update_one(s, grads[i], &params[i], &m[i], &v[i]);
}

int adamw_step(AdamW *opt, float *params, const float *grads, size_t n, double lr, Error *err)
{
    if (n != opt->n)
        return error_set(err, "AdamW was made for %zu parameters, stepped with %zu", opt->n, n);
    opt->step++;
    AdamWScalars sc = adamw_scalars(&opt->cfg, opt->step, lr);
    adamw_apply(&sc, params, grads, opt->m, opt->v, n);
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

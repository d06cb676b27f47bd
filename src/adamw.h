/* AdamW over one flat fp32 vector (all LoRA parameters of an adapter), step
 * for step the arithmetic of torch.optim.AdamW (single-tensor CPU path):
 *   p *= 1 - lr*wd                      (decoupled weight decay, before Adam)
 *   m  = lerp(m, g, 1 - beta1);  v = beta2*v + (1 - beta2)*g*g
 *   p += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
 * in fp32 with the scalars formed in double, as torch forms them from Python
 * floats, and the multiply-adds of lerp/addcmul fused as torch's vectorised
 * CPU kernels fuse them.  What remains is torch's own sqrt kernel (not always
 * correctly rounded) and its order of summing the clip norm: a few fp32 ulps.  Hugging Face's Trainer decays every LoRA tensor (none is a bias or
 * a norm weight), so one weight decay applies to the whole vector.
 *
 * The state (step, m, v) is plain data in the struct so checkpoints can write
 * it and adamw_set_state can put it back. */
#ifndef MODPO_ADAMW_H
#define MODPO_ADAMW_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "optimizer_math.h"

typedef struct {
    double beta1, beta2, eps, weight_decay;
} AdamWConfig;

typedef struct {
    AdamWConfig cfg;
    size_t n;      /* parameters */
    int64_t step;  /* optimizer steps taken (torch's state["step"]) */
    float *m;      /* [n] first moment (exp_avg) */
    float *v;      /* [n] second moment (exp_avg_sq) */
} AdamW;

/* torch's defaults (betas 0.9, 0.999, eps 1e-8) with the given weight decay. */
AdamWConfig adamw_default_config(double weight_decay);

/* Zeroed moments, step 0. */
int adamw_init(AdamW *opt, size_t n, AdamWConfig cfg, Error *err);
void adamw_free(AdamW *opt);

/* One update of params[n] with grads[n] at learning rate lr; n must be the
 * size the optimizer was made for.  A step with lr 0 (the first warmup step
 * of Hugging Face's schedules) still advances m, v and step, as torch does. */
int adamw_step(AdamW *opt, float *params, const float *grads, size_t n, double lr, Error *err);

/* The scalars of step t (1-based) at learning rate lr. */
AdamWScalars adamw_scalars(const AdamWConfig *c, int64_t t, double lr);

/* params, m, v [n] updated in place by one step with scalars s (what
 * adamw_step does after counting the step; backends keeping their own
 * moments call it too). */
void adamw_apply(const AdamWScalars *s, float *params, const float *grads, float *m, float *v,
                 size_t n);

/* Restores a saved state (a checkpoint's step, m and v of length n). */
int adamw_set_state(AdamW *opt, int64_t step, const float *m, const float *v, size_t n, Error *err);

#endif

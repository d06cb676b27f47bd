/* The per-element arithmetic of one AdamW step and torch's gradient-clipping
 * coefficient, shared by the host optimizer (adamw.c, grad_clip.c) and the
 * CUDA kernels (cuda/cuda_adamw.cu) so that both give the same bits.  Plain
 * C that nvcc also compiles for the device; no library calls but sqrtf. */
#ifndef MODPO_OPTIMIZER_MATH_H
#define MODPO_OPTIMIZER_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define OPT_MATH_FN static inline __host__ __device__
#else
#define OPT_MATH_FN static inline
#endif

/* a * b rounded on its own: nvcc would otherwise fuse a product with a later
 * add into one FMA (one rounding), which the host (C11, no contraction) and
 * torch's CPU kernels do not do at these places. */
#ifdef __CUDA_ARCH__
#define OPT_MUL(a, b) __fmul_rn((a), (b))
#else
#define OPT_MUL(a, b) ((a) * (b))
#endif

/* One step's scalars, formed by adamw_scalars (adamw.h) as torch forms them:
 * Python doubles rounded to fp32 where they meet an fp32 tensor. */
typedef struct {
    float decay;    /* 1 - lr * weight_decay */
    float w1;       /* 1 - beta1 */
    float b2, w2;   /* beta2, 1 - beta2 */
    float neg_step; /* -lr / (1 - beta1^t) */
    float bc2_sqrt; /* (1 - beta2^t) ** 0.5 */
    float eps;
} AdamWScalars;

/* fma(a, b, c) rounded once to fp32.  torch's vectorised CPU kernels fuse
 * the multiply-add in lerp and addcmul; a double multiply-add of fp32
 * operands (the product is exact) then one rounding gives the same fp32
 * result on any machine, FMA unit or not. */
OPT_MATH_FN float opt_fma_f32(float a, float b, float c)
{
    return (float)((double)a * (double)b + (double)c);
}

/* torch.lerp(a, b, w) on fp32: the branch on w keeps it exact at both ends. */
OPT_MATH_FN float opt_lerp_f32(float a, float b, float w)
{
    return fabsf(w) < 0.5f ? opt_fma_f32(w, b - a, a) : opt_fma_f32(-(b - a), 1.0f - w, b);
}

/* torch.optim.AdamW on one element (decoupled decay first). */
OPT_MATH_FN void adamw_update_one(const AdamWScalars *s, float g, float *p, float *m, float *v)
{
    float pi = OPT_MUL(*p, s->decay);
    float mi = opt_lerp_f32(*m, g, s->w1);           /* exp_avg.lerp_(g, 1 - beta1) */
    float vi = opt_fma_f32(OPT_MUL(s->w2, g), g, OPT_MUL(*v, s->b2)); /* exp_avg_sq.mul_(b2).addcmul_(g, g, 1 - b2) */
    float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;   /* (v.sqrt() / bc2_sqrt).add_(eps) */
    float update = OPT_MUL(s->neg_step, mi);
    *p = pi + update / denom;                          /* addcdiv_(m, denom, -step_size) */
    *m = mi;
    *v = vi;
}

/* The factor torch.nn.utils.clip_grad_norm_ multiplies every gradient by:
 * min(max_norm / (norm + 1e-6), 1) in fp32 -- max_norm / (norm + 1e-6) is
 * tensor.__rtruediv__, i.e. reciprocal(norm + 1e-6) * max_norm.  1 when
 * max_norm <= 0 (clipping off) or the norm is not finite. */
OPT_MATH_FN float clip_coef_of(double total_norm, double max_norm)
{
    if (!(max_norm > 0.0) || !(total_norm - total_norm == 0.0)) return 1.0f;
    float denom = (float)total_norm + 1e-6f;
    float coef = OPT_MUL(1.0f / denom, (float)max_norm);
    return coef < 1.0f ? coef : 1.0f;
}

#endif

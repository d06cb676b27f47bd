/* The per-pair arithmetic of the DPO and MODPO losses, shared by the host
 * (losses.c) and the CUDA kernel that forms dL/dlogp next to the logps
 * (cuda/cuda_pref_loss.cu), so a training step needs no round trip to the
 * host between its forward and its backward.  Plain C in double that nvcc
 * also compiles for the device; exp and log1p are the only library calls. */
#ifndef MODPO_PREF_LOSS_MATH_H
#define MODPO_PREF_LOSS_MATH_H

#include <math.h>

#ifdef __CUDACC__
#define PREF_MATH_FN static inline __host__ __device__
#else
#define PREF_MATH_FN static inline
#endif

/* Products rounded on their own: nvcc would fuse them with the following
 * subtraction into an FMA, which the host (C11, no contraction) does not. */
#ifdef __CUDA_ARCH__
#define PREF_MUL(a, b) __dmul_rn((a), (b))
#else
#define PREF_MUL(a, b) ((a) * (b))
#endif

/* R(y) = scale * (beta*(pi - ref) - shift_weight * shift(y)):
 * DPO is scale 1, shift_weight 0; MODPO is scale 1/w, shift_weight 1 - w
 * with shift the margin reward. */
typedef struct {
    double beta, scale, shift_weight;
} PrefRewardForm;

PREF_MATH_FN double pref_reward(const PrefRewardForm *f, double pi, double ref, double shift)
{
    double r = PREF_MUL(f->beta, pi - ref) - PREF_MUL(f->shift_weight, shift);
    return PREF_MUL(f->scale, r);
}

/* Loss of one pair from its logit z and dloss/dz (hinge != 0: relu(1 - z),
 * else -log sigmoid(z)).  -log sigmoid(z) is softplus(-z), split on the sign
 * of z so exp never overflows and the small tail keeps full precision. */
PREF_MATH_FN double pref_pair_loss(double z, int hinge, double *dz)
{
    if (hinge) {
        /* torch's relu backward passes the gradient only where relu(x) > 0. */
        *dz = z < 1.0 ? -1.0 : 0.0;
        return z < 1.0 ? 1.0 - z : 0.0;
    }
    if (z >= 0.0) {
        double e = exp(-z);
        *dz = -e / (1.0 + e);
        return log1p(e);
    }
    double e = exp(z);
    *dz = -1.0 / (1.0 + e);
    return -z + log1p(e);
}

/* dz/dpi_chosen (= -dz/dpi_rejected) times the micro-batch's gradient scale
 * over its pair count: what dloss/dz is multiplied by to give dL/dlogp. */
PREF_MATH_FN double pref_dz_dpi(const PrefRewardForm *f, double grad_scale, double n_pairs)
{
    return f->scale * f->beta * grad_scale / n_pairs;
}

/* One pair's dL/dlogp for its chosen and rejected sequence, rounded to fp32
 * once; returns the pair's loss. */
PREF_MATH_FN double pref_pair_grads(const PrefRewardForm *f, int hinge, double dz_dpi, double pi_c,
                                    double pi_r, double ref_c, double ref_r, double shift_c,
                                    double shift_r, float *d_chosen, float *d_rejected)
{
    double rc = pref_reward(f, pi_c, ref_c, shift_c);
    double rr = pref_reward(f, pi_r, ref_r, shift_r);
    double dz;
    double loss = pref_pair_loss(rc - rr, hinge, &dz);
    *d_chosen = (float)PREF_MUL(dz, dz_dpi);
    *d_rejected = (float)PREF_MUL(-dz, dz_dpi);
    return loss;
}

#endif

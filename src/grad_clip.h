/* Clipping by global gradient norm with torch.nn.utils.clip_grad_norm_'s
 * semantics: the L2 norm of all gradients as one vector; when
 * max_norm / (norm + 1e-6) < 1 every gradient is multiplied by that factor
 * (formed in fp32, as torch forms it from its fp32 norm tensor).  The norm is
 * accumulated in double.  Split into parts so a caller whose gradient vector
 * is sharded across ranks can all-reduce the sum of squares in between. */
#ifndef MODPO_GRAD_CLIP_H
#define MODPO_GRAD_CLIP_H

#include <stddef.h>

/* sum_i g[i]^2, in double. */
double grad_sum_squares(const float *g, size_t n);

/* The factor torch multiplies the gradients by: min(max_norm / (norm + 1e-6), 1);
 * 1 when max_norm <= 0 (clipping off, like Hugging Face's max_grad_norm 0)
 * or the norm is not finite. */
float grad_clip_coef(double total_norm, double max_norm);

/* Clips g[n] in place and returns the norm before clipping.  A NaN or
 * infinite norm leaves g untouched (torch would spread the NaN into every
 * gradient); the caller sees it in the returned value and decides. */
double grad_clip_norm(float *g, size_t n, double max_norm);

#endif

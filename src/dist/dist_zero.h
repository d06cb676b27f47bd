/* ZeRO stage 1: the optimizer state sharded across the data-parallel ranks
 * of a group.  Rank r of n owns the contiguous slice [begin, end) of the
 * flat LoRA parameter vector (dist_shard) and keeps AdamW's m and v for that
 * slice only, so optimizer memory per rank is 2 * n_params / n floats.  One
 * step:
 *   1. reduce-scatter the summed gradients: rank r gets its slice of the sum;
 *   2. the global gradient norm from an all-reduce of each slice's sum of
 *      squares; the slice clipped by torch's coefficient;
 *   3. AdamW on the slice (elementwise, so the slice update is exactly the
 *      full update restricted to it);
 *   4. all-gather the updated slices: every rank holds the same parameters,
 *      bit for bit.
 * With one rank it is the plain clip + AdamW over the whole vector, the
 * arithmetic of a single-process run unchanged. */
#ifndef MODPO_DIST_ZERO_H
#define MODPO_DIST_ZERO_H

#include <stddef.h>

#include "adamw.h"
#include "dist/dist_allreduce.h"
#include "error.h"

typedef struct {
    GradComm *gc;          /* borrowed */
    size_t n;              /* all parameters */
    size_t begin, end;     /* this rank's slice */
    AdamW opt;             /* state of the slice: opt.n == end - begin */
    float *slice_grads;    /* [end - begin] */
} ZeroOptimizer;

int zero_init(ZeroOptimizer *z, GradComm *gc, size_t n, AdamWConfig cfg, Error *err);
void zero_free(ZeroOptimizer *z);

/* One optimizer step on params[n] from this rank's summed gradient
 * contributions grads[n] (overwritten).  *grad_norm: the global norm before
 * clipping; a non-finite norm is an error and nothing is updated. */
int zero_step(ZeroOptimizer *z, float *params, float *grads, double max_grad_norm, double lr,
              double *grad_norm, Error *err);

#endif

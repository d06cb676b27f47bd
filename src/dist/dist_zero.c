#include "dist/dist_zero.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grad_clip.h"

int zero_init(ZeroOptimizer *z, GradComm *gc, size_t n, AdamWConfig cfg, Error *err)
{
    memset(z, 0, sizeof *z);
    z->gc = gc;
    z->n = n;
    if (n < (size_t)dist_size(gc->comm))
        return error_set(err, "%zu parameters cannot be sharded over %d ranks", n, dist_size(gc->comm));
    dist_shard(gc->comm, n, &z->begin, &z->end);
    size_t k = z->end - z->begin;
    if (adamw_init(&z->opt, k, cfg, err)) return -1;
    if (dist_is_multi(gc->comm)) {
        z->slice_grads = malloc(k * sizeof *z->slice_grads);
        if (!z->slice_grads) return error_set(err, "out of memory");
    }
    return 0;
}

void zero_free(ZeroOptimizer *z)
{
    adamw_free(&z->opt);
    free(z->slice_grads);
    memset(z, 0, sizeof *z);
}

int zero_step(ZeroOptimizer *z, float *params, float *grads, double max_grad_norm, double lr,
              double *grad_norm, Error *err)
{
    if (!dist_is_multi(z->gc->comm)) {
        *grad_norm = grad_clip_norm(grads, z->n, max_grad_norm);
        if (!isfinite(*grad_norm)) return error_set(err, "the gradient norm is not finite (%g)", *grad_norm);
        return adamw_step(&z->opt, params, grads, z->n, lr, err);
    }
    size_t k = z->end - z->begin;
    if (grad_comm_reduce_scatter_sum(z->gc, grads, z->slice_grads, err)) return -1;
    double sq = grad_sum_squares(z->slice_grads, k);
    if (dist_sum_ordered_f64(z->gc->comm, &sq, 1, err)) return -1; /* one norm, the same bits everywhere */
    *grad_norm = sqrt(sq);
    if (!isfinite(*grad_norm)) return error_set(err, "the gradient norm is not finite (%g)", *grad_norm);
    float coef = grad_clip_coef(*grad_norm, max_grad_norm);
    if (coef < 1.0f)
        for (size_t i = 0; i < k; i++) z->slice_grads[i] *= coef;
    if (adamw_step(&z->opt, params + z->begin, z->slice_grads, k, lr, err)) return -1;
    return grad_comm_allgather(z->gc, params, err);
}

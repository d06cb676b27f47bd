#include "grad_clip.h"

#include <math.h>

#include "optimizer_math.h"

/* Fixed blocks summed in order: the same bits for any number of threads. */
#define SUM_BLOCK 65536

double grad_sum_squares(const float *g, size_t n)
{
    size_t n_blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    double total = 0.0;
#pragma omp parallel for ordered if (n_blocks > 1) schedule(static, 1)
    for (size_t b = 0; b < n_blocks; b++) {
        size_t end = (b + 1) * SUM_BLOCK < n ? (b + 1) * SUM_BLOCK : n;
        double s = 0.0;
        for (size_t i = b * SUM_BLOCK; i < end; i++) s += (double)g[i] * (double)g[i];
#pragma omp ordered
        total += s;
    }
    return total;
}

float grad_clip_coef(double total_norm, double max_norm)
{
    return clip_coef_of(total_norm, max_norm);
}

double grad_clip_norm(float *g, size_t n, double max_norm)
{
    double norm = sqrt(grad_sum_squares(g, n));
    float coef = grad_clip_coef(norm, max_norm);
    if (coef < 1.0f) {
#pragma omp parallel for if (n > 65536) schedule(static)
        for (size_t i = 0; i < n; i++) g[i] *= coef;
    }
    return norm;
}

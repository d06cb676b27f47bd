#include "grad_clip.h"

#include <math.h>

double grad_sum_squares(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * (double)g[i];
    return s;
}

float grad_clip_coef(double total_norm, double max_norm)
{
    if (!(max_norm > 0.0) || !isfinite(total_norm)) return 1.0f;
    /* torch: max_norm / (norm + 1e-6) is tensor.__rtruediv__, i.e.
     * reciprocal(norm + 1e-6) * max_norm, all in fp32; then clamp(max=1). */
    float denom = (float)total_norm + 1e-6f;
    float coef = (1.0f / denom) * (float)max_norm;
    return coef < 1.0f ? coef : 1.0f;
}

double grad_clip_norm(float *g, size_t n, double max_norm)
{
    double norm = sqrt(grad_sum_squares(g, n));
    float coef = grad_clip_coef(norm, max_norm);
    if (coef < 1.0f)
        for (size_t i = 0; i < n; i++) g[i] *= coef;
    return norm;
}

/* RMSNorm as Hugging Face's LlamaRMSNorm computes it in fp32:
 *     r = rsqrt(mean(x^2) + eps),  y = w * (x * r)
 * Backward, with g = w * dy:
 *     dx = r * g - x * r^3 * mean(g * x). */
#include "cpu_kernels.h"

#include <math.h>

void cpu_rmsnorm_forward(int n, int d, const float *x, const float *w, float eps, float *y,
                         float *rstd)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d;
        float *yi = y + (size_t)i * d;
        double ss = 0.0; /* double: the mean of d squares without fp32 drift */
        for (int j = 0; j < d; j++) ss += (double)xi[j] * xi[j];
        float r = 1.0f / sqrtf((float)(ss / d) + eps);
        for (int j = 0; j < d; j++) yi[j] = w[j] * (xi[j] * r);
        if (rstd) rstd[i] = r;
    }
}

void cpu_rmsnorm_backward(int n, int d, const float *x, const float *w, const float *rstd,
                          const float *dy, float *dx)
{
    for (int i = 0; i < n; i++) {
        const float *xi = x + (size_t)i * d, *dyi = dy + (size_t)i * d;
        float *dxi = dx + (size_t)i * d;
        double dot = 0.0;
        for (int j = 0; j < d; j++) dot += (double)w[j] * dyi[j] * xi[j];
        float r = rstd[i];
        float c = (float)(dot / d) * r * r * r;
        for (int j = 0; j < d; j++) dxi[j] += r * (w[j] * dyi[j]) - c * xi[j];
    }
}

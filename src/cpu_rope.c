/* Rotary position embeddings in Hugging Face Llama's convention: a head's
 * first and second halves are the two coordinates of each rotated pair,
 *     out = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1],
 * with angle(pos, i) = pos * theta^(-2i / head_dim).  The rotation is
 * orthogonal, so its backward is the rotation by -angle. */
#include "cpu_kernels.h"

#include <math.h>

int cpu_rope_build(CpuRope *r, int n_pos, int head_dim, float theta, CpuArena *a)
{
    r->n_pos = n_pos;
    r->half = head_dim / 2;
    r->cos = cpu_arena_floats(a, (size_t)n_pos * r->half);
    r->sin = cpu_arena_floats(a, (size_t)n_pos * r->half);
    if (!r->cos || !r->sin) return -1;
    for (int i = 0; i < r->half; i++) {
        /* fp32 at every step, as transformers: 1 / theta^(float(2i) / dim),
         * then float(pos) * inv_freq, so angles at large positions agree. */
        float expo = (float)(2 * i) / (float)head_dim;
        float inv_freq = 1.0f / powf(theta, expo);
        for (int p = 0; p < n_pos; p++) {
            float ang = (float)p * inv_freq;
            r->cos[(size_t)p * r->half + i] = cosf(ang);
            r->sin[(size_t)p * r->half + i] = sinf(ang);
        }
    }
    return 0;
}

void cpu_rope_apply(const CpuRope *r, int n, const int32_t *pos, int n_heads, float *x,
                    int direction)
{
    int half = r->half, hd = 2 * half;
    for (int i = 0; i < n; i++) {
        const float *c = r->cos + (size_t)pos[i] * half;
        const float *s = r->sin + (size_t)pos[i] * half;
        for (int h = 0; h < n_heads; h++) {
            float *x1 = x + ((size_t)i * n_heads + h) * hd, *x2 = x1 + half;
            for (int j = 0; j < half; j++) {
                float sj = direction > 0 ? s[j] : -s[j];
                float a = x1[j], b = x2[j];
                x1[j] = a * c[j] - b * sj;
                x2[j] = b * c[j] + a * sj;
            }
        }
    }
}

/* The SwiGLU non-linearity of Llama's MLP, act = silu(gate) * up with
 * silu(g) = g * sigmoid(g); the three projections around it are Linears.
 * silu'(g) = sigmoid(g) * (1 + g * (1 - sigmoid(g))). */
#include "cpu_kernels.h"

#include <math.h>

void cpu_swiglu_forward(size_t n, const float *gate, const float *up, float *act)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        act[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void cpu_swiglu_backward(size_t n, const float *gate, const float *up, const float *dact,
                         float *dgate, float *dup)
{
    for (size_t i = 0; i < n; i++) {
        float g = gate[i];
        float sig = 1.0f / (1.0f + expf(-g));
        dup[i] = dact[i] * g * sig;
        dgate[i] = dact[i] * up[i] * sig * (1.0f + g * (1.0f - sig));
    }
}

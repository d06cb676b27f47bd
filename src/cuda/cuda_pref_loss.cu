/* DPO's and MODPO's dL/dlogp formed on the device from the logps the kept
 * forward left there (BackendOps pref_backward), with the arithmetic of
 * pref_loss_math.h, so the host never waits between a step's forward and
 * its backward.  The host computes the same loss and the metrics from the
 * same logps once the step has been synchronised. */
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

extern "C" {
#include "pref_loss_math.h"
}

/* consts: [ref_c | ref_r | shift_c | shift_r], n each; logps and dlogps:
 * [chosen n | rejected n]. */
__global__ void pref_dlogps_kernel(PrefRewardForm form, int hinge, double dz_dpi, int n,
                                   const float *__restrict__ logps,
                                   const float *__restrict__ consts, float *__restrict__ dlogps)
{
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    pref_pair_grads(&form, hinge, dz_dpi, logps[i], logps[n + i], consts[i], consts[n + i],
                    consts[2 * n + i], consts[3 * n + i], &dlogps[i], &dlogps[n + i]);
}

/* The pair constants in one block of host memory for one upload. */
static float *pack_constants(const PrefLossSpec *loss)
{
    size_t n = loss->n_pairs;
    float *h = (float *)calloc(4 * n, sizeof *h);
    if (!h) return NULL;
    memcpy(h, loss->ref_chosen, n * sizeof *h);
    memcpy(h + n, loss->ref_rejected, n * sizeof *h);
    if (loss->margin_chosen) memcpy(h + 2 * n, loss->margin_chosen, n * sizeof *h);
    if (loss->margin_rejected) memcpy(h + 3 * n, loss->margin_rejected, n * sizeof *h);
    return h;
}

int cu_pref_dlogps(CuState *st, const PrefLossSpec *loss, const float *logps, float *dlogps,
                   CuArena *arena, Error *err)
{
    size_t n = loss->n_pairs;
    float *consts = cu_alloc<float>(arena, 4 * n);
    TRY(cu_arena_check(arena, "the pair constants", err));
    float *h = pack_constants(loss);
    if (!h) return error_set(err, "out of memory for %zu pair constants", n);
    /* pageable memory: staged before the call returns, so h can go now */
    cudaError_t e = cudaMemcpyAsync(consts, h, 4 * n * sizeof *h, cudaMemcpyHostToDevice, st->stream);
    free(h);
    if (e != cudaSuccess) return error_set(err, "uploading the pair constants: %s", cudaGetErrorString(e));
    double dz_dpi = pref_dz_dpi(&loss->form, loss->grad_scale, (double)n);
    int hinge = loss->type == PREF_LOSS_HINGE;
    pref_dlogps_kernel<<<cu_blocks(n, 128), 128, 0, st->stream>>>(loss->form, hinge, dz_dpi, (int)n,
                                                                   logps, consts, dlogps);
    CU_LAUNCHED();
    return 0;
}

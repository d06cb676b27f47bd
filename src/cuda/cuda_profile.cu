/* Where a pass spends its GPU time, for benchmarks (MODPO_CUDA_PROFILE=1):
 * the model code marks the start of each phase with an event on the
 * stream; the time from one mark to the next is charged to the earlier
 * mark's phase.  Marks are resolved at the next flush, after the stream
 * has drained, so profiling adds no synchronisation of its own. */
#include "cuda/cuda_kernels.cuh"

#include <stdlib.h>

static const char *const phase_names[CU_PHASES] = {
    "norms", "linear_fwd", "rope", "attention_fwd", "mlp_act", "head_fwd",
    "head_bwd", "linear_bwd", "attention_bwd", "attention_aux", "other",
};

const char *cu_phase_name(int phase) { return phase_names[phase]; }

int cu_prof_mark(CuState *st, CuPhase phase, Error *err)
{
    CuProfile *p = st->prof;
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 256;
        CuMark *m = (CuMark *)realloc(p->marks, (size_t)cap * sizeof *m);
        if (!m) return error_set(err, "out of memory for profile marks");
        for (int i = p->cap; i < cap; i++) {
            CU_TRY(cudaEventCreate(&m[i].ev));
        }
        p->marks = m;
        p->cap = cap;
    }
    p->marks[p->n].phase = phase;
    CU_TRY(cudaEventRecord(p->marks[p->n].ev, st->stream));
    p->n++;
    return 0;
}

/* Called after the stream drained: charges the intervals, keeps the last
 * mark as the start of the next interval (nothing ran after it yet that
 * a later mark would not cover). */
int cu_prof_resolve(CuState *st, Error *err)
{
    CuProfile *p = st->prof;
    for (int i = 0; i + 1 < p->n; i++) {
        float ms = 0.0f;
        CU_TRY(cudaEventElapsedTime(&ms, p->marks[i].ev, p->marks[i + 1].ev));
        p->ms[p->marks[i].phase] += ms;
    }
    if (p->n > 1) {
        CuMark last = p->marks[p->n - 1];
        p->marks[p->n - 1] = p->marks[0];
        p->marks[0] = last;
        p->n = 1;
    }
    return 0;
}

void cu_prof_free(CuProfile *p)
{
    if (!p) return;
    for (int i = 0; i < p->cap; i++) cudaEventDestroy(p->marks[i].ev);
    free(p->marks);
    free(p);
}

/* The three training objectives as trainer Objectives: SFT on sequences,
 * DPO and MODPO on pairs.  The frozen parts (reference logps, margin rewards)
 * are computed once before training (precompute.h) and passed in as arrays
 * indexed like the pairs, so a step costs one policy forward + backward. */
#ifndef MODPO_OBJECTIVES_H
#define MODPO_OBJECTIVES_H

#include "backend.h"
#include "losses.h"
#include "sequences.h"
#include "trainer.h"

typedef struct {
    Backend *backend;
    BackendAdapter *policy;
    const SftSequences *train, *eval;
    int eval_size;      /* evaluation uses the first eval_size examples */
    int batch_size;     /* micro-batch for evaluation */
} SftObjective;

Objective sft_objective(SftObjective *o);

/* Per-pair constants of one split: reference logps and (MODPO) margin rewards. */
typedef struct {
    const float *ref_chosen, *ref_rejected;
    const float *margin_chosen, *margin_rejected; /* NULL for DPO */
} PairConstants;

typedef struct {
    Backend *backend;
    BackendAdapter *policy;
    const PairSequences *train, *eval;
    PairConstants train_c, eval_c;
    int eval_size;
    int batch_size;
    int is_modpo;
    double beta;
    double w;           /* MODPO only */
    PrefLossType loss;
    /* Testing: compute the frozen parts (reference logps, and through
     * `margin` the margin rewards) again for every batch instead of reading
     * train_c / eval_c, to show the precomputed cache changes nothing. */
    int recompute_frozen;
    BackendAdapter *margin;  /* MODPO with recompute_frozen */
    double margin_beta;
} PrefObjective;

Objective pref_objective(PrefObjective *o);

#endif

/* Everything a training run needs to continue exactly where it stopped: the
 * adapter, AdamW's moments, the step, and the best adapter so far.  Saved as
 * an HDF5 checkpoint in the stage's checkpoints/ directory
 * (docs/checkpoint-format.md lists the arrays). */
#ifndef MODPO_TRAIN_STATE_H
#define MODPO_TRAIN_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "adamw.h"
#include "error.h"

typedef struct {
    const char *stage;
    long step;
    size_t n_params;
    float *params;         /* [n_params] borrowed: the live adapter */
    AdamW *opt;            /* borrowed */
    double best_eval_loss; /* +inf before the first evaluation */
    long best_step;        /* -1 before the first evaluation */
    float *best_params;    /* [n_params] borrowed */
} TrainState;

/* Writes checkpoints/checkpoint-<step>.h5 under stage_dir and keeps the
 * newest `keep` checkpoints. */
int train_state_save(const char *stage_dir, const TrainState *st, int keep, Error *err);

/* Loads the newest valid checkpoint into st (its buffers must be sized
 * already); *found = false when there is none.  A corrupt newest checkpoint
 * is reported in `warning` and the previous one used. */
int train_state_load(const char *stage_dir, TrainState *st, bool *found, char *warning,
                     size_t warning_size, Error *err);

/* True when stage_dir/checkpoints holds at least one checkpoint file. */
bool train_state_exists(const char *stage_dir);

#endif

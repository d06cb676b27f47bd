/* Everything a training run needs to continue exactly where it stopped: the
 * adapter, AdamW's moments, the step, and the best adapter so far.  Saved as
 * an HDF5 checkpoint in the stage's checkpoints/ directory
 * (docs/checkpoint-format.md lists the arrays).
 *
 * Data-parallel runs shard AdamW's moments (ZeRO-1): each rank holds the
 * moments of its slice [opt_begin, opt_begin + opt->n) of the parameters.
 * Saving is then collective over `comm`: every rank writes its shard file,
 * rank 0 writes the index (params, best params, step, the shards'
 * checksums) last, so a checkpoint is complete exactly when its index
 * exists.  Loading reads the whole moment vectors from whatever sharding
 * the checkpoint was saved with and keeps this rank's slice, so a
 * checkpoint saved on 4 ranks resumes on 2 or 1 (and the other way). */
#ifndef MODPO_TRAIN_STATE_H
#define MODPO_TRAIN_STATE_H

#include <stdbool.h>
#include <stddef.h>

#include "adamw.h"
#include "dist/dist_comm.h"
#include "error.h"

typedef struct {
    const char *stage;
    long step;
    size_t n_params;
    float *params;         /* [n_params] borrowed: the live adapter */
    AdamW *opt;            /* borrowed: the moments of [opt_begin, opt_begin + opt->n) */
    size_t opt_begin;      /* 0 and opt->n == n_params in a single process */
    const DistComm *comm;  /* the data-parallel group (NULL: one process) */
    double best_eval_loss; /* +inf before the first evaluation */
    long best_step;        /* -1 before the first evaluation */
    float *best_params;    /* [n_params] borrowed */
} TrainState;

/* Writes checkpoints/checkpoint-<step>.h5 (and, with more than one rank,
 * its shards) under stage_dir and keeps the newest `keep` checkpoints.
 * Collective over st->comm. */
int train_state_save(const char *stage_dir, const TrainState *st, int keep, Error *err);

/* Loads the newest valid checkpoint into st (its buffers must be sized
 * already); *found = false when there is none.  A corrupt newest checkpoint
 * (index or any shard) is reported in `warning` and the previous one used.
 * Every rank reads the files itself (a shared file system); rank 0 first
 * removes the leftovers of interrupted saves.  Collective over st->comm. */
int train_state_load(const char *stage_dir, TrainState *st, bool *found, char *warning,
                     size_t warning_size, Error *err);

/* True when stage_dir/checkpoints holds at least one checkpoint file. */
bool train_state_exists(const char *stage_dir);

#endif

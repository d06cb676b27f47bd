/* The training loop shared by SFT, DPO and MODPO: micro-batches in a
 * seed-determined order, gradient accumulation, global-norm clipping, a
 * learning-rate schedule, AdamW, periodic evaluation keeping the best adapter,
 * atomic checkpoints and resumption that continues bit for bit.
 *
 * What is being optimised is an Objective: it turns a list of training
 * example indices into a loss and LoRA gradients (through the backend), and
 * evaluates the current adapter on its validation set. */
#ifndef MODPO_TRAINER_H
#define MODPO_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "config.h"
#include "error.h"
#include "losses.h"
#include "lora.h"

#define TRAIN_METRICS_MAX (PREF_METRICS_MAX + 4)

typedef struct {
    double loss;
    Metric metrics[TRAIN_METRICS_MAX];
    size_t n_metrics;
    long tokens;           /* tokens the micro-batch processed (for tokens/s) */
} ObjectiveStats;

typedef struct {
    void *ctx;
    size_t n_train;        /* training examples (SFT) or pairs */
    /* Adds the gradients of grad_scale * loss(idx[0..n)) to the policy's
     * gradient accumulator and reports the micro-batch's loss and metrics. */
    int (*micro)(void *ctx, const size_t *idx, int n, double grad_scale, ObjectiveStats *out,
                 Error *err);
    /* Loss and metrics of the current adapter on the validation set. */
    int (*evaluate)(void *ctx, ObjectiveStats *out, Error *err);
} Objective;

typedef struct {
    const char *stage;         /* "sft", "dpo", "modpo-w0.4": names logs and checkpoints */
    const char *dir;           /* the stage directory (checkpoints/ and metrics.jsonl in it) */
    const TrainConfig *tc;
    uint64_t seed;
    Backend *backend;
    LoraAdapter *adapter;      /* host copy of the trainable adapter */
    BackendAdapter *handle;    /* the same adapter bound to the backend */
    Objective obj;
    bool quiet;                /* no progress line */
    long stop_after_step;      /* testing: return after this step as if killed (0: off) */
} TrainerSetup;

typedef struct {
    long steps_done;
    long resumed_from;         /* step of the checkpoint resumed from (0: fresh) */
    double best_eval_loss;
    long best_step;
    double last_train_loss;
    double seconds;
} TrainResult;

/* Runs (or resumes) training.  On return the host adapter holds the best
 * parameters by evaluation loss (the last ones when no evaluation ran).
 * Warnings (a corrupt checkpoint skipped) are printed to stderr. */
int trainer_run(const TrainerSetup *s, TrainResult *res, Error *err);

#endif

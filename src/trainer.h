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
#include "dist/dist_comm.h"
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

/* What a queued micro-batch leaves for its settle: host memory the
 * objective lays out as it needs (the backend writes the logps into it
 * asynchronously) and reads back once the step is synchronised.  Owned by
 * the trainer, one per micro-batch of a step, reused across steps. */
typedef struct {
    float *f;
    size_t f_cap;
    int *i;
    size_t i_cap;
    int n;                 /* examples of the micro-batch */
    long tokens;
} MicroRecord;

/* rec->f / rec->i with room for at least n values (grown as needed);
 * NULL + err when out of memory. */
float *micro_record_floats(MicroRecord *rec, size_t n, Error *err);
int *micro_record_ints(MicroRecord *rec, size_t n, Error *err);
void micro_record_free(MicroRecord *rec);

typedef struct {
    void *ctx;
    size_t n_train;        /* training examples (SFT) or pairs */
    /* Queues on the backend the work that adds the gradients of
     * grad_scale * loss(idx[0..n)) to the policy's gradient accumulator --
     * no host synchronisation -- and leaves in rec what settle needs. */
    int (*micro)(void *ctx, const size_t *idx, int n, double grad_scale, MicroRecord *rec,
                 Error *err);
    /* After the backend has been synchronised: the loss and metrics of the
     * micro-batch that left rec (an error if its logps are not finite). */
    int (*settle)(void *ctx, const MicroRecord *rec, ObjectiveStats *out, Error *err);
    /* Loss and metrics of the current adapter on the validation set,
     * collective over comm (NULL: one process): each rank evaluates whole
     * batches of a contiguous share and the parts are summed in rank order,
     * so every rank gets the same numbers. */
    int (*evaluate)(void *ctx, const DistComm *comm, ObjectiveStats *out, Error *err);
    /* What a micro-batch's loss is a mean over: the pairs (DPO, MODPO) or
     * the completion tokens (SFT) of idx[0..n).  Data parallelism splits a
     * micro-batch over ranks and scales each part's gradient by its share
     * of this, so the sum over ranks is the single-process gradient. */
    double (*weight)(void *ctx, const size_t *idx, int n);
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
    /* The data-parallel group training this adapter (NULL: one process).
     * Every rank of it calls trainer_run with the same setup; each takes
     * its contiguous shard of every optimizer step's global positions
     * (batch_size x grad_accum, independent of the group size), the
     * gradients are summed by a reduce-scatter, the optimizer state is
     * sharded (ZeRO-1, dist/dist_zero.h) and rank 0 alone writes the logs
     * and the checkpoint index. */
    const DistComm *comm;
    /* Where the optimizer step runs: "auto", "host" or "backend" (run.optimizer). */
    const char *optimizer;
} TrainerSetup;

typedef struct {
    long steps_done;
    long resumed_from;         /* step of the checkpoint resumed from (0: fresh) */
    double best_eval_loss;
    long best_step;
    double last_train_loss;
    double seconds;
    double comm_seconds;       /* in gradient / parameter collectives */
    double step_seconds;       /* in the training steps themselves (no eval, no saves) */
    double cpu_seconds;        /* CPU time of those steps, summed over the group's ranks */
} TrainResult;

/* Runs (or resumes) training.  On return the host adapter holds the best
 * parameters by evaluation loss (the last ones when no evaluation ran).
 * Warnings (a corrupt checkpoint skipped) are printed to stderr. */
int trainer_run(const TrainerSetup *s, TrainResult *res, Error *err);

#endif

/* The pipeline's stages (DESIGN.md §1), each resumable through stage.h:
 * returns 0 when the stage is finished (now or before), -1 with err set.
 * `force` continues a stage whose critical settings changed. */
#ifndef MODPO_STAGES_H
#define MODPO_STAGES_H

#include <stdbool.h>

#include "config.h"
#include "dist/dist_comm.h"
#include "error.h"

typedef struct {
    bool force;
    bool quiet;             /* no progress lines (stage status lines stay) */
    long stop_after_step;   /* testing: stop a training stage after this step, unfinished */
    bool recompute_frozen;  /* testing: MODPO/DPO recompute the frozen passes every batch */
    bool precompute_only;   /* `modpo modpo`: only fill the precompute cache (Slurm arrays) */
    /* The ranks running the stage together (NULL: one process).  Every
     * stage is collective over them: rank 0 alone prints the stage's status
     * lines and writes its shared files (config.cfg, DONE, metrics, adapter,
     * checkpoint index), the work is sharded, and all return together. */
    const DistComm *comm;
} StageOptions;

/* Creates model.path from model.preset when it does not exist. */
int stage_ensure_base_model(const Config *cfg, Error *err);

int stage_sft(const Config *cfg, const StageOptions *o, Error *err);
int stage_dpo(const Config *cfg, const StageOptions *o, Error *err);
/* accuracy below margin.min_accuracy (when >= 0) is an error. */
int stage_check_margin(const Config *cfg, const StageOptions *o, Error *err);
int stage_modpo(const Config *cfg, double w, const StageOptions *o, Error *err);
/* model: "sft" or a MODPO stage name ("modpo-w0.4"). */
int stage_generate(const Config *cfg, const char *model, const StageOptions *o, Error *err);
int stage_score(const Config *cfg, const StageOptions *o, Error *err);

/* The frozen logps MODPO needs (reference and margin adapter, on the train
 * and validation pairs of data.modpo_dimension), computed over o->comm's
 * ranks into the run's precompute cache, so that every w group afterwards
 * only reads it.  Needs the finished DPO stage. */
int stage_modpo_precompute(const Config *cfg, const StageOptions *o, Error *err);

/* The MODPO runs of the whole w grid over o->comm: the ranks are split into
 * groups (dist.ranks_per_w), each trains its share of the grid. */
int stage_modpo_grid(const Config *cfg, const StageOptions *o, Error *err);

#endif

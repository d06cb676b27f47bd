/* The pipeline's stages (DESIGN.md §1), each resumable through stage.h:
 * returns 0 when the stage is finished (now or before), -1 with err set.
 * `force` continues a stage whose critical settings changed. */
#ifndef MODPO_STAGES_H
#define MODPO_STAGES_H

#include <stdbool.h>

#include "config.h"
#include "error.h"

typedef struct {
    bool force;
    bool quiet;             /* no progress lines (stage status lines stay) */
    long stop_after_step;   /* testing: stop a training stage after this step, unfinished */
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

#endif

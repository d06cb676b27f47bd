/* Where each stage of a run lives (docs/pipeline.md draws the tree):
 *   ROOT = run.output_root/run.run_tag
 *   ROOT/sft/            LoRA SFT: checkpoints/, metrics.jsonl, adapter/ (best)
 *   ROOT/sft-model/      the SFT adapter merged into the base (a HF model dir)
 *   ROOT/dpo/            the margin adapter (DPO): adapter/
 *   ROOT/check-margin/   result.json
 *   ROOT/precompute/     cached frozen logps (HDF5)
 *   ROOT/modpo-w<W>/     one MODPO run per w: adapter/
 *   ROOT/gen/<model>/    generations, NNNNN-of-NNNNN.jsonl
 *   ROOT/score/          scores.json, summary.md, summary.tsv, trade-off.svg */
#ifndef MODPO_RUN_LAYOUT_H
#define MODPO_RUN_LAYOUT_H

#include <stdio.h>

#include "config.h"

#define RUN_PATH_MAX (CONFIG_STR_MAX + 512)

static inline void run_root(const Config *c, char *out)
{
    snprintf(out, RUN_PATH_MAX, "%s/%s", c->output_root, c->run_tag);
}

/* ROOT/<name> */
static inline void run_path(const Config *c, const char *name, char *out)
{
    snprintf(out, RUN_PATH_MAX, "%s/%s/%s", c->output_root, c->run_tag, name);
}

/* "modpo-w0.4": the stage name of one w value. */
static inline void modpo_stage_name(double w, char *out, size_t size)
{
    snprintf(out, size, "modpo-w%g", w);
}

#endif

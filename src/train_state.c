#include "train_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_dir.h"

static void checkpoints_dir(char *out, size_t size, const char *stage_dir)
{
    snprintf(out, size, "%s/checkpoints", stage_dir);
}

int train_state_save(const char *stage_dir, const TrainState *st, int keep, Error *err)
{
    char dir[4096];
    checkpoints_dir(dir, sizeof dir, stage_dir);
    CheckpointWriter *w = ckpt_writer_new();
    if (!w) return error_set(err, "out of memory");
    ckpt_attr_str(w, "stage", st->stage);
    ckpt_attr_i64(w, "step", st->step);
    ckpt_attr_i64(w, "optimizer_step", st->opt->step);
    ckpt_attr_f64(w, "best_eval_loss", st->best_eval_loss);
    ckpt_attr_i64(w, "best_step", st->best_step);
    ckpt_put_f32(w, "lora/params", st->params, st->n_params);
    ckpt_put_f32(w, "optimizer/exp_avg", st->opt->m, st->n_params);
    ckpt_put_f32(w, "optimizer/exp_avg_sq", st->opt->v, st->n_params);
    ckpt_put_f32(w, "best/params", st->best_params, st->n_params);
    int rc = ckdir_save(dir, st->step, w, keep, false, err);
    ckpt_writer_free(w);
    if (rc) return error_prefix(err, "saving the %s checkpoint at step %ld: ", st->stage, st->step);
    return 0;
}

static int read_state(const Checkpoint *c, TrainState *st, Error *err)
{
    const char *stage = NULL;
    int64_t step, opt_step, best_step;
    double best;
    if (ckpt_get_attr_str(c, "stage", &stage, err) || ckpt_get_attr_i64(c, "step", &step, err) ||
        ckpt_get_attr_i64(c, "optimizer_step", &opt_step, err) ||
        ckpt_get_attr_f64(c, "best_eval_loss", &best, err) ||
        ckpt_get_attr_i64(c, "best_step", &best_step, err))
        return -1;
    if (strcmp(stage, st->stage) != 0)
        return error_set(err, "%s belongs to stage '%s', not '%s'", ckpt_path(c), stage, st->stage);
    float *m = malloc(st->n_params * sizeof *m), *v = malloc(st->n_params * sizeof *v);
    int rc = (m && v) ? 0 : error_set(err, "out of memory");
    if (rc == 0)
        rc = ckpt_get_f32(c, "lora/params", st->params, st->n_params, err) ||
             ckpt_get_f32(c, "optimizer/exp_avg", m, st->n_params, err) ||
             ckpt_get_f32(c, "optimizer/exp_avg_sq", v, st->n_params, err) ||
             ckpt_get_f32(c, "best/params", st->best_params, st->n_params, err) ||
             adamw_set_state(st->opt, opt_step, m, v, st->n_params, err);
    free(m);
    free(v);
    if (rc) return -1;
    st->step = step;
    st->best_eval_loss = best;
    st->best_step = best_step;
    return 0;
}

int train_state_load(const char *stage_dir, TrainState *st, bool *found, char *warning,
                     size_t warning_size, Error *err)
{
    char dir[4096];
    checkpoints_dir(dir, sizeof dir, stage_dir);
    *found = false;
    if (ckdir_remove_leftovers(dir, NULL, err)) return -1;
    int64_t step = -1;
    Checkpoint *c = NULL;
    if (ckdir_find_latest_valid(dir, &step, &c, warning, warning_size, err)) return -1;
    if (step < 0) return 0;
    int rc = read_state(c, st, err);
    ckpt_close(c);
    if (rc) return -1;
    *found = true;
    return 0;
}

bool train_state_exists(const char *stage_dir)
{
    char dir[4096];
    checkpoints_dir(dir, sizeof dir, stage_dir);
    int64_t *steps = NULL;
    size_t n = 0;
    Error err;
    if (ckdir_list(dir, &steps, &n, &err)) return false;
    free(steps);
    return n > 0;
}

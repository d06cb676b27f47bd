#include "train_state.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint.h"
#include "checkpoint_dir.h"
#include "fs_util.h"
#include "shuffle.h"

static void checkpoints_dir(char *out, size_t size, const char *stage_dir)
{
    snprintf(out, size, "%s/checkpoints", stage_dir);
}

/* This rank's shard file: its slice of the moments.  *checksum: the file's
 * checksum as ckpt_open verifies it (read back, so a bad write is caught). */
static int save_shard(const char *dir, const TrainState *st, uint32_t *checksum, Error *err)
{
    char path[4096];
    int rank = dist_rank(st->comm), n = dist_size(st->comm);
    if (ckdir_shard_path(path, sizeof path, dir, st->step, rank, n, err)) return -1;
    CheckpointWriter *w = ckpt_writer_new();
    if (!w) return error_set(err, "out of memory");
    ckpt_attr_str(w, "stage", st->stage);
    ckpt_attr_i64(w, "step", st->step);
    ckpt_attr_i64(w, "shard", rank);
    ckpt_attr_i64(w, "n_shards", n);
    ckpt_attr_i64(w, "n_params", (int64_t)st->n_params);
    ckpt_attr_i64(w, "begin", (int64_t)st->opt_begin);
    ckpt_attr_i64(w, "end", (int64_t)(st->opt_begin + st->opt->n));
    ckpt_put_f32(w, "optimizer/exp_avg", st->opt->m, st->opt->n);
    ckpt_put_f32(w, "optimizer/exp_avg_sq", st->opt->v, st->opt->n);
    int rc = ckpt_write(w, path, err);
    ckpt_writer_free(w);
    if (rc) return -1;
    Checkpoint *c = ckpt_open(path, err);
    if (!c) return error_prefix(err, "reading back the shard just written: ");
    *checksum = ckpt_checksum(c);
    ckpt_close(c);
    return 0;
}

int train_state_save(const char *stage_dir, const TrainState *st, int keep, Error *err)
{
    char dir[4096];
    checkpoints_dir(dir, sizeof dir, stage_dir);
    bool sharded = dist_is_multi(st->comm);
    int n_shards = dist_size(st->comm);
    int64_t *sums = calloc((size_t)n_shards, sizeof *sums);
    if (!sums) return error_set(err, "out of memory");
    int rc = 0;
    if (sharded) {
        uint32_t mine = 0;
        rc = (dist_is_root(st->comm) && fs_mkdir_p(dir, err)) || dist_barrier(st->comm, err) ||
             save_shard(dir, st, &mine, err);
        if (rc == 0) {
            sums[dist_rank(st->comm)] = (int64_t)mine;
            rc = dist_allreduce_max_i64(st->comm, sums, (size_t)n_shards, err);
        }
    }
    if (rc == 0 && dist_is_root(st->comm)) {
        CheckpointWriter *w = ckpt_writer_new();
        if (!w) { free(sums); return error_set(err, "out of memory"); }
        ckpt_attr_str(w, "stage", st->stage);
        ckpt_attr_i64(w, "step", st->step);
        ckpt_attr_i64(w, "optimizer_step", st->opt->step);
        ckpt_attr_f64(w, "best_eval_loss", st->best_eval_loss);
        ckpt_attr_i64(w, "best_step", st->best_step);
        ckpt_put_f32(w, "lora/params", st->params, st->n_params);
        if (sharded) {
            ckpt_attr_i64(w, "optimizer_shards", n_shards);
            ckpt_put_i64(w, "optimizer/shard_checksums", sums, (size_t)n_shards);
        } else {
            ckpt_put_f32(w, "optimizer/exp_avg", st->opt->m, st->n_params);
            ckpt_put_f32(w, "optimizer/exp_avg_sq", st->opt->v, st->n_params);
        }
        ckpt_put_f32(w, "best/params", st->best_params, st->n_params);
        rc = ckdir_save(dir, st->step, w, keep, false, err);
        ckpt_writer_free(w);
    }
    free(sums);
    /* Nobody goes on (or is killed by a test) before the index exists. */
    if (rc == 0) rc = dist_barrier(st->comm, err);
    if (rc) return error_prefix(err, "saving the %s checkpoint at step %ld: ", st->stage, st->step);
    return 0;
}

/* The full moment vectors m, v [n_params] of a sharded checkpoint. */
static int read_shards(const char *dir, const Checkpoint *index, const TrainState *st, int64_t step,
                       float *m, float *v, Error *err)
{
    int64_t n_shards;
    if (ckpt_get_attr_i64(index, "optimizer_shards", &n_shards, err)) return -1;
    if (n_shards < 1 || n_shards > 99999) return error_set(err, "optimizer_shards = %lld", (long long)n_shards);
    int64_t *sums = malloc((size_t)n_shards * sizeof *sums);
    if (!sums) return error_set(err, "out of memory");
    int rc = ckpt_get_i64(index, "optimizer/shard_checksums", sums, (size_t)n_shards, err);
    for (int k = 0; rc == 0 && k < (int)n_shards; k++) {
        char path[4096];
        size_t b, e;
        if (ckdir_shard_path(path, sizeof path, dir, step, k, (int)n_shards, err) ||
            shard_range(st->n_params, (int)n_shards, k, &b, &e, err)) { rc = -1; break; }
        Checkpoint *c = ckpt_open(path, err);
        if (!c) { rc = -1; break; }
        int64_t cb = -1, ce = -1, np = -1;
        if ((int64_t)ckpt_checksum(c) != sums[k])
            rc = error_set(err, "%s does not belong to this index (checksum %08x, the index says %08llx)",
                           path, ckpt_checksum(c), (unsigned long long)sums[k]);
        else if (ckpt_get_attr_i64(c, "begin", &cb, err) || ckpt_get_attr_i64(c, "end", &ce, err) ||
                 ckpt_get_attr_i64(c, "n_params", &np, err))
            rc = -1;
        else if ((size_t)np != st->n_params || (size_t)cb != b || (size_t)ce != e)
            rc = error_set(err, "%s holds [%lld, %lld) of %lld parameters, expected [%zu, %zu) of %zu", path,
                           (long long)cb, (long long)ce, (long long)np, b, e, st->n_params);
        else
            rc = ckpt_get_f32(c, "optimizer/exp_avg", m + b, e - b, err) ||
                 ckpt_get_f32(c, "optimizer/exp_avg_sq", v + b, e - b, err);
        ckpt_close(c);
    }
    free(sums);
    return rc ? -1 : 0;
}

static int read_state(const char *dir, const Checkpoint *c, int64_t ck_step, TrainState *st, Error *err)
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
    size_t n = st->n_params ? st->n_params : 1;
    float *m = malloc(n * sizeof *m), *v = malloc(n * sizeof *v);
    int rc = (m && v) ? 0 : error_set(err, "out of memory");
    if (rc == 0 && ckpt_has_attr(c, "optimizer_shards"))
        rc = read_shards(dir, c, st, ck_step, m, v, err);
    else if (rc == 0)
        rc = ckpt_get_f32(c, "optimizer/exp_avg", m, st->n_params, err) ||
             ckpt_get_f32(c, "optimizer/exp_avg_sq", v, st->n_params, err);
    if (rc == 0)
        rc = ckpt_get_f32(c, "lora/params", st->params, st->n_params, err) ||
             ckpt_get_f32(c, "best/params", st->best_params, st->n_params, err) ||
             adamw_set_state(st->opt, opt_step, m + st->opt_begin, v + st->opt_begin, st->opt->n, err);
    free(m);
    free(v);
    if (rc) return -1;
    st->step = step;
    st->best_eval_loss = best;
    st->best_step = best_step;
    return 0;
}

/* Appends a + b + c to buf, truncating. */
static void note(char *buf, size_t cap, const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    size_t len = strnlen(buf, cap ? cap - 1 : 0);
    for (int i = 0; i < 3 && cap > len + 1; i++) {
        size_t k = strlen(parts[i]);
        if (k > cap - len - 1) k = cap - len - 1;
        memcpy(buf + len, parts[i], k);
        len += k;
        buf[len] = '\0';
    }
}

int train_state_load(const char *stage_dir, TrainState *st, bool *found, char *warning,
                     size_t warning_size, Error *err)
{
    char dir[4096];
    checkpoints_dir(dir, sizeof dir, stage_dir);
    *found = false;
    if (warning && warning_size) warning[0] = '\0';
    if (dist_is_root(st->comm) && ckdir_remove_leftovers(dir, NULL, err)) return -1;
    if (dist_barrier(st->comm, err)) return -1;
    int64_t *steps = NULL;
    size_t n = 0;
    if (ckdir_list(dir, &steps, &n, err)) return -1;
    char notes[ERROR_MSG_MAX] = "";
    int rc = 0;
    for (size_t i = 0; i < n && !*found; i++) {
        char path[4096], name[64];
        if (ckdir_path(path, sizeof path, dir, steps[i], err) ||
            ckdir_file_name(name, sizeof name, steps[i], err)) { rc = -1; break; }
        Error e;
        Checkpoint *c = ckpt_open(path, &e);
        if (c && read_state(dir, c, steps[i], st, &e) == 0) {
            *found = true;
            if (notes[0] && warning) note(warning, warning_size, notes, "using ", name);
        } else {
            /* the reason without a leading "PATH: " (the name says which) */
            const char *reason = e.msg;
            size_t plen = strlen(path);
            if (strncmp(reason, path, plen) == 0 && strncmp(reason + plen, ": ", 2) == 0) reason += plen + 2;
            char why[ERROR_MSG_MAX + 8];
            snprintf(why, sizeof why, " is corrupt (%.1800s); ", reason);
            note(notes, sizeof notes, name, why, "");
        }
        if (c) ckpt_close(c);
    }
    free(steps);
    if (rc) return -1;
    if (n > 0 && !*found)
        return error_set(err, "%s: none of its %zu checkpoints is valid: %s", dir, n, notes);
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

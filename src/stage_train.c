/* SFT, the margin adapter (DPO) and MODPO: load, train through the trainer,
 * write the adapter in PEFT's format. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"
#include "lora_peft.h"
#include "merge.h"
#include "metrics_log.h"
#include "model_io.h"
#include "model_session.h"
#include "objectives.h"
#include "precompute.h"
#include "run_data.h"
#include "run_layout.h"
#include "stage.h"
#include "stages.h"
#include "dist/dist_groups.h"
#include "trainer.h"
#include "unique_sequences.h"

static const char *const sft_critical[] = {"model.path", "data", "lora", "sft", "run.seed", NULL};
static const char *const dpo_critical[] = {"model.path", "data", "lora", "sft", "dpo", "run.seed", NULL};

/* Opens the stage dir (rank 0 of o->comm; the others learn the outcome);
 * *skip when it is already finished. */
static int open_stage(const char *dir, const Config *cfg, const char *const *critical,
                      const StageOptions *o, const char *name, int *skip, Error *err)
{
    StageStatus st;
    if (stage_open_collective(o->comm, dir, cfg, critical, o->force, &st, err)) return -1;
    *skip = st == STAGE_DONE;
    char ranks[48] = "";
    if (dist_is_multi(o->comm) && st != STAGE_DONE)
        snprintf(ranks, sizeof ranks, " on %d ranks", dist_size(o->comm));
    if (dist_is_root(o->comm))
        fprintf(stderr, "modpo %s: %s%s\n", name,
                st == STAGE_DONE ? "finished before; skipped"
                : st == STAGE_RESUME ? "resuming" : "starting", ranks);
    return 0;
}

/* Rank 0 finishes the stage (adapter, DONE); everyone waits for it, so a
 * stage that reads these next finds them. */
static int finish_collective(const StageOptions *o, int rc, Error *err)
{
    if (rc) return -1;
    return dist_barrier(o->comm, err);
}

static int save_adapter(const char *stage_dir, const LoraAdapter *a, const char *base, Error *err)
{
    char dir[RUN_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/adapter", stage_dir);
    return lora_peft_save(dir, a, base, err);
}

static void result_json(const TrainResult *r, char *out, size_t size)
{
    snprintf(out, size,
             "{\"steps\": %ld, \"resumed_from\": %ld, \"best_step\": %ld, \"best_eval_loss\": %.9g, "
             "\"last_train_loss\": %.9g, \"seconds\": %.3f, \"step_seconds\": %.6f, \"comm_seconds\": %.6f, \"cpu_seconds\": %.6f}",
             r->steps_done, r->resumed_from, r->best_step, isfinite(r->best_eval_loss) ? r->best_eval_loss : -1.0,
             r->last_train_loss, r->seconds, r->step_seconds, r->comm_seconds, r->cpu_seconds);
}

/* ---- SFT ----------------------------------------------------------------- */

/* Writes the merged model next to its final name, then renames it in place,
 * so ROOT/sft-model is either absent or complete. */
static int write_sft_model(const Config *cfg, ModelSession *ms, const LoraAdapter *a,
                           const Tokenizer *tok, Error *err)
{
    char dir[RUN_PATH_MAX], tmp[RUN_PATH_MAX + 8];
    run_path(cfg, "sft-model", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", dir);
    if (fs_remove_tree(tmp, err) || lora_merge_into(&ms->model, a, err) ||
        llama_model_save(tmp, &ms->model, ST_F32, 0, err) || tokenizer_save_hf(tok, tmp, err) ||
        fs_remove_tree(dir, err))
        return -1;
    if (rename(tmp, dir) != 0) return error_set_errno(err, "rename %s -> %s", tmp, dir);
    return 0;
}

static int train_sft(const Config *cfg, const char *dir, const StageOptions *o, RunData *data,
                     ModelSession *ms, LoraAdapter *a, TrainResult *res, Error *err)
{
    RunSft sft;
    if (run_sft_build(data, cfg, &sft, err)) return -1;
    BackendAdapter *h = NULL;
    int rc = model_bind_adapter(ms, a, &h, err);
    if (rc == 0) {
        SftObjective so = {ms->backend, h, &sft.train, &sft.val, cfg->sft.eval_size, cfg->sft.batch_size};
        TrainerSetup ts = {"sft", dir, &cfg->sft, (uint64_t)cfg->seed, ms->backend, a, h,
                           sft_objective(&so), o->quiet || !dist_is_root(o->comm), o->stop_after_step,
                           o->comm, cfg->optimizer};
        rc = trainer_run(&ts, res, err);
        ms->backend->ops->adapter_unbind(ms->backend, h);
    }
    run_sft_free(&sft);
    return rc;
}

int stage_sft(const Config *cfg, const StageOptions *o, Error *err)
{
    char dir[RUN_PATH_MAX];
    run_path(cfg, "sft", dir);
    int skip;
    if ((dist_is_root(o->comm) && stage_ensure_base_model(cfg, err)) || dist_barrier(o->comm, err) ||
        open_stage(dir, cfg, sft_critical, o, "sft", &skip, err))
        return -1;
    if (skip) return 0;
    RunData data;
    ModelSession ms;
    LoraAdapter a;
    memset(&a, 0, sizeof a);
    if (run_data_load(&data, cfg, cfg->model_path, err)) return -1;
    int rc = model_session_open(&ms, cfg, cfg->model_path, err);
    if (rc) { run_data_free(&data); return -1; }
    TrainResult res;
    rc = model_new_adapter(cfg, &ms.model.config, (uint64_t)cfg->seed, &a, err) ||
         train_sft(cfg, dir, o, &data, &ms, &a, &res, err);
    int finished = rc == 0 && res.steps_done >= cfg->sft.steps;
    if (finished && dist_is_root(o->comm))
        rc = save_adapter(dir, &a, cfg->model_path, err) ||
             write_sft_model(cfg, &ms, &a, data.tok, err);
    if (finished && rc == 0 && dist_is_root(o->comm)) {
        char summary[512];
        result_json(&res, summary, sizeof summary);
        rc = stage_mark_done(dir, summary, err);
    }
    if (finished) rc = finish_collective(o, rc, err);
    lora_adapter_free(&a);
    model_session_close(&ms);
    run_data_free(&data);
    return rc ? -1 : 0;
}

/* ---- DPO and MODPO -------------------------------------------------------- */

typedef struct {
    float *ref_c, *ref_r, *mar_c, *mar_r;
    int computed;   /* caches computed now (the others were read) */
} SplitConstants;

static void split_free(SplitConstants *s)
{
    free(s->ref_c); free(s->ref_r); free(s->mar_c); free(s->mar_r);
    memset(s, 0, sizeof *s);
}

static int split_alloc(SplitConstants *s, size_t n, Error *err)
{
    size_t k = n ? n : 1;
    s->ref_c = malloc(k * sizeof(float));
    s->ref_r = malloc(k * sizeof(float));
    s->mar_c = malloc(k * sizeof(float));
    s->mar_r = malloc(k * sizeof(float));
    if (!s->ref_c || !s->ref_r || !s->mar_c || !s->mar_r) {
        split_free(s);
        return error_set(err, "out of memory");
    }
    return 0;
}

/* Reference logps (and, with a margin adapter, the margin rewards) of every
 * pair of one split, through the run's precompute cache. */
static int split_constants(const Config *cfg, const DistComm *comm, ModelSession *ms,
                           BackendAdapter *margin, const PairSequences *ps, const char *name,
                           SplitConstants *s, Error *err)
{
    if (split_alloc(s, ps->n, err)) return -1;
    char path[RUN_PATH_MAX + 64], sft_model[RUN_PATH_MAX], key[2 * RUN_PATH_MAX + 16];
    run_path(cfg, "sft-model", sft_model);
    bool cached;
    snprintf(path, sizeof path, "%s/%s/precompute/%s-ref.h5", cfg->output_root, cfg->run_tag, name);
    int batch = 2 * (cfg->modpo.batch_size > cfg->dpo.batch_size ? cfg->modpo.batch_size : cfg->dpo.batch_size);
    if (pair_logps_cached(comm, path, sft_model, ms->backend, NULL, ps, batch, s->ref_c, s->ref_r, &cached, err))
        return -1;
    s->computed += !cached;
    if (!margin) return 0;
    snprintf(path, sizeof path, "%s/%s/precompute/%s-margin.h5", cfg->output_root, cfg->run_tag, name);
    snprintf(key, sizeof key, "%s + %s/%s/dpo/adapter", sft_model, cfg->output_root, cfg->run_tag);
    float *lc = malloc(ps->n * sizeof(float) + 1), *lr = malloc(ps->n * sizeof(float) + 1);
    int rc = (lc && lr) ? 0 : error_set(err, "out of memory");
    if (rc == 0) rc = pair_logps_cached(comm, path, key, ms->backend, margin, ps, batch, lc, lr, &cached, err);
    if (rc == 0) s->computed += !cached;
    if (rc == 0) {
        modpo_margin_rewards(cfg->margin_beta, lc, s->ref_c, ps->n, s->mar_c);
        modpo_margin_rewards(cfg->margin_beta, lr, s->ref_r, ps->n, s->mar_r);
    }
    free(lc);
    free(lr);
    return rc;
}

typedef struct {
    const char *name;         /* "dpo" or "modpo-w0.4" */
    const char *dimension;
    const TrainConfig *tc;
    int is_modpo;
    double beta, w;
    const char *loss;
} PrefStage;

static int train_pref(const Config *cfg, const PrefStage *p, const char *dir, const StageOptions *o,
                      ModelSession *ms, RunPairs *pairs, BackendAdapter *margin, LoraAdapter *a,
                      TrainResult *res, Error *err)
{
    SplitConstants tr, ev;
    memset(&tr, 0, sizeof tr);
    memset(&ev, 0, sizeof ev);
    char train_name[64], val_name[64];
    snprintf(train_name, sizeof train_name, "%s-train", p->dimension);
    snprintf(val_name, sizeof val_name, "%s-validation", p->dimension);
    BackendAdapter *h = NULL;
    int rc = split_constants(cfg, o->comm, ms, margin, &pairs->train, train_name, &tr, err) ||
             split_constants(cfg, o->comm, ms, margin, &pairs->val, val_name, &ev, err) ||
             model_bind_adapter(ms, a, &h, err);
    if (rc == 0) {
        PrefObjective po = {ms->backend, h, &pairs->train, &pairs->val,
                            {tr.ref_c, tr.ref_r, margin ? tr.mar_c : NULL, margin ? tr.mar_r : NULL},
                            {ev.ref_c, ev.ref_r, margin ? ev.mar_c : NULL, margin ? ev.mar_r : NULL},
                            p->tc->eval_size, p->tc->batch_size, p->is_modpo, p->beta, p->w,
                            (PrefLossType)pref_loss_type_from_name(p->loss),
                            o->recompute_frozen, margin, cfg->margin_beta};
        TrainerSetup ts = {p->name, dir, p->tc, (uint64_t)cfg->seed, ms->backend, a, h,
                           pref_objective(&po), o->quiet || !dist_is_root(o->comm), o->stop_after_step,
                           o->comm, cfg->optimizer};
        rc = trainer_run(&ts, res, err);
    }
    if (h) ms->backend->ops->adapter_unbind(ms->backend, h);
    split_free(&tr);
    split_free(&ev);
    return rc ? -1 : 0;
}

/* Loads the margin adapter (MODPO) and binds it. */
static int bind_margin(const Config *cfg, ModelSession *ms, LoraAdapter *m, BackendAdapter **h,
                       Error *err)
{
    char dir[RUN_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/%s/dpo/adapter", cfg->output_root, cfg->run_tag);
    if (lora_peft_load(dir, &ms->model.config, m, err))
        return error_prefix(err, "the margin adapter (run `modpo dpo` first): ");
    return model_bind_adapter(ms, m, h, err);
}

static int run_pref_stage(const Config *cfg, const PrefStage *p, const char *const *critical,
                          const StageOptions *o, Error *err)
{
    char dir[RUN_PATH_MAX], sft_model[RUN_PATH_MAX];
    run_path(cfg, p->name, dir);
    run_path(cfg, "sft-model", sft_model);
    char done_sft[RUN_PATH_MAX];
    run_path(cfg, "sft", done_sft);
    if (!stage_is_done(done_sft))
        return error_set(err, "%s needs the SFT model: run `modpo sft` first (%s is not finished)",
                         p->name, done_sft);
    int skip;
    if (open_stage(dir, cfg, critical, o, p->name, &skip, err)) return -1;
    if (skip) return 0;
    RunData data;
    RunPairs pairs;
    ModelSession ms;
    LoraAdapter a, margin;
    BackendAdapter *mh = NULL;
    memset(&a, 0, sizeof a);
    memset(&margin, 0, sizeof margin);
    if (run_data_load(&data, cfg, sft_model, err)) return -1;
    if (run_pairs_build(&data, cfg, p->dimension, &pairs, err)) { run_data_free(&data); return -1; }
    int rc = model_session_open(&ms, cfg, sft_model, err);
    if (rc) { run_pairs_free(&pairs); run_data_free(&data); return -1; }
    TrainResult res;
    rc = (p->is_modpo && bind_margin(cfg, &ms, &margin, &mh, err)) ||
         model_new_adapter(cfg, &ms.model.config, (uint64_t)cfg->seed, &a, err) ||
         train_pref(cfg, p, dir, o, &ms, &pairs, mh, &a, &res, err);
    int finished = rc == 0 && res.steps_done >= p->tc->steps;
    if (finished && dist_is_root(o->comm)) rc = save_adapter(dir, &a, sft_model, err);
    if (finished && rc == 0 && dist_is_root(o->comm)) {
        char summary[512];
        result_json(&res, summary, sizeof summary);
        rc = stage_mark_done(dir, summary, err);
    }
    if (finished) rc = finish_collective(o, rc, err);
    if (mh) ms.backend->ops->adapter_unbind(ms.backend, mh);
    lora_adapter_free(&margin);
    lora_adapter_free(&a);
    model_session_close(&ms);
    run_pairs_free(&pairs);
    run_data_free(&data);
    return rc ? -1 : 0;
}

int stage_dpo(const Config *cfg, const StageOptions *o, Error *err)
{
    PrefStage p = {"dpo", cfg->margin_dimension, &cfg->dpo, 0, cfg->dpo_beta, 1.0, cfg->dpo_loss};
    return run_pref_stage(cfg, &p, dpo_critical, o, err);
}

int stage_modpo(const Config *cfg, double w, const StageOptions *o, Error *err)
{
    if (!(w > 0 && w < 1)) return error_set(err, "modpo: w = %g must be strictly between 0 and 1", w);
    char name[64], dpo_dir[RUN_PATH_MAX];
    modpo_stage_name(w, name, sizeof name);
    run_path(cfg, "dpo", dpo_dir);
    if (!stage_is_done(dpo_dir))
        return error_set(err, "%s needs the margin adapter: run `modpo dpo` first (%s is not finished)",
                         name, dpo_dir);
    /* A stage's w is part of its name, so the saved config of modpo-w0.4
     * may list another modpo.w grid: the grid itself is not critical. */
    static const char *const critical[] = {"model.path", "data", "lora", "sft", "dpo",
                                           "modpo.steps", "modpo.learning_rate", "modpo.weight_decay",
                                           "modpo.scheduler", "modpo.warmup_ratio", "modpo.warmup_steps",
                                           "modpo.batch_size", "modpo.grad_accum", "modpo.max_grad_norm",
                                           "modpo.beta", "modpo.margin_beta", "modpo.loss", "run.seed",
                                           NULL};
    PrefStage p = {name, cfg->modpo_dimension, &cfg->modpo, 1, cfg->modpo_beta, w, cfg->modpo_loss};
    return run_pref_stage(cfg, &p, critical, o, err);
}

/* ---- the w grid over rank groups ----------------------------------------- */

/* How many distinct sequences the frozen passes compute (or computed) for
 * ps: a response is a side of several pairs of its prompt group. */
static int count_distinct(const PairSequences *ps, size_t *n, Error *err)
{
    UniqueSequences u;
    if (unique_sequences_build(ps, &u, err)) return -1;
    *n = u.n;
    unique_sequences_free(&u);
    return 0;
}

int stage_modpo_precompute(const Config *cfg, const StageOptions *o, Error *err)
{
    char sft_model[RUN_PATH_MAX], dpo_dir[RUN_PATH_MAX];
    run_path(cfg, "sft-model", sft_model);
    run_path(cfg, "dpo", dpo_dir);
    if (!stage_is_done(dpo_dir))
        return error_set(err, "the MODPO precompute needs the margin adapter: run `modpo dpo` first");
    RunData data;
    RunPairs pairs;
    ModelSession ms;
    LoraAdapter margin;
    BackendAdapter *mh = NULL;
    memset(&margin, 0, sizeof margin);
    if (run_data_load(&data, cfg, sft_model, err)) return -1;
    if (run_pairs_build(&data, cfg, cfg->modpo_dimension, &pairs, err)) { run_data_free(&data); return -1; }
    int rc = model_session_open(&ms, cfg, sft_model, err);
    if (rc) { run_pairs_free(&pairs); run_data_free(&data); return -1; }
    double t0 = monotonic_seconds();
    SplitConstants tr, ev;
    memset(&tr, 0, sizeof tr);
    memset(&ev, 0, sizeof ev);
    char train_name[64], val_name[64];
    snprintf(train_name, sizeof train_name, "%s-train", cfg->modpo_dimension);
    snprintf(val_name, sizeof val_name, "%s-validation", cfg->modpo_dimension);
    size_t distinct_train = 0, distinct_val = 0;
    rc = bind_margin(cfg, &ms, &margin, &mh, err) ||
         split_constants(cfg, o->comm, &ms, mh, &pairs.train, train_name, &tr, err) ||
         split_constants(cfg, o->comm, &ms, mh, &pairs.val, val_name, &ev, err) ||
         count_distinct(&pairs.train, &distinct_train, err) ||
         count_distinct(&pairs.val, &distinct_val, err);
    if (rc == 0 && dist_is_root(o->comm))
        fprintf(stderr, "modpo precompute: reference and margin logps of %zu + %zu %s pairs "
                "(%zu + %zu distinct sequences) %s (%.1f s, %d rank%s)\n",
                pairs.train.n, pairs.val.n, cfg->modpo_dimension, distinct_train, distinct_val,
                tr.computed + ev.computed ? "computed" : "read from the cache", monotonic_seconds() - t0,
                dist_size(o->comm), dist_size(o->comm) > 1 ? "s" : "");
    split_free(&tr);
    split_free(&ev);
    if (mh) ms.backend->ops->adapter_unbind(ms.backend, mh);
    lora_adapter_free(&margin);
    model_session_close(&ms);
    run_pairs_free(&pairs);
    run_data_free(&data);
    return rc ? -1 : 0;
}

int stage_modpo_grid(const Config *cfg, const StageOptions *o, Error *err)
{
    /* Skipped entirely when every w is finished: no model to load. */
    bool all_done = true;
    for (int i = 0; i < cfg->n_w; i++) {
        char name[64], dir[RUN_PATH_MAX];
        modpo_stage_name(cfg->w[i], name, sizeof name);
        run_path(cfg, name, dir);
        all_done = all_done && stage_is_done(dir);
    }
    if (!all_done && stage_modpo_precompute(cfg, o, err)) return -1;
    DistGroups g;
    if (dist_groups_split(o->comm, cfg->n_w, cfg->dist_ranks_per_w, &g, err)) return -1;
    if (dist_is_root(o->comm) && dist_is_multi(o->comm) && !all_done)
        fprintf(stderr, "modpo modpo: %d w value%s over %d group%s of the %d ranks\n", cfg->n_w,
                cfg->n_w == 1 ? "" : "s", g.n_groups, g.n_groups == 1 ? "" : "s", dist_size(o->comm));
    StageOptions go = *o;
    go.comm = &g.group;
    int rc = 0;
    for (int i = 0; rc == 0 && i < cfg->n_w; i++)
        if (dist_groups_owns(&g, i)) rc = stage_modpo(cfg, cfg->w[i], &go, err);
    /* The groups meet again before anything reads their adapters.  A group
     * that failed has aborted the job (dist_fail), so this never hangs. */
    if (rc == 0) rc = dist_barrier(o->comm, err);
    dist_groups_free(&g);
    return rc ? -1 : 0;
}

/* check-margin: does the margin adapter prefer what it was trained to
 * prefer?  On up to margin.check_size validation pairs of the margin
 * dimension, the adapter's implicit reward r(y) = beta_dpo * (logp_adapter(y)
 * - logp_sft(y)) should rank chosen above rejected.  (margin_beta's sign only
 * decides how MODPO uses that preference; the check is about the adapter.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"
#include "lora_peft.h"
#include "model_session.h"
#include "precompute.h"
#include "run_data.h"
#include "run_layout.h"
#include "stage.h"
#include "stages.h"

typedef struct {
    size_t n, n_correct, worst;
    double mean_margin, worst_margin;
} MarginCheck;

static void summarise(const float *ac, const float *ar, const float *rc, const float *rr, size_t n,
                      double beta, MarginCheck *m)
{
    memset(m, 0, sizeof *m);
    m->n = n;
    m->worst_margin = INFINITY;
    for (size_t i = 0; i < n; i++) {
        double margin = beta * ((double)ac[i] - rc[i]) - beta * ((double)ar[i] - rr[i]);
        m->n_correct += margin > 0;
        m->mean_margin += margin / (double)n;
        if (margin < m->worst_margin) { m->worst_margin = margin; m->worst = i; }
    }
}

static void truncated(const char *s, char *out, size_t size)
{
    size_t j = 0;
    for (size_t i = 0; s[i] && j + 4 < size; i++) out[j++] = (s[i] == '\n' || s[i] == '\t') ? ' ' : s[i];
    if (s[j]) { out[j++] = '.'; out[j++] = '.'; out[j++] = '.'; }
    out[j] = '\0';
}

static int write_result(const char *dir, const MarginCheck *m, Error *err)
{
    char path[RUN_PATH_MAX + 16], text[512];
    snprintf(path, sizeof path, "%s/result.json", dir);
    int n = snprintf(text, sizeof text,
                     "{\"pairs\": %zu, \"accuracy\": %.6f, \"mean_margin\": %.9g, "
                     "\"worst_pair\": %zu, \"worst_margin\": %.9g}\n",
                     m->n, m->n ? (double)m->n_correct / (double)m->n : 0.0, m->mean_margin, m->worst,
                     m->worst_margin);
    return fs_write_atomic(path, text, (size_t)n, err);
}

static int measure(const Config *cfg, const DistComm *comm, ModelSession *ms, PairSequences *ps,
                   MarginCheck *m, Error *err)
{
    char dir[RUN_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/%s/dpo/adapter", cfg->output_root, cfg->run_tag);
    LoraAdapter a;
    BackendAdapter *h = NULL;
    size_t n = ps->n;
    float *buf = malloc(4 * (n ? n : 1) * sizeof(float));
    if (!buf) return error_set(err, "out of memory");
    int rc = lora_peft_load(dir, &ms->model.config, &a, err);
    if (rc == 0) {
        rc = model_bind_adapter(ms, &a, &h, err) ||
             pair_logps_all(comm, ms->backend, h, ps, 8, buf, buf + n, err) ||
             pair_logps_all(comm, ms->backend, NULL, ps, 8, buf + 2 * n, buf + 3 * n, err);
        if (h) ms->backend->ops->adapter_unbind(ms->backend, h);
        lora_adapter_free(&a);
    }
    if (rc == 0) summarise(buf, buf + n, buf + 2 * n, buf + 3 * n, n, cfg->dpo_beta, m);
    free(buf);
    return rc ? -1 : 0;
}

static void print_report(const Config *cfg, const MarginCheck *m, const RunPairs *p)
{
    double acc = m->n ? (double)m->n_correct / (double)m->n : 0;
    printf("check-margin: %zu validation %s pairs: accuracy %.4f, mean margin %.6g\n", m->n,
           cfg->margin_dimension, acc, m->mean_margin);
    if (m->n == 0) return;
    const Pair *pair = &p->val_set.pairs[p->val.source[m->worst]];
    char prompt[96], chosen[96], rejected[96];
    truncated(pair->prompt, prompt, sizeof prompt);
    truncated(pair->chosen, chosen, sizeof chosen);
    truncated(pair->rejected, rejected, sizeof rejected);
    printf("  worst pair #%zu (margin %.6g):\n    prompt:   %s\n    chosen:   %s\n    rejected: %s\n",
           m->worst, m->worst_margin, prompt, chosen, rejected);
}

int stage_check_margin(const Config *cfg, const StageOptions *o, Error *err)
{
    static const char *const critical[] = {"model.path", "data", "lora", "sft", "dpo", "margin", NULL};
    char dir[RUN_PATH_MAX], sft_model[RUN_PATH_MAX], dpo_dir[RUN_PATH_MAX];
    run_path(cfg, "check-margin", dir);
    run_path(cfg, "sft-model", sft_model);
    run_path(cfg, "dpo", dpo_dir);
    if (!stage_is_done(dpo_dir))
        return error_set(err, "check-margin needs the margin adapter: run `modpo dpo` first");
    StageStatus st;
    if (stage_open_collective(o->comm, dir, cfg, critical, o->force, &st, err)) return -1;
    bool root = dist_is_root(o->comm);
    if (st == STAGE_DONE) {
        if (root) fprintf(stderr, "modpo check-margin: finished before; skipped\n");
        return 0;
    }
    RunData data;
    RunPairs pairs;
    ModelSession ms;
    if (run_data_load(&data, cfg, sft_model, err)) return -1;
    int rc = run_pairs_build(&data, cfg, cfg->margin_dimension, &pairs, err);
    if (rc) { run_data_free(&data); return -1; }
    PairSequences checked = pairs.val; /* a view of the first check_size pairs */
    if (checked.n > (size_t)cfg->check_size) checked.n = (size_t)cfg->check_size;
    MarginCheck m = {0};
    rc = model_session_open(&ms, cfg, sft_model, err);
    if (rc == 0) {
        rc = measure(cfg, o->comm, &ms, &checked, &m, err);
        model_session_close(&ms);
    }
    if (rc == 0 && root) {
        print_report(cfg, &m, &pairs);
        rc = write_result(dir, &m, err);
    }
    double acc = m.n ? (double)m.n_correct / (double)m.n : 0;
    if (rc == 0 && cfg->min_accuracy >= 0 && acc < cfg->min_accuracy)
        rc = error_set(err, "check-margin: accuracy %.4f is below margin.min_accuracy = %.4f",
                       acc, cfg->min_accuracy);
    if (rc == 0 && root) rc = stage_mark_done(dir, NULL, err);
    if (rc == 0) rc = dist_barrier(o->comm, err);
    run_pairs_free(&pairs);
    run_data_free(&data);
    return rc ? -1 : 0;
}

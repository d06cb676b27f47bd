/* score: for every generation dir of the run, the margin adapter's implicit
 * reward r = margin_beta * (logp_adapter(y) - logp_sft(y)) of each response
 * and its length in words and tokens; mean and std per model, the summary
 * table and the trade-off plot.  All dirs must hold the same prompts in the
 * same order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "fs_util.h"
#include "generation_io.h"
#include "lora_peft.h"
#include "model_session.h"
#include "report.h"
#include "run_layout.h"
#include "sequences.h"
#include "stage.h"
#include "stages.h"
#include "tokenizer.h"

typedef struct {
    char name[64];
    double w;
    GenRecordList list;
} GenModel;

/* Sequences of every record: BOS + tokens(prompt + response) + EOS. */
static int record_sequences(const Config *cfg, const Tokenizer *tok, const GenRecordList *l,
                            Sequence *seqs, Error *err)
{
    for (size_t i = 0; i < l->n; i++) {
        char *prompt = NULL;
        int rc = prompt_template_apply(cfg->prompt_template, l->items[i].raw_prompt, &prompt, err) ||
                 sequence_sft_build(tok, prompt, l->items[i].response, &seqs[i], err);
        free(prompt);
        if (rc) return error_prefix(err, "record %zu: ", i);
    }
    return 0;
}

#define SCORE_BATCH 8

static int logps_of(Backend *b, BackendAdapter *a, const Sequence *seqs, size_t n, float *out, Error *err)
{
    const int bs = SCORE_BATCH;
    const Sequence *ptrs[8];
    for (size_t start = 0; start < n; start += bs) {
        int k = (int)(n - start < (size_t)bs ? n - start : (size_t)bs);
        for (int i = 0; i < k; i++) ptrs[i] = &seqs[start + (size_t)i];
        Batch batch;
        if (batch_from_sequences(ptrs, k, &batch, err)) return -1;
        int rc = backend_logps(b, a, &batch, out + start, 0, err) || backend_sync(b, err);
        batch_free(&batch);
        if (rc) return -1;
    }
    return 0;
}

/* Each rank scores its contiguous shard of the records; the logps are
 * all-gathered so every rank (rank 0 writes) has the whole model's values. */
static int shard_logps(const DistComm *comm, Backend *b, BackendAdapter *a, const Sequence *seqs,
                       size_t n, float *out, Error *err)
{
    size_t lo, hi;
    dist_shard_blocks(comm, n, SCORE_BATCH, &lo, &hi);
    if (logps_of(b, a, seqs + lo, hi - lo, out + lo, err)) return -1;
    return dist_allgather_ranges_f32(comm, out, n, lo, hi, err);
}

static int score_model(const Config *cfg, const DistComm *comm, ModelSession *ms, BackendAdapter *margin,
                       const Tokenizer *tok, const GenModel *m, SummaryRow *row, Error *err)
{
    size_t n = m->list.n;
    Sequence *seqs = calloc(n ? n : 1, sizeof *seqs);
    float *la = malloc((n ? n : 1) * sizeof(float)), *ls = malloc((n ? n : 1) * sizeof(float));
    double *reward = malloc((n ? n : 1) * sizeof(double)), *words = malloc((n ? n : 1) * sizeof(double));
    double *tokens = malloc((n ? n : 1) * sizeof(double));
    int rc = (seqs && la && ls && reward && words && tokens) ? 0 : error_set(err, "out of memory");
    if (rc == 0)
        rc = record_sequences(cfg, tok, &m->list, seqs, err) ||
             shard_logps(comm, ms->backend, margin, seqs, n, la, err) ||
             shard_logps(comm, ms->backend, NULL, seqs, n, ls, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        reward[i] = cfg->margin_beta * ((double)la[i] - (double)ls[i]);
        words[i] = (double)word_count(m->list.items[i].response);
        /* completion tokens without the EOS the sequence ends with */
        tokens[i] = (double)(seqs[i].len - seqs[i].completion_start - 1);
    }
    if (rc == 0) summary_row_compute(row, m->name, m->w, reward, words, tokens, n);
    for (size_t i = 0; seqs && i < n; i++) sequence_free(&seqs[i]);
    free(seqs); free(la); free(ls); free(reward); free(words); free(tokens);
    return rc ? -1 : 0;
}

/* The generation dirs that exist: sft first, then the w grid in order. */
static int collect(const Config *cfg, GenModel *models, size_t *n, Error *err)
{
    *n = 0;
    for (int i = -1; i < cfg->n_w; i++) {
        GenModel *m = &models[*n];
        memset(m, 0, sizeof *m);
        if (i < 0) { snprintf(m->name, sizeof m->name, "sft"); m->w = NAN; }
        else { modpo_stage_name(cfg->w[i], m->name, sizeof m->name); m->w = cfg->w[i]; }
        char dir[RUN_PATH_MAX + 80];
        snprintf(dir, sizeof dir, "%s/%s/gen/%s", cfg->output_root, cfg->run_tag, m->name);
        if (!stage_is_done(dir)) continue;
        if (gen_read_dir(dir, &m->list, err)) return -1;
        (*n)++;
    }
    if (*n == 0) return error_set(err, "score: no finished generation dir under %s/%s/gen", cfg->output_root, cfg->run_tag);
    return 0;
}

static int same_prompts(const GenModel *models, size_t n, Error *err)
{
    for (size_t k = 1; k < n; k++) {
        const GenRecordList *a = &models[0].list, *b = &models[k].list;
        if (a->n != b->n)
            return error_set(err, "score: gen/%s has %zu prompts, gen/%s has %zu", models[0].name, a->n,
                             models[k].name, b->n);
        for (size_t i = 0; i < a->n; i++)
            if (strcmp(a->items[i].raw_prompt, b->items[i].raw_prompt) != 0)
                return error_set(err, "score: prompt %zu differs between gen/%s and gen/%s", i,
                                 models[0].name, models[k].name);
    }
    return 0;
}

static void print_rows(const SummaryRow *rows, size_t n)
{
    printf("%-14s %5s %12s %12s %10s %10s\n", "model", "n", "reward_mean", "reward_std", "words", "tokens");
    for (size_t i = 0; i < n; i++)
        printf("%-14s %5zu %12.6f %12.6f %10.2f %10.2f\n", rows[i].name, rows[i].n, rows[i].reward_mean,
               rows[i].reward_std, rows[i].words_mean, rows[i].tokens_mean);
}

static int score_all(const Config *cfg, const DistComm *comm, const char *dir, GenModel *models, size_t n,
                     Error *err)
{
    char sft_model[RUN_PATH_MAX], adapter[RUN_PATH_MAX + 16];
    run_path(cfg, "sft-model", sft_model);
    snprintf(adapter, sizeof adapter, "%s/%s/dpo/adapter", cfg->output_root, cfg->run_tag);
    Tokenizer *tok = NULL;
    ModelSession ms;
    LoraAdapter a;
    memset(&a, 0, sizeof a);
    BackendAdapter *h = NULL;
    SummaryRow rows[CONFIG_MAX_LIST + 1];
    if (tokenizer_load_dir(sft_model, &tok, err)) return -1;
    int rc = model_session_open(&ms, cfg, sft_model, err);
    if (rc == 0) {
        rc = lora_peft_load(adapter, &ms.model.config, &a, err) || model_bind_adapter(&ms, &a, &h, err);
        for (size_t i = 0; rc == 0 && i < n; i++)
            rc = score_model(cfg, comm, &ms, h, tok, &models[i], &rows[i], err);
        if (h) ms.backend->ops->adapter_unbind(ms.backend, h);
        model_session_close(&ms);
    }
    char title[320];
    snprintf(title, sizeof title, "%.200s: margin reward vs response length", cfg->run_tag);
    if (rc == 0 && dist_is_root(comm)) rc = report_write_all(dir, rows, n, title, err);
    if (rc == 0 && dist_is_root(comm)) print_rows(rows, n);
    lora_adapter_free(&a);
    tokenizer_free(tok);
    return rc ? -1 : 0;
}

int stage_score(const Config *cfg, const StageOptions *o, Error *err)
{
    static const char *const critical[] = {"model.path", "data", "lora", "sft", "dpo", "modpo",
                                           "generate", "run.seed", NULL};
    char dir[RUN_PATH_MAX];
    run_path(cfg, "score", dir);
    GenModel models[CONFIG_MAX_LIST + 1];
    size_t n = 0;
    int rc = collect(cfg, models, &n, err) || same_prompts(models, n, err);
    StageStatus st = STAGE_FRESH;
    /* Scoring is cheap and its inputs may have grown: a finished score dir
     * (ours, by its DONE file) is replaced on every run. */
    bool root = dist_is_root(o->comm);
    if (rc == 0 && root && stage_is_done(dir)) rc = fs_remove_tree(dir, err);
    if (rc == 0) rc = dist_barrier(o->comm, err) ||
                      stage_open_collective(o->comm, dir, cfg, critical, o->force, &st, err) ||
                      score_all(cfg, o->comm, dir, models, n, err) ||
                      (root && stage_mark_done(dir, NULL, err)) || dist_barrier(o->comm, err);
    for (size_t i = 0; i < n; i++) gen_list_free(&models[i].list);
    return rc ? -1 : 0;
}

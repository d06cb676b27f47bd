#include "run_data.h"

#include <string.h>

int run_data_load(RunData *d, const Config *cfg, const char *model_dir, Error *err)
{
    memset(d, 0, sizeof *d);
    if (tokenizer_load_dir(model_dir, &d->tok, err)) return -1;
    if (helpsteer_load(cfg->train_path, cfg->skip_bad_rows, &d->train, err) ||
        helpsteer_load(cfg->validation_path, cfg->skip_bad_rows, &d->val, err)) {
        run_data_free(d);
        return -1;
    }
    return 0;
}

void run_data_free(RunData *d)
{
    if (d->tok) tokenizer_free(d->tok);
    helpsteer_free(&d->train);
    helpsteer_free(&d->val);
    memset(d, 0, sizeof *d);
}

int run_pairs_build(const RunData *d, const Config *cfg, const char *dimension, RunPairs *p,
                    Error *err)
{
    memset(p, 0, sizeof *p);
    Dimension dim;
    if (dimension_parse(dimension, &dim, err)) return -1;
    int rc = pairs_build(&d->train, dim, &p->train_set, err) ||
             pairs_build(&d->val, dim, &p->val_set, err) ||
             pair_sequences_build(d->tok, cfg->prompt_template, cfg->max_length, &p->train_set,
                                  &p->train, err) ||
             pair_sequences_build(d->tok, cfg->prompt_template, cfg->max_length, &p->val_set,
                                  &p->val, err);
    if (rc == 0 && p->train.n == 0)
        rc = error_set(err, "%s: no %s pairs within data.max_length = %d tokens", cfg->train_path,
                       dimension, cfg->max_length);
    if (rc == 0 && p->val.n == 0)
        rc = error_set(err, "%s: no %s pairs within data.max_length = %d tokens",
                       cfg->validation_path, dimension, cfg->max_length);
    if (rc) run_pairs_free(p);
    return rc ? -1 : 0;
}

void run_pairs_free(RunPairs *p)
{
    pair_sequences_free(&p->train);
    pair_sequences_free(&p->val);
    pairs_free(&p->train_set);
    pairs_free(&p->val_set);
    memset(p, 0, sizeof *p);
}

int run_sft_build(const RunData *d, const Config *cfg, RunSft *s, Error *err)
{
    memset(s, 0, sizeof *s);
    int rc = sft_build(&d->train, cfg->sft_dimension, &s->train_set, err) ||
             sft_build(&d->val, cfg->sft_dimension, &s->val_set, err) ||
             sft_sequences_build(d->tok, cfg->prompt_template, cfg->max_length, &s->train_set,
                                 &s->train, err) ||
             sft_sequences_build(d->tok, cfg->prompt_template, cfg->max_length, &s->val_set,
                                 &s->val, err);
    if (rc == 0 && (s->train.n == 0 || s->val.n == 0))
        rc = error_set(err, "no SFT examples within data.max_length = %d tokens", cfg->max_length);
    if (rc) run_sft_free(s);
    return rc ? -1 : 0;
}

void run_sft_free(RunSft *s)
{
    sft_sequences_free(&s->train);
    sft_sequences_free(&s->val);
    sft_free(&s->train_set);
    sft_free(&s->val_set);
    memset(s, 0, sizeof *s);
}

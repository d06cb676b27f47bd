/* modpo data-stats [CONFIG]: what the configured HelpSteer splits hold —
 * rows, prompt groups, bad rows skipped, pairs and ties per dimension, and,
 * with the model's tokenizer, training-sequence lengths, how many pairs
 * data.max_length drops, and how much work MODPO's frozen passes do (the
 * distinct sequences of data.modpo_dimension's pairs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "commands.h"
#include "helpsteer.h"
#include "pairs.h"
#include "sequences.h"
#include "tokenizer.h"
#include "unique_sequences.h"

static void usage(void)
{
    printf("usage: modpo data-stats [CONFIG] [--set key=value ...]\n"
           "Reads data.train and data.validation and prints, per split: rows, prompts\n"
           "(groups of consecutive rows with one prompt), bad rows skipped (with\n"
           "data.skip_bad_rows = true), preference pairs and ties per dimension, and,\n"
           "when the tokenizer at model.path loads, token-length percentiles, the\n"
           "pairs/examples longer than data.max_length, and the work of MODPO's frozen\n"
           "passes: pair sides, distinct sequences and label starts of\n"
           "data.modpo_dimension's pairs.\n");
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static int32_t percentile(const int32_t *v, size_t n, int p)
{
    size_t rank = (n * (size_t)p + 99) / 100;
    return v[rank ? rank - 1 : 0];
}

static void print_percentiles(const char *label, int32_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i32);
    printf("  %-28s %7d %7d %7d %7d\n", label, percentile(v, n, 50), percentile(v, n, 90),
           percentile(v, n, 99), v[n - 1]);
}

static void print_bad_rows(const HelpSteerData *d)
{
    printf("  %-28s %zu\n", "bad rows skipped", d->n_bad);
    for (int r = 0; r < HS_BAD_N; r++)
        if (d->bad[r])
            printf("    %-26s %zu (first: %s)\n", helpsteer_bad_reason_name((HelpSteerBadReason)r),
                   d->bad[r], d->first_bad[r]);
}

/* Per-row sequence lengths (BOS + prompt + response + EOS) and templated
 * prompt lengths; a pair's length test depends only on its two rows. */
typedef struct {
    int32_t *seq_len;
    int32_t *prompt_len;
    size_t n;
} RowLengths;

static int row_lengths(const Tokenizer *tok, const Config *cfg, const HelpSteerData *d,
                       RowLengths *out, Error *err)
{
    memset(out, 0, sizeof *out);
    SftSet rows;
    SftSequences seqs;
    if (sft_from_rows(d, &rows, err)) return -1;
    int rc = sft_sequences_build(tok, cfg->prompt_template, 0, &rows, &seqs, err);
    sft_free(&rows);
    if (rc) return -1;
    out->seq_len = malloc(seqs.n * sizeof *out->seq_len);
    out->prompt_len = malloc(seqs.n * sizeof *out->prompt_len);
    if (!out->seq_len || !out->prompt_len) {
        free(out->seq_len);
        free(out->prompt_len);
        sft_sequences_free(&seqs);
        return error_set(err, "out of memory");
    }
    for (size_t i = 0; i < seqs.n; i++) {
        out->seq_len[i] = seqs.seqs[i].len;
        out->prompt_len[i] = seqs.seqs[i].completion_start - 1;
    }
    out->n = seqs.n;
    sft_sequences_free(&seqs);
    return 0;
}

static size_t pairs_too_long(const PairSet *set, const RowLengths *len, int max_length)
{
    size_t n = 0;
    for (size_t i = 0; i < set->n; i++)
        if (len->seq_len[set->pairs[i].row_chosen] > max_length ||
            len->seq_len[set->pairs[i].row_rejected] > max_length)
            n++;
    return n;
}

static int print_pairs(const HelpSteerData *d, const RowLengths *len, int max_length, Error *err)
{
    if (len) printf("  %-28s %7s %7s %9s\n", "pairs by dimension", "pairs", "ties", "too long");
    else printf("  %-28s %7s %7s\n", "pairs by dimension", "pairs", "ties");
    for (int dim = 0; dim < DIM_N; dim++) {
        PairSet set;
        if (pairs_build(d, (Dimension)dim, &set, err)) return -1;
        if (len)
            printf("    %-26s %7zu %7zu %9zu\n", dimension_name((Dimension)dim), set.n, set.n_ties,
                   pairs_too_long(&set, len, max_length));
        else
            printf("    %-26s %7zu %7zu\n", dimension_name((Dimension)dim), set.n, set.n_ties);
        pairs_free(&set);
    }
    return 0;
}

static int print_tokens(const Config *cfg, const HelpSteerData *d, const RowLengths *len, Error *err)
{
    size_t too_long = 0;
    for (size_t i = 0; i < len->n; i++) too_long += len->seq_len[i] > cfg->max_length;
    printf("  %-28s %7s %7s %7s %7s\n", "tokens (per row)", "p50", "p90", "p99", "max");
    print_percentiles("prompt (templated)", len->prompt_len, len->n);
    print_percentiles("sequence (BOS..EOS)", len->seq_len, len->n);
    printf("  %-28s %zu of %zu rows (max_length %d)\n", "sequences too long", too_long, len->n,
           cfg->max_length);
    SftSet sft;
    if (sft_build(d, cfg->sft_dimension, &sft, err)) return -1;
    size_t sft_long = 0;
    for (size_t i = 0; i < sft.n; i++) sft_long += len->seq_len[sft.ex[i].row] > cfg->max_length;
    printf("  %-28s %zu, %zu too long (data.sft_dimension %s)\n", "SFT examples", sft.n, sft_long,
           cfg->sft_dimension);
    sft_free(&sft);
    return 0;
}

/* The frozen passes run each distinct token sequence of the pairs once,
 * with one sum per label start it is scored from (precompute.c). */
static int print_frozen_passes(const Config *cfg, const Tokenizer *tok, const HelpSteerData *d,
                               Error *err)
{
    Dimension dim;
    PairSet set;
    PairSequences ps;
    UniqueSequences u;
    if (dimension_parse(cfg->modpo_dimension, &dim, err) || pairs_build(d, dim, &set, err))
        return -1;
    int rc = pair_sequences_build(tok, cfg->prompt_template, cfg->max_length, &set, &ps, err);
    pairs_free(&set);
    if (rc) return -1;
    rc = unique_sequences_build(&ps, &u, err);
    if (rc == 0)
        printf("  %-28s %zu pair sides, %zu distinct sequences, %zu label starts "
               "(data.modpo_dimension %s)\n", "frozen passes compute", 2 * ps.n, u.n, u.n_sums,
               cfg->modpo_dimension);
    unique_sequences_free(&u);
    pair_sequences_free(&ps);
    return rc;
}

static int split_stats(const char *name, const char *path, const Config *cfg, const Tokenizer *tok,
                       Error *err)
{
    HelpSteerData d;
    if (helpsteer_load(path, cfg->skip_bad_rows, &d, err)) return -1;
    printf("%s: %s\n", name, path);
    printf("  %-28s %zu\n", "rows", d.n_rows);
    printf("  %-28s %zu\n", "prompts (groups)", helpsteer_count_groups(&d));
    print_bad_rows(&d);
    RowLengths len;
    int rc = 0;
    bool have_len = tok && row_lengths(tok, cfg, &d, &len, err) == 0;
    if (tok && !have_len) rc = -1;
    if (!rc) rc = print_pairs(&d, have_len ? &len : NULL, cfg->max_length, err);
    if (!rc && have_len) rc = print_tokens(cfg, &d, &len, err);
    if (!rc && have_len) rc = print_frozen_passes(cfg, tok, &d, err);
    if (have_len) {
        free(len.seq_len);
        free(len.prompt_len);
    }
    helpsteer_free(&d);
    return rc;
}

static int run(const Config *cfg)
{
    Error err = { "" };
    Tokenizer *tok = NULL;
    if (tokenizer_load_dir(cfg->model_path, &tok, &err)) {
        printf("tokenizer: cannot load from %s (%s); token statistics skipped\n", cfg->model_path, err.msg);
        tok = NULL;
    } else {
        printf("tokenizer: %s (%d pieces)\n", cfg->model_path, tokenizer_vocab_size(tok));
    }
    int rc = prompt_template_check(cfg->prompt_template, &err);
    if (!rc) rc = split_stats("train", cfg->train_path, cfg, tok, &err);
    if (!rc) rc = split_stats("validation", cfg->validation_path, cfg, tok, &err);
    if (rc) fprintf(stderr, "modpo data-stats: %s\n", err.msg);
    if (tok) tokenizer_free(tok);
    return rc ? 1 : 0;
}

int cmd_data_stats(int argc, char **argv)
{
    Config *cfg = malloc(sizeof *cfg);
    if (!cfg) {
        fprintf(stderr, "modpo data-stats: out of memory\n");
        return 1;
    }
    CliArgs args;
    int rc = cli_load_config(argc, argv, cfg, &args) ? 1 : 0;
    if (rc == 0 && args.help) {
        usage();
    } else if (rc == 0 && args.n_rest > 0) {
        fprintf(stderr, "modpo data-stats: unexpected argument '%s'\n", args.rest[0]);
        rc = 1;
    } else if (rc == 0) {
        rc = run(cfg);
    }
    cli_args_free(&args);
    free(cfg);
    return rc;
}

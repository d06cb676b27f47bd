#include "pairs.h"

#include <stdlib.h>
#include <string.h>

static const char *const DIM_NAMES[DIM_N] = {
    "helpfulness", "correctness", "coherence", "complexity", "verbosity", "overall",
};

#define DIM_ALLOWED "helpfulness, correctness, coherence, complexity, verbosity, overall"

int dimension_parse(const char *name, Dimension *out, Error *err)
{
    for (int d = 0; d < DIM_N; d++)
        if (strcmp(name, DIM_NAMES[d]) == 0) {
            *out = (Dimension)d;
            return 0;
        }
    return error_set(err, "unknown dimension \"%s\" (allowed: " DIM_ALLOWED ")", name);
}

const char *dimension_name(Dimension dim)
{
    return ((int)dim >= 0 && dim < DIM_N) ? DIM_NAMES[dim] : "?";
}

int dimension_score(const HelpSteerRow *row, Dimension dim)
{
    if (dim != DIM_OVERALL) return row->rating[dim];
    int sum = 0;
    for (int i = 0; i < HS_N_RATINGS; i++) sum += row->rating[i];
    return sum;
}

/* Upper bound on the pairs: n(n-1)/2 per group, so one allocation suffices. */
static size_t max_pairs(const HelpSteerData *data, size_t *n_groups)
{
    size_t total = 0, groups = 0;
    for (size_t i = 0, e; i < data->n_rows; i = e) {
        e = helpsteer_group_end(data, i);
        size_t n = e - i;
        total += n * (n - 1) / 2;
        groups++;
    }
    *n_groups = groups;
    return total;
}

/* The seed's loop for one group [b, e): j outer, k inner. */
static void group_pairs(const HelpSteerData *data, size_t b, size_t e, PairSet *set)
{
    const HelpSteerRow *rows = data->rows;
    for (size_t j = b; j < e; j++)
        for (size_t k = j + 1; k < e; k++) {
            int sj = dimension_score(&rows[j], set->dim), sk = dimension_score(&rows[k], set->dim);
            if (sj == sk) {
                set->n_ties++;
                continue;
            }
            size_t c = sj > sk ? j : k, r = sj > sk ? k : j;
            set->pairs[set->n++] = (Pair){
                .prompt = rows[j].prompt,
                .chosen = rows[c].response, .rejected = rows[r].response,
                .row_chosen = c, .row_rejected = r,
            };
        }
}

int pairs_build(const HelpSteerData *data, Dimension dim, PairSet *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if ((int)dim < 0 || dim >= DIM_N) return error_set(err, "invalid dimension %d", (int)dim);
    out->dim = dim;
    size_t cap = max_pairs(data, &out->n_groups);
    if (cap) {
        out->pairs = malloc(cap * sizeof *out->pairs);
        if (!out->pairs) return error_set(err, "out of memory for %zu pairs", cap);
    }
    for (size_t i = 0, e; i < data->n_rows; i = e) {
        e = helpsteer_group_end(data, i);
        group_pairs(data, i, e, out);
    }
    return 0;
}

void pairs_free(PairSet *set)
{
    free(set->pairs);
    memset(set, 0, sizeof *set);
}

static int sft_alloc(SftSet *out, size_t n, Error *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0) return 0;
    out->ex = malloc(n * sizeof *out->ex);
    if (!out->ex) return error_set(err, "out of memory for %zu SFT examples", n);
    out->n = n;
    return 0;
}

int sft_from_rows(const HelpSteerData *data, SftSet *out, Error *err)
{
    if (sft_alloc(out, data->n_rows, err)) return -1;
    for (size_t i = 0; i < data->n_rows; i++)
        out->ex[i] = (SftExample){ data->rows[i].prompt, data->rows[i].response, i };
    return 0;
}

int sft_from_pairs(const PairSet *pairs, SftSet *out, Error *err)
{
    if (sft_alloc(out, pairs->n, err)) return -1;
    for (size_t i = 0; i < pairs->n; i++) {
        const Pair *p = &pairs->pairs[i];
        out->ex[i] = (SftExample){ p->prompt, p->chosen, p->row_chosen };
    }
    return 0;
}

int sft_build(const HelpSteerData *data, const char *source, SftSet *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if (strcmp(source, "all") == 0) return sft_from_rows(data, out, err);
    Dimension dim = DIM_HELPFULNESS;
    if (dimension_parse(source, &dim, err))
        return error_set(err, "unknown SFT source \"%s\" (allowed: all, " DIM_ALLOWED ")", source);
    PairSet pairs;
    if (pairs_build(data, dim, &pairs, err)) return -1;
    int rc = sft_from_pairs(&pairs, out, err);
    pairs_free(&pairs);
    return rc;
}

void sft_free(SftSet *set)
{
    free(set->ex);
    memset(set, 0, sizeof *set);
}

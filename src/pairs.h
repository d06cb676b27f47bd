/* Preference pairs and SFT examples from HelpSteer rows, as the seed builds
 * them (DESIGN.md section 1): within each group of consecutive rows with the
 * same prompt, every j < k gives (prompt, response_j, response_k) with chosen
 * = the higher rating on the dimension; ties are dropped.  Order: groups in
 * file order, j outer, k inner.
 *
 * The seed maps the rows with datasets' batched map (1000 rows a batch), so a
 * group straddling a batch boundary is split there; we group the whole file,
 * which is what the seed means to compute.
 *
 * Pairs and examples borrow their strings from the HelpSteerData: keep the
 * data alive while they are in use. */
#ifndef MODPO_PAIRS_H
#define MODPO_PAIRS_H

#include <stddef.h>

#include "error.h"
#include "helpsteer.h"

typedef enum {
    DIM_HELPFULNESS, DIM_CORRECTNESS, DIM_COHERENCE, DIM_COMPLEXITY, DIM_VERBOSITY,
    DIM_OVERALL, /* the sum of the five ratings */
    DIM_N
} Dimension;

/* Parses "helpfulness" ... "overall"; the error lists the allowed names. */
int dimension_parse(const char *name, Dimension *out, Error *err);
const char *dimension_name(Dimension dim);
/* A row's score on a dimension: its rating, or the sum of all five. */
int dimension_score(const HelpSteerRow *row, Dimension dim);

typedef struct {
    const char *prompt;           /* raw prompt, before the template */
    const char *chosen, *rejected;
    size_t row_chosen, row_rejected; /* indices into HelpSteerData.rows */
} Pair;

typedef struct {
    Dimension dim;
    Pair *pairs;
    size_t n;
    size_t n_ties;   /* j < k combinations dropped because the scores were equal */
    size_t n_groups; /* prompt groups seen (single-row groups included) */
} PairSet;

int pairs_build(const HelpSteerData *data, Dimension dim, PairSet *out, Error *err);
void pairs_free(PairSet *set);

typedef struct {
    const char *prompt;   /* raw prompt */
    const char *response;
    size_t row;           /* index into HelpSteerData.rows */
} SftExample;

typedef struct {
    SftExample *ex;
    size_t n;
} SftSet;

/* Every row, in file order. */
int sft_from_rows(const HelpSteerData *data, SftSet *out, Error *err);
/* The chosen side of each pair, in pair order (one example per pair, so a
 * response that wins several pairs appears several times, as in the seed). */
int sft_from_pairs(const PairSet *pairs, SftSet *out, Error *err);
/* `source` = "all" (every row) or a dimension name (its pairs' chosen side);
 * the error lists the allowed names. */
int sft_build(const HelpSteerData *data, const char *source, SftSet *out, Error *err);
void sft_free(SftSet *set);

#endif

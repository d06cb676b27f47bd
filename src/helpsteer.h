/* HelpSteer rows as Hugging Face publishes nvidia/HelpSteer: one JSON object a
 * line, {prompt, response, helpfulness, correctness, coherence, complexity,
 * verbosity}, ratings integers 0-4, in train.jsonl.gz / validation.jsonl.gz
 * (plain .jsonl is read the same way).  Several consecutive rows share one
 * prompt; those runs are the "groups" that preference pairs are built from.
 *
 * A bad row (malformed JSON, a missing field, a wrong type, a rating outside
 * 0-4, invalid UTF-8, an empty prompt or response) is an error
 * "FILE:LINE: ..." naming the field, unless skip_bad_rows is set: then it is
 * skipped and counted per reason. */
#ifndef MODPO_HELPSTEER_H
#define MODPO_HELPSTEER_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* The five attributes, in HelpSteer's column order. */
enum { HS_N_RATINGS = 5 };
#define HS_RATING_MIN 0
#define HS_RATING_MAX 4

typedef enum {
    HS_BAD_JSON,    /* not a JSON object (includes blank lines inside the file) */
    HS_BAD_MISSING, /* a required field is absent */
    HS_BAD_TYPE,    /* a field of the wrong JSON type, e.g. a rating of 2.5 or "3" */
    HS_BAD_RANGE,   /* a rating outside 0-4 */
    HS_BAD_UTF8,    /* the line is not valid UTF-8 */
    HS_BAD_EMPTY,   /* an empty prompt or response */
    HS_BAD_N
} HelpSteerBadReason;

typedef struct {
    /* Consecutive rows with an equal prompt share one allocation (the real
     * dataset repeats multi-kilobyte prompts ~4 times); helpsteer_free knows. */
    char *prompt;
    char *response;
    int rating[HS_N_RATINGS]; /* helpfulness, correctness, coherence, complexity, verbosity */
    size_t line;              /* 1-based line in the file, for messages */
} HelpSteerRow;

typedef struct {
    HelpSteerRow *rows;
    size_t n_rows;
    size_t bad[HS_BAD_N];     /* rows skipped per reason (skip_bad_rows only) */
    size_t n_bad;
    char first_bad[HS_BAD_N][256]; /* the first skipped row's message per reason */
} HelpSteerData;

/* Reads a .jsonl or .jsonl.gz file.  Lines may be arbitrarily long; trailing
 * blank lines are ignored.  A file with no valid row is an error.  On failure
 * *out is left empty (nothing to free). */
int helpsteer_load(const char *path, bool skip_bad_rows, HelpSteerData *out, Error *err);
void helpsteer_free(HelpSteerData *data);

/* "helpfulness", ... for i in [0, HS_N_RATINGS). */
const char *helpsteer_rating_name(int i);
/* "malformed JSON", "missing field", ... */
const char *helpsteer_bad_reason_name(HelpSteerBadReason reason);

/* Groups: maximal runs of consecutive rows with an equal prompt (a prompt
 * that comes back later starts a new group, as in the seed).
 * helpsteer_group_end returns the index one past the group starting at
 * `start` (start < n_rows). */
size_t helpsteer_group_end(const HelpSteerData *data, size_t start);
size_t helpsteer_count_groups(const HelpSteerData *data);

#endif

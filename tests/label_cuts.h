/* Test helper shared by the CPU and CUDA backend checks: splits every
 * sequence of a batch with two labels or more at its middle label, the
 * way the precompute scores one sequence from several label starts. */
#ifndef MODPO_TESTS_LABEL_CUTS_H
#define MODPO_TESTS_LABEL_CUTS_H

#include <stdint.h>
#include <stdlib.h>

#include "batch.h"

/* Sets b->sum_start (calloc'd; the caller frees it) with one mark a
 * sequence: cut[s] is its position, or -1 for a sequence with fewer than
 * two labels.  tail [n_seq * seq_len] receives the labels from each cut on.
 * Returns the number of marks. */
static inline int label_cuts_mid(Batch *b, int *cut, uint8_t *tail)
{
    size_t T = (size_t)b->seq_len;
    int marks = 0;
    b->sum_start = calloc((size_t)b->n_seq * T, 1);
    for (int s = 0; s < b->n_seq; s++) {
        const uint8_t *mask = b->label_mask + (size_t)s * T;
        int labels = 0, seen = 0;
        for (size_t t = 0; t < T; t++) labels += mask[t];
        cut[s] = -1;
        for (size_t t = 0; t < T && labels >= 2; t++)
            if (mask[t] && ++seen == labels / 2 + 1) cut[s] = (int)t;
        if (cut[s] < 0) continue;
        b->sum_start[(size_t)s * T + (size_t)cut[s]] = 1;
        marks++;
        for (size_t t = (size_t)cut[s]; t < T; t++) tail[(size_t)s * T + t] = mask[t];
    }
    return marks;
}

#endif

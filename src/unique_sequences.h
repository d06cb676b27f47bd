/* The distinct token sequences of a PairSequences.  In HelpSteer several rows
 * share a prompt and pairs are every j < k of a prompt group, so one
 * response's sequence is a side of several pairs; under a frozen model its
 * per-token logps depend only on its tokens, so it needs one forward.  Its
 * labels, though, start where its pair's two sides first differ, so the
 * same tokens can be scored from several label starts: each distinct
 * sequence keeps the ascending list of its starts, and a side's logp is
 * the sum of the per-start "segments" from its own start on (one forward
 * with Batch.sum_start marks gives every segment).
 *
 * Built in O(n log n) with a hash table (open addressing, linear probing)
 * over (len, tokens); equal hashes are confirmed by comparing the tokens in
 * full, so a collision never merges two sequences. */
#ifndef MODPO_UNIQUE_SEQUENCES_H
#define MODPO_UNIQUE_SEQUENCES_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sequences.h"

typedef struct {
    size_t n;                 /* distinct token sequences */
    const Sequence **seqs;    /* [n] borrowed from the PairSequences, in first-appearance
                                 order over c0, r0, c1, r1, ... */
    size_t n_sums;            /* (sequence, label start) pairs */
    size_t *sum_base;         /* [n + 1] sequence d's starts are sum_from[sum_base[d] ..
                                 sum_base[d + 1]) */
    int32_t *sum_from;        /* [n_sums] label starts, ascending within a sequence */
    size_t *chosen;           /* [n_pairs] the sum (index into sum_from) of each chosen side */
    size_t *rejected;         /* [n_pairs] ... and of each rejected side */
    size_t n_pairs;
} UniqueSequences;

/* The hash the table is keyed by; only its equal values matter (a test
 * passes a constant one to force every lookup through the full comparison). */
typedef uint64_t (*SequenceHash)(const Sequence *s);

/* FNV-1a (64 bit) over len and the tokens. */
uint64_t sequence_hash(const Sequence *s);

/* Keep ps alive while *out is in use.  On failure *out is empty. */
int unique_sequences_build(const PairSequences *ps, UniqueSequences *out, Error *err);
/* The same with another hash (for tests). */
int unique_sequences_build_hashed(const PairSequences *ps, SequenceHash hash, UniqueSequences *out,
                                  Error *err);
void unique_sequences_free(UniqueSequences *u);

#endif

/* The distinct sequences of a PairSequences.  In HelpSteer several rows share
 * a prompt and pairs are every j < k of a prompt group, so one response's
 * sequence is a side of several pairs; its logp under a frozen model depends
 * only on its tokens and on where its labels start, so it needs computing
 * once.  Two pair sides are the same sequence when their tokens and their
 * completion_start are equal: the labelled prefix of a side is the common
 * token prefix of its pair, so equal tokens can carry different labels in
 * different pairs and are then different sequences.
 *
 * Built in O(n) with a hash table (open addressing, linear probing) over
 * (len, completion_start, tokens); equal hashes are confirmed by comparing
 * the sequences in full, so a collision never merges two sequences. */
#ifndef MODPO_UNIQUE_SEQUENCES_H
#define MODPO_UNIQUE_SEQUENCES_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sequences.h"

typedef struct {
    size_t n;                 /* distinct sequences */
    const Sequence **seqs;    /* [n] borrowed from the PairSequences, in first-appearance
                                 order over c0, r0, c1, r1, ... */
    size_t *chosen;           /* [n_pairs] index into seqs of each pair's chosen side */
    size_t *rejected;         /* [n_pairs] ... and of its rejected side */
    size_t n_pairs;
} UniqueSequences;

/* The hash the table is keyed by; only its equal values matter (a test
 * passes a constant one to force every lookup through the full comparison). */
typedef uint64_t (*SequenceHash)(const Sequence *s);

/* FNV-1a (64 bit) over len, completion_start and the tokens. */
uint64_t sequence_hash(const Sequence *s);

/* Keep ps alive while *out is in use.  On failure *out is empty. */
int unique_sequences_build(const PairSequences *ps, UniqueSequences *out, Error *err);
/* The same with another hash (for tests). */
int unique_sequences_build_hashed(const PairSequences *ps, SequenceHash hash, UniqueSequences *out,
                                  Error *err);
void unique_sequences_free(UniqueSequences *u);

#endif

/* A right-padded batch of training sequences, the unit every backend's
 * logps/backward consume.  For pairs the convention is chosen sequences first,
 * then rejected: n pairs give 2n rows [c0..c(n-1), r0..r(n-1)]. */
#ifndef MODPO_BATCH_H
#define MODPO_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sequences.h"

typedef struct {
    int n_seq;
    int seq_len;          /* the longest sequence of the batch */
    int32_t *tokens;      /* [n_seq * seq_len], right-padded with 0 */
    int32_t *lengths;     /* [n_seq] */
    uint8_t *label_mask;  /* [n_seq * seq_len]; 1 where tokens[t] is a completion
                             token scored by logits[t-1]; 0 on padding */
    uint8_t *sum_start;   /* NULL (one logp per sequence), or [n_seq * seq_len] with 1
                             at labelled positions where a new sum begins: sequence
                             s then gives 1 + (its marks) logps, the first over its
                             labels before the first mark, each next one from its
                             mark to the next (batch_n_sums).  Scoring only: a
                             frozen model's logp of one token sequence under
                             several label starts, from one forward. */
} Batch;

/* Gathers seqs[0..n) (pointers, so any selection of a set can be batched). */
int batch_from_sequences(const Sequence *const *seqs, int n, Batch *out, Error *err);
/* Pairs idx[0..n) of ps, as [chosen..., rejected...]. */
int batch_from_pairs(const PairSequences *ps, const size_t *idx, int n, Batch *out, Error *err);
/* SFT examples idx[0..n) of ss. */
int batch_from_sft(const SftSequences *ss, const size_t *idx, int n, Batch *out, Error *err);
/* Number of labelled tokens in row i (the denominator of a token-mean loss). */
int batch_n_labels(const Batch *b, int i);
/* How many logps the batch gives: n_seq, plus one per sum_start mark. */
int batch_n_sums(const Batch *b);
/* NULL when b's marks are valid (each at a labelled position), else a
 * description of the first bad one written into buf. */
const char *batch_check_sums(const Batch *b, char *buf, size_t cap);
void batch_free(Batch *b);

#endif

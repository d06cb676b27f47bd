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
} Batch;

/* Gathers seqs[0..n) (pointers, so any selection of a set can be batched). */
int batch_from_sequences(const Sequence *const *seqs, int n, Batch *out, Error *err);
/* Pairs idx[0..n) of ps, as [chosen..., rejected...]. */
int batch_from_pairs(const PairSequences *ps, const size_t *idx, int n, Batch *out, Error *err);
/* SFT examples idx[0..n) of ss. */
int batch_from_sft(const SftSequences *ss, const size_t *idx, int n, Batch *out, Error *err);
/* Number of labelled tokens in row i (the denominator of a token-mean loss). */
int batch_n_labels(const Batch *b, int i);
void batch_free(Batch *b);

#endif

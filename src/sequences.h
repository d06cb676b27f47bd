/* Training sequences: the prompt template applied to the raw prompt, then
 * BOS + tokens(prompt + response) + EOS, with labels on completion tokens
 * only.  As in the seed, prompt + response is tokenized as one text (a
 * response can merge with the end of the prompt), and the unlabelled prefix is
 * the common token prefix of
 *   pairs: BOS+tokens(prompt+chosen)+EOS and BOS+tokens(prompt+rejected)+EOS,
 *   SFT:   BOS+tokens(prompt+response)+EOS and BOS+tokens(prompt).
 * So a sequence's labels start at completion_start = 1 + prompt_len; EOS is
 * always labelled, except in the seed's corner case of a pair whose two
 * responses tokenize identically (then nothing is labelled, as in the seed).
 *
 * Sequences longer than max_length tokens (BOS and EOS included) are dropped
 * and counted; for a pair, either side being too long drops the pair. */
#ifndef MODPO_SEQUENCES_H
#define MODPO_SEQUENCES_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "pairs.h"
#include "tokenizer.h"

#define PROMPT_PLACEHOLDER "{raw_prompt}"

typedef struct {
    int32_t *tokens;          /* BOS, tokens(prompt + response), EOS */
    int32_t len;
    int32_t completion_start; /* positions >= this carry labels */
} Sequence;

void sequence_free(Sequence *seq);

/* Fails unless the template contains {raw_prompt}. */
int prompt_template_check(const char *tmpl, Error *err);
/* Replaces every {raw_prompt} with raw_prompt (nothing else is special, unlike
 * Python's str.format, so templates need no brace escaping).  *out is malloc'd. */
int prompt_template_apply(const char *tmpl, const char *raw_prompt, char **out, Error *err);

/* One pair from an already-templated prompt. */
int sequence_pair_build(const Tokenizer *tok, const char *prompt, const char *chosen,
                        const char *rejected, Sequence *c, Sequence *r, Error *err);
/* One SFT example from an already-templated prompt. */
int sequence_sft_build(const Tokenizer *tok, const char *prompt, const char *response,
                       Sequence *s, Error *err);

typedef struct {
    size_t n;              /* pairs kept */
    Sequence *chosen, *rejected;
    size_t *source;        /* index of each kept pair in the PairSet */
    size_t n_too_long;     /* pairs dropped by max_length */
} PairSequences;

/* max_length <= 0 keeps everything. */
int pair_sequences_build(const Tokenizer *tok, const char *tmpl, int max_length,
                         const PairSet *pairs, PairSequences *out, Error *err);
void pair_sequences_free(PairSequences *ps);

typedef struct {
    size_t n;              /* examples kept */
    Sequence *seqs;
    size_t *source;        /* index of each kept example in the SftSet */
    size_t n_too_long;
} SftSequences;

int sft_sequences_build(const Tokenizer *tok, const char *tmpl, int max_length,
                        const SftSet *set, SftSequences *out, Error *err);
void sft_sequences_free(SftSequences *ss);

#endif

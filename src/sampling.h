/* Choosing the next token from one sequence's logits, exactly as Hugging Face
 * transformers' generate() does (checked against transformers 5.x by
 * tests/gen_sampling_fixtures.py), in generate's order:
 *
 *   RepetitionPenaltyLogitsProcessor   if repetition_penalty != 1
 *   NoRepeatNGramLogitsProcessor       if no_repeat_ngram_size > 0
 *   then, only when sampling:
 *   TemperatureLogitsWarper            if temperature != 1
 *   TopKLogitsWarper                   if top_k > 0
 *   TopPLogitsWarper                   if top_p < 1
 *   softmax + multinomial draw (our seeded Rng), or argmax when greedy.
 *
 * top_k matters: generate() fills an unset top_k with 50, so HF sampling with
 * only temperature and top_p given still keeps at most the 50 best tokens.
 * sampling_params_default() reproduces generate's defaults (top_k 50).
 *
 * context is the sequence so far, prompt included, WITHOUT padding:
 * transformers 5.x skips left padding in the repetition penalty, and padding
 * cannot complete an n-gram of an unfinished sequence, so the unpadded
 * sequence gives generate's result.  Token ids outside [0, vocab) in context
 * are ignored, as HF does for ids past the lm_head.
 *
 * Numerics: logits are float32 as in generate; top-p's cumulative softmax is
 * summed in double, so a token whose cumulative probability lies within float
 * rounding of 1 - top_p may be kept where torch removes it (or vice versa).
 * Ties in top-p's sort are broken by token id (the lower id counts as the
 * less likely one and goes first); torch's sort order for ties is
 * unspecified.  Logits are assumed free of NaN.
 *
 * Cost per token at a 32k vocabulary (one core): about 0.3 ms greedy or with
 * top-k 50; top-p with top_k 0 sorts every finite score, about 7 ms. */
#ifndef MODPO_SAMPLING_H
#define MODPO_SAMPLING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "shuffle.h" /* Rng */

typedef struct SamplingPair SamplingPair; /* top-p's (logit, id) sort entry */

typedef struct {
    bool do_sample;            /* false: greedy (argmax) */
    double temperature;        /* sampling only; 1: off; > 0 */
    int top_k;                 /* sampling only; 0: off */
    double top_p;              /* sampling only; 1: off; in (0, 1] */
    double repetition_penalty; /* 1: off; > 0 */
    int no_repeat_ngram_size;  /* 0: off */
} SamplingParams;

/* generate()'s defaults: greedy, temperature 1, top_k 50, top_p 1,
 * repetition_penalty 1, no_repeat_ngram_size 0. */
void sampling_params_default(SamplingParams *p);
/* Rejects values HF's processors reject (temperature <= 0, top_p outside
 * [0, 1], penalty <= 0, negative sizes), naming the field. */
int sampling_params_check(const SamplingParams *p, Error *err);

/* Working memory for one sequence's step, allocated once per vocab so the
 * per-token path never allocates.  Not shared between threads. */
typedef struct {
    int vocab;
    unsigned char *seen; /* vocab bytes, all zero between calls */
    float *heap;         /* vocab floats: top-k's min-heap */
    SamplingPair *pairs;  /* vocab (logit, id) pairs: top-p's sort */
} SamplingScratch;

int sampling_scratch_init(SamplingScratch *s, int vocab, Error *err);
void sampling_scratch_free(SamplingScratch *s);

/* The next token: applies every active processor to logits (in place; they
 * hold the processed scores afterwards) and picks argmax or draws from the
 * softmax.  Returns the token id, or -1 when sampling finds no token with a
 * finite score (every token banned; HF would fail on the NaN probabilities).
 * Greedy with every score -inf returns 0, as torch.argmax does. */
int32_t sampling_next_token(const SamplingParams *p, float *logits, int vocab,
                            const int32_t *context, size_t n_context, Rng *rng,
                            SamplingScratch *scratch);

/* The same steps one at a time (for tests and for callers that want the
 * processed scores without choosing). */
void sampling_process(const SamplingParams *p, float *logits, int vocab,
                      const int32_t *context, size_t n_context, SamplingScratch *scratch);

/* Each logits processor alone, HF semantics as described above. */
void logits_repetition_penalty(float *logits, int vocab, const int32_t *context,
                               size_t n_context, float penalty, unsigned char *seen);
void logits_no_repeat_ngram(float *logits, int vocab, const int32_t *context,
                            size_t n_context, int ngram_size);
void logits_temperature(float *logits, int vocab, float temperature);
void logits_top_k(float *logits, int vocab, int top_k, float *heap);
void logits_top_p(float *logits, int vocab, double top_p, SamplingPair *pairs);

/* torch.argmax: the first index of the maximum. */
int32_t sampling_argmax(const float *logits, int vocab);
/* One draw from softmax(logits) with rng; -1 when no score is finite. */
int32_t sampling_multinomial(const float *logits, int vocab, Rng *rng);

#endif

/* Deterministic randomness for data order: xoshiro256** seeded through
 * splitmix64, so the same seed gives the same stream on every machine and
 * compiler (only 64-bit integer arithmetic; no libc rand, no floating point
 * in the index draws).  The state is a plain struct of integers that a
 * checkpoint can save and restore as is.
 *
 * Sharding is contiguous: shard k of n holds [begin, end) of the (shuffled)
 * order, the first n_items % n_shards shards one item longer.  Contiguous
 * shards concatenated in rank order give back the whole order, which is what
 * per-rank output files (00000-of-0000N.jsonl) need. */
#ifndef MODPO_SHUFFLE_H
#define MODPO_SHUFFLE_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct {
    uint64_t s[4];
} Rng;

/* Seeds from one 64-bit value (any value, 0 included). */
void rng_seed(Rng *rng, uint64_t seed);
/* An independent stream per (seed, stream), e.g. stream = epoch, so an
 * epoch's order can be recomputed without replaying earlier epochs. */
void rng_seed_stream(Rng *rng, uint64_t seed, uint64_t stream);
uint64_t rng_next(Rng *rng);
/* Uniform in [0, n), unbiased (rejection sampling); n > 0. */
uint64_t rng_below(Rng *rng, uint64_t n);
/* Uniform double in [0, 1) with 53 random bits. */
double rng_uniform(Rng *rng);

/* Fisher-Yates over idx[0..n), drawing from rng. */
void shuffle_indices(size_t *idx, size_t n, Rng *rng);
/* A malloc'd permutation of 0..n-1 (identity then shuffled; rng NULL keeps
 * the identity). */
int shuffle_permutation(size_t n, Rng *rng, size_t **out, Error *err);

/* Shard k of n_shards over n_items: [*begin, *end). */
int shard_range(size_t n_items, int n_shards, int k, size_t *begin, size_t *end, Error *err);

#endif

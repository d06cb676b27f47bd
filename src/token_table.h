/* Private to the tokenizer: growable buffers and open-addressing hash tables
 * (linear probing, power-of-two sizes, at most half full) for piece text ->
 * id, merge pair -> rank, and the code point bigrams found inside pieces.
 * The lookups on the merge loop's hot path are inline. */
#ifndef MODPO_TOKEN_TABLE_H
#define MODPO_TOKEN_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---------------------------------------------------------------- buffers */

/* Bytes, always NUL-terminated once anything is reserved. */
typedef struct {
    char *p;
    size_t n, cap;
} Buf;

typedef struct {
    int32_t *v;
    size_t n, cap;
} IdVec;

int tok_buf_reserve(Buf *b, size_t extra);
int tok_buf_put(Buf *b, const char *s, size_t n);
int tok_ids_push(IdVec *v, int32_t id);

/* ------------------------------------------------------------ hash tables */

/* Piece text -> id.  Slots hold ids; the keys are the tokenizer's pieces. */
typedef struct {
    int32_t *slot;
    size_t mask;
} StrMap;

/* (left id, right id) -> (rank, merged id), for tokenizer.json merges. */
typedef struct {
    uint64_t *key; /* UINT64_MAX marks an empty slot */
    int32_t *rank, *merged;
    size_t mask;
} PairMap;

/* Pairs of adjacent code points found inside some piece (see cut_here in tokenizer_bpe.c). */
typedef struct {
    uint64_t *key; /* UINT64_MAX marks an empty slot */
    size_t mask;
} BigramSet;

/* Slot count (a power of two) for a table of n keys. */
size_t tok_table_size(size_t n);

/* Id of the piece with these bytes (in t->index), or -1. */
int tok_strmap_find(const Tokenizer *t, const char *s, size_t n);
/* Inserts id under its piece text; returns the id already there, if any. */
int tok_strmap_insert(Tokenizer *t, int id);
int tok_strmap_init(Tokenizer *t);

int tok_pairmap_init(PairMap *m, size_t n);
/* A later duplicate overwrites an earlier one, as a Rust HashMap collect does. */
void tok_pairmap_put(PairMap *m, int32_t l, int32_t r, int32_t rank, int32_t merged);

void tok_bigram_add(BigramSet *s, uint64_t k);

static inline uint64_t tok_hash_u64(uint64_t x)
{
    x ^= x >> 33; /* splitmix64 finaliser */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static inline uint64_t tok_pair_key(int32_t l, int32_t r)
{
    return (uint64_t)(uint32_t)l << 32 | (uint32_t)r;
}

static inline bool tok_pairmap_get(const PairMap *m, int32_t l, int32_t r, int32_t *rank,
                                   int32_t *merged)
{
    if (!m->key) return false;
    uint64_t k = tok_pair_key(l, r);
    for (size_t i = tok_hash_u64(k) & m->mask; m->key[i] != UINT64_MAX; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
    }
    return false;
}

static inline uint64_t tok_bigram_key(uint32_t a, uint32_t b) { return (uint64_t)a << 21 | b; }

static inline bool tok_bigram_has(const BigramSet *s, uint64_t k)
{
    for (size_t i = tok_hash_u64(k) & s->mask; s->key[i] != UINT64_MAX; i = (i + 1) & s->mask)
        if (s->key[i] == k) return true;
    return false;
}

#endif

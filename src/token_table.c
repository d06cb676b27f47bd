/* The tokenizer's growable buffers and hash tables (see token_table.h). */
#include <stdlib.h>
#include <string.h>

#include "token_table.h"
#include "tokenizer_internal.h"

/* ---------------------------------------------------------------- buffers */

int tok_buf_reserve(Buf *b, size_t extra)
{
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

int tok_buf_put(Buf *b, const char *s, size_t n)
{
    if (tok_buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int tok_ids_push(IdVec *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p) return -1;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return 0;
}

/* ------------------------------------------------------------ hash tables */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

size_t tok_table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

int tok_strmap_find(const Tokenizer *t, const char *s, size_t n)
{
    const StrMap *m = &t->index;
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0) return id;
    }
}

int tok_strmap_insert(Tokenizer *t, int id)
{
    StrMap *m = &t->index;
    const char *s = t->piece[id];
    size_t n = t->piece_len[id];
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t cur = m->slot[i];
        if (cur < 0) {
            m->slot[i] = id;
            return -1;
        }
        if (t->piece_len[cur] == n && memcmp(t->piece[cur], s, n) == 0) return cur;
    }
}

int tok_strmap_init(Tokenizer *t)
{
    size_t cap = tok_table_size((size_t)t->n);
    t->index.slot = malloc(cap * sizeof *t->index.slot);
    if (!t->index.slot) return -1;
    memset(t->index.slot, 0xff, cap * sizeof *t->index.slot);
    t->index.mask = cap - 1;
    return 0;
}

int tok_pairmap_init(PairMap *m, size_t n)
{
    size_t cap = tok_table_size(n);
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return -1;
    memset(m->key, 0xff, cap * sizeof *m->key);
    m->mask = cap - 1;
    return 0;
}

void tok_pairmap_put(PairMap *m, int32_t l, int32_t r, int32_t rank, int32_t merged)
{
    uint64_t k = tok_pair_key(l, r);
    size_t i = tok_hash_u64(k) & m->mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & m->mask;
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

void tok_bigram_add(BigramSet *s, uint64_t k)
{
    size_t i = tok_hash_u64(k) & s->mask;
    while (s->key[i] != UINT64_MAX && s->key[i] != k) i = (i + 1) & s->mask;
    s->key[i] = k;
}

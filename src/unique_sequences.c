#include "unique_sequences.h"

#include <stdlib.h>
#include <string.h>

static uint64_t fnv1a(uint64_t h, const void *data, size_t bytes)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t sequence_hash(const Sequence *s)
{
    uint64_t h = fnv1a(0xcbf29ce484222325ULL, &s->len, sizeof s->len);
    return fnv1a(h, s->tokens, (size_t)s->len * sizeof *s->tokens);
}

static int tokens_equal(const Sequence *a, const Sequence *b)
{
    return a->len == b->len && memcmp(a->tokens, b->tokens, (size_t)a->len * sizeof *a->tokens) == 0;
}

/* Open addressing with linear probing; slot values are distinct-sequence
 * indices + 1 (0: empty).  At most half full, so probes stay short. */
typedef struct {
    size_t *slots;
    uint64_t *hashes; /* [distinct] each distinct sequence's hash, to skip most comparisons */
    size_t mask;
    SequenceHash hash;
} SeqTable;

static int table_init(SeqTable *t, size_t n_keys, SequenceHash hash)
{
    size_t cap = 16;
    while (cap < 2 * n_keys) cap *= 2;
    t->slots = calloc(cap, sizeof *t->slots);
    t->hashes = malloc((n_keys + 1) * sizeof *t->hashes);
    t->mask = cap - 1;
    t->hash = hash;
    return t->slots && t->hashes ? 0 : -1;
}

static void table_free(SeqTable *t)
{
    free(t->slots);
    free(t->hashes);
}

/* The index of s in u->seqs, appending it when it is new. */
static size_t intern(SeqTable *t, UniqueSequences *u, const Sequence *s)
{
    uint64_t h = t->hash(s);
    size_t i = (size_t)h & t->mask;
    for (; t->slots[i]; i = (i + 1) & t->mask) {
        size_t k = t->slots[i] - 1;
        if (t->hashes[k] == h && tokens_equal(u->seqs[k], s)) return k;
    }
    size_t k = u->n++;
    u->seqs[k] = s;
    t->hashes[k] = h;
    t->slots[i] = k + 1;
    return k;
}

/* A pair side: its distinct sequence and label start; sorted by both. */
typedef struct {
    size_t seq, side; /* side: 2 * pair (+ 1 for rejected) */
    int32_t from;
} SideKey;

static int side_key_cmp(const void *x, const void *y)
{
    const SideKey *a = x, *b = y;
    if (a->seq != b->seq) return a->seq < b->seq ? -1 : 1;
    if (a->from != b->from) return a->from < b->from ? -1 : 1;
    return 0;
}

/* Numbers the distinct (sequence, start) pairs in sequence order, starts
 * ascending, and points every side at its own. */
static void assign_sums(UniqueSequences *u, SideKey *keys, size_t n_keys)
{
    qsort(keys, n_keys, sizeof *keys, side_key_cmp);
    size_t sum = 0;
    for (size_t i = 0; i < n_keys; i++) {
        int new_seq = i == 0 || keys[i].seq != keys[i - 1].seq;
        if (new_seq) u->sum_base[keys[i].seq] = sum;
        if (new_seq || keys[i].from != keys[i - 1].from) u->sum_from[sum++] = keys[i].from;
        size_t *dst = keys[i].side % 2 ? u->rejected : u->chosen;
        dst[keys[i].side / 2] = sum - 1;
    }
    u->n_sums = sum;
    u->sum_base[u->n] = sum;
}

int unique_sequences_build_hashed(const PairSequences *ps, SequenceHash hash, UniqueSequences *out,
                                  Error *err)
{
    memset(out, 0, sizeof *out);
    size_t slots = 2 * ps->n;
    SeqTable t;
    SideKey *keys = malloc((slots + 1) * sizeof *keys);
    out->seqs = malloc((slots + 1) * sizeof *out->seqs);
    out->sum_base = malloc((slots + 1) * sizeof *out->sum_base);
    out->sum_from = malloc((slots + 1) * sizeof *out->sum_from);
    out->chosen = malloc((ps->n + 1) * sizeof *out->chosen);
    out->rejected = malloc((ps->n + 1) * sizeof *out->rejected);
    int ok = table_init(&t, slots, hash) == 0 && keys && out->seqs && out->sum_base &&
             out->sum_from && out->chosen && out->rejected;
    if (ok) {
        out->n_pairs = ps->n;
        for (size_t i = 0; i < slots; i++) {
            const Sequence *s = i % 2 ? &ps->rejected[i / 2] : &ps->chosen[i / 2];
            keys[i] = (SideKey){ intern(&t, out, s), i, s->completion_start };
        }
        assign_sums(out, keys, slots);
    }
    table_free(&t);
    free(keys);
    if (ok) return 0;
    unique_sequences_free(out);
    return error_set(err, "out of memory for the distinct sequences of %zu pairs", ps->n);
}

int unique_sequences_build(const PairSequences *ps, UniqueSequences *out, Error *err)
{
    return unique_sequences_build_hashed(ps, sequence_hash, out, err);
}

void unique_sequences_free(UniqueSequences *u)
{
    free(u->seqs);
    free(u->sum_base);
    free(u->sum_from);
    free(u->chosen);
    free(u->rejected);
    memset(u, 0, sizeof *u);
}

/* Llama 2 tokenizer: SentencePiece BPE with byte fallback.
 *
 * Two sources, two merge rules, one engine:
 *  - tokenizer.model (sentencepiece protobuf): two adjacent symbols merge when
 *    their concatenation is a piece; the pair whose piece has the highest score
 *    goes first, ties to the leftmost (sentencepiece's bpe_model.cc).  Symbols
 *    left over that are not pieces become <0xNN> byte pieces.
 *  - tokenizer.json (Hugging Face): characters missing from the vocabulary
 *    become byte pieces up front, then listed merges apply by rank, lowest
 *    first, ties to the leftmost (tokenizers' BPE::merge_word).
 * For Llama, whose merges the converter lists in score order, both give the
 * same ids; each path is exact for its own file format.
 *
 * Normalisation is a short list of steps (NormOp) read from either format:
 * for Llama, "prepend U+2581 to non-empty text, then replace ' ' by U+2581".
 *
 * The Tokenizer is immutable after loading; encode and decode allocate their
 * scratch space per call, so one tokenizer may be shared between threads. */
#include "tokenizer.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <jansson.h>

#include "sentencepiece_model.h"
#include "utf8.h"

#define METASPACE "\xE2\x96\x81" /* U+2581, sentencepiece's visible space */
#define METASPACE_LEN 3

/* Piece types: sentencepiece's enum, also used for tokenizer.json pieces. */
enum {
    T_NORMAL = SPM_NORMAL,
    T_UNKNOWN = SPM_UNKNOWN,
    T_CONTROL = SPM_CONTROL,
    T_USER = SPM_USER_DEFINED,
    T_UNUSED = SPM_UNUSED,
    T_BYTE = SPM_BYTE,
};

/* ---------------------------------------------------------------- buffers */

typedef struct {
    char *p;
    size_t n, cap;
} Buf;

static int buf_reserve(Buf *b, size_t extra)
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

static int buf_put(Buf *b, const char *s, size_t n)
{
    if (buf_reserve(b, n)) return -1;
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

typedef struct {
    int32_t *v;
    size_t n, cap;
} IdVec;

static int ids_push(IdVec *v, int32_t id)
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

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33; /* splitmix64 finaliser */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    return x ^ (x >> 33);
}

static size_t table_size(size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n) cap *= 2;
    return cap;
}

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

/* Pairs of adjacent code points found inside some piece (see cut_here). */
typedef struct {
    uint64_t *key; /* UINT64_MAX marks an empty slot */
    size_t mask;
} BigramSet;

/* One normalisation step, in the order the file lists them. */
enum { OP_PREPEND, OP_REPLACE, OP_REPLACE_PREFIX, OP_STRIP_SPACES, OP_COLLAPSE_SPACES, OP_METASPACE };
enum { SCHEME_ALWAYS, SCHEME_FIRST, SCHEME_NEVER };

typedef struct {
    int kind;
    char *a, *b; /* prepend text / pattern / replacement char; replacement content */
    size_t a_len, b_len;
    int scheme; /* OP_METASPACE */
    bool split; /* OP_METASPACE: split words before each replacement char */
} NormOp;

struct Tokenizer {
    int n;
    char **piece;
    uint32_t *piece_len;
    float *score;
    uint8_t *type;
    StrMap index;
    int byte_id[256];
    int unk_id, bos_id, eos_id;
    bool byte_fallback;
    bool rank_merges;    /* tokenizer.json rules (see the top of this file) */
    bool fuse_unk;       /* tokenizer.json: consecutive unknown chars give one unk */
    bool ignore_merges;  /* tokenizer.json: a word that is a piece is kept whole */
    bool drop_unknown;   /* tokenizer.json without unk_token: unknown chars vanish */
    PairMap merges;
    int32_t (*merge_list)[2]; /* tokenizer.json merges in rank order, for saving */
    size_t n_merges;
    NormOp *ops;
    size_t n_ops;
    bool strip_dummy_prefix; /* decode drops the first piece's leading U+2581 */
    bool strip_all_leading;  /* ... and that of every piece before any text */
    int32_t *user_ids;       /* user-defined pieces: matched whole, never merged */
    size_t n_user;
    bool has_unused;
    char *unk_surface;
    BigramSet bigrams; /* empty (key NULL): never cut the text */
};

static int strmap_find(const Tokenizer *t, const char *s, size_t n)
{
    const StrMap *m = &t->index;
    for (size_t i = hash_bytes(s, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) return -1;
        if (t->piece_len[id] == n && memcmp(t->piece[id], s, n) == 0) return id;
    }
}

/* Inserts id under its piece text; returns the id already there, if any. */
static int strmap_insert(Tokenizer *t, int id)
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

static int strmap_init(Tokenizer *t)
{
    size_t cap = table_size((size_t)t->n);
    t->index.slot = malloc(cap * sizeof *t->index.slot);
    if (!t->index.slot) return -1;
    memset(t->index.slot, 0xff, cap * sizeof *t->index.slot);
    t->index.mask = cap - 1;
    return 0;
}

static uint64_t pair_key(int32_t l, int32_t r) { return (uint64_t)(uint32_t)l << 32 | (uint32_t)r; }

static int pairmap_init(PairMap *m, size_t n)
{
    size_t cap = table_size(n);
    m->key = malloc(cap * sizeof *m->key);
    m->rank = malloc(cap * sizeof *m->rank);
    m->merged = malloc(cap * sizeof *m->merged);
    if (!m->key || !m->rank || !m->merged) return -1;
    memset(m->key, 0xff, cap * sizeof *m->key);
    m->mask = cap - 1;
    return 0;
}

/* A later duplicate overwrites an earlier one, as a Rust HashMap collect does. */
static void pairmap_put(PairMap *m, int32_t l, int32_t r, int32_t rank, int32_t merged)
{
    uint64_t k = pair_key(l, r);
    size_t i = hash_u64(k) & m->mask;
    while (m->key[i] != UINT64_MAX && m->key[i] != k) i = (i + 1) & m->mask;
    m->key[i] = k;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

static bool pairmap_get(const PairMap *m, int32_t l, int32_t r, int32_t *rank, int32_t *merged)
{
    if (!m->key) return false;
    uint64_t k = pair_key(l, r);
    for (size_t i = hash_u64(k) & m->mask; m->key[i] != UINT64_MAX; i = (i + 1) & m->mask) {
        if (m->key[i] == k) {
            *rank = m->rank[i];
            *merged = m->merged[i];
            return true;
        }
    }
    return false;
}

static uint64_t bigram_key(uint32_t a, uint32_t b) { return (uint64_t)a << 21 | b; }

static void bigram_add(BigramSet *s, uint64_t k)
{
    size_t i = hash_u64(k) & s->mask;
    while (s->key[i] != UINT64_MAX && s->key[i] != k) i = (i + 1) & s->mask;
    s->key[i] = k;
}

static bool bigram_has(const BigramSet *s, uint64_t k)
{
    for (size_t i = hash_u64(k) & s->mask; s->key[i] != UINT64_MAX; i = (i + 1) & s->mask)
        if (s->key[i] == k) return true;
    return false;
}

/* ------------------------------------------------------- life cycle, info */

static Tokenizer *tokenizer_alloc(int n)
{
    Tokenizer *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->n = n;
    t->piece = calloc((size_t)n, sizeof *t->piece);
    t->piece_len = calloc((size_t)n, sizeof *t->piece_len);
    t->score = calloc((size_t)n, sizeof *t->score);
    t->type = calloc((size_t)n, sizeof *t->type);
    t->unk_id = t->bos_id = t->eos_id = -1;
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    if (!t->piece || !t->piece_len || !t->score || !t->type) {
        tokenizer_free(t);
        return NULL;
    }
    return t;
}

void tokenizer_free(Tokenizer *t)
{
    if (!t) return;
    if (t->piece)
        for (int i = 0; i < t->n; i++) free(t->piece[i]);
    free(t->piece);
    free(t->piece_len);
    free(t->score);
    free(t->type);
    free(t->index.slot);
    free(t->merges.key);
    free(t->merges.rank);
    free(t->merges.merged);
    free(t->merge_list);
    free(t->bigrams.key);
    for (size_t i = 0; i < t->n_ops; i++) {
        free(t->ops[i].a);
        free(t->ops[i].b);
    }
    free(t->ops);
    free(t->user_ids);
    free(t->unk_surface);
    free(t);
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos_id; }
int tokenizer_unk_id(const Tokenizer *t) { return t->unk_id; }

const char *tokenizer_piece(const Tokenizer *t, int id)
{
    return id >= 0 && id < t->n ? t->piece[id] : NULL;
}

int tokenizer_piece_id(const Tokenizer *t, const char *piece)
{
    return strmap_find(t, piece, strlen(piece));
}

static int set_piece(Tokenizer *t, int id, const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (!p) return -1;
    memcpy(p, s, n);
    p[n] = 0;
    free(t->piece[id]);
    t->piece[id] = p;
    t->piece_len[id] = (uint32_t)n;
    return 0;
}

/* "<0xNN>" with two upper-case hex digits, as byte fallback spells them. */
static int byte_piece_value(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *hi = s[3] ? strchr(hex, s[3]) : NULL;
    const char *lo = s[4] ? strchr(hex, s[4]) : NULL;
    if (!hi || !lo) return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

static bool is_mergeable(int type) { return type == T_NORMAL || type == T_USER || type == T_UNUSED; }

/* ----------------------------------------------------------- normalisation */

static bool starts_with(const Buf *b, const char *s, size_t n)
{
    return b->n >= n && memcmp(b->p, s, n) == 0;
}

static int op_prepend(Buf *b, const char *s, size_t n)
{
    if (b->n == 0) return 0; /* empty text stays empty, as in both libraries */
    if (buf_reserve(b, n)) return -1;
    memmove(b->p + n, b->p, b->n + 1);
    memcpy(b->p, s, n);
    b->n += n;
    return 0;
}

static int op_replace(Buf *b, const char *pat, size_t pn, const char *with, size_t wn)
{
    if (pn == 0 || b->n < pn) return 0;
    Buf out = {0};
    if (buf_reserve(&out, b->n)) return -1;
    size_t i = 0;
    while (i < b->n) {
        if (i + pn <= b->n && memcmp(b->p + i, pat, pn) == 0) {
            if (buf_put(&out, with, wn)) goto oom;
            i += pn;
        } else {
            if (buf_put(&out, b->p + i, 1)) goto oom;
            i++;
        }
    }
    free(b->p);
    *b = out;
    return 0;
oom:
    free(out.p);
    return -1;
}

static int op_replace_prefix(Buf *b, const char *pat, size_t pn, const char *with, size_t wn)
{
    if (b->n < pn || memcmp(b->p, pat, pn) != 0) return 0;
    size_t rest = b->n - pn;
    if (wn > pn && buf_reserve(b, wn - pn)) return -1;
    memmove(b->p + wn, b->p + pn, rest + 1);
    memcpy(b->p, with, wn);
    b->n = wn + rest;
    return 0;
}

/* sentencepiece's remove_extra_whitespaces: only ' ' counts as whitespace. */
static void op_strip_spaces(Buf *b)
{
    size_t s = 0, e = b->n;
    while (s < e && b->p[s] == ' ') s++;
    while (e > s && b->p[e - 1] == ' ') e--;
    memmove(b->p, b->p + s, e - s);
    b->n = e - s;
    if (b->p) b->p[b->n] = 0;
}

static void op_collapse_spaces(Buf *b)
{
    size_t w = 0;
    for (size_t i = 0; i < b->n; i++)
        if (!(b->p[i] == ' ' && w > 0 && b->p[w - 1] == ' ')) b->p[w++] = b->p[i];
    b->n = w;
    if (b->p) b->p[b->n] = 0;
}

/* Hugging Face's Metaspace pre-tokenizer: unlike sentencepiece it does not
 * add the prefix when the text already starts with the replacement. */
static int op_metaspace(Buf *b, const NormOp *op)
{
    if (op_replace(b, " ", 1, op->a, op->a_len)) return -1;
    if (op->scheme != SCHEME_NEVER && !starts_with(b, op->a, op->a_len))
        return op_prepend(b, op->a, op->a_len);
    return 0;
}

/* Copies text, replacing each byte that is not part of a valid UTF-8
 * character by U+FFFD, as sentencepiece's normalizer does. */
static int sanitize_utf8(const char *s, size_t n, Buf *out)
{
    if (buf_reserve(out, n)) return -1;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_decode(s + i, n - i, NULL);
        int rc = k ? buf_put(out, s + i, k) : buf_put(out, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
        if (rc) return -1;
        i += k ? k : 1;
    }
    return 0;
}

static int normalize(const Tokenizer *t, const char *text, size_t len, Buf *out)
{
    if (sanitize_utf8(text, len, out)) return -1;
    for (size_t i = 0; i < t->n_ops && out->n > 0; i++) {
        const NormOp *op = &t->ops[i];
        int rc = 0;
        switch (op->kind) {
        case OP_PREPEND: rc = op_prepend(out, op->a, op->a_len); break;
        case OP_REPLACE: rc = op_replace(out, op->a, op->a_len, op->b, op->b_len); break;
        case OP_REPLACE_PREFIX:
            rc = op_replace_prefix(out, op->a, op->a_len, op->b, op->b_len);
            break;
        case OP_STRIP_SPACES: op_strip_spaces(out); break;
        case OP_COLLAPSE_SPACES: op_collapse_spaces(out); break;
        case OP_METASPACE: rc = op_metaspace(out, op); break;
        }
        if (rc) return -1;
    }
    return 0;
}

/* The Metaspace step whose split flag cuts the text into words, if any. */
static const NormOp *split_op(const Tokenizer *t)
{
    for (size_t i = 0; i < t->n_ops; i++)
        if (t->ops[i].kind == OP_METASPACE && t->ops[i].split && t->ops[i].a_len > 0)
            return &t->ops[i];
    return NULL;
}

/* -------------------------------------------------------------------- BPE */

typedef struct {
    uint32_t start, len; /* bytes of the normalised text; len 0 = merged away */
    int32_t prev, next;
    int32_t id;          /* tokenizer.json: current id; sentencepiece: frozen id or -1 */
    bool frozen;         /* user-defined piece: never merged */
} Sym;

/* A queued merge.  key orders the queue: the high half ranks the merge
 * (lower first), the low half is the left symbol's index (leftmost first). */
typedef struct {
    uint64_t key;
    int32_t left, right;
    uint32_t left_len, right_len; /* symbol lengths when queued, to spot stale entries */
    int32_t merged;
} Cand;

/* sentencepiece remembers how an unused piece was formed so that it can be
 * split again afterwards (bpe_model.cc's rev_merge); last write wins. */
typedef struct {
    int32_t merged;
    uint32_t ls, ll, rs, rl;
} RevMerge;

typedef struct {
    const Tokenizer *t;
    const char *text; /* normalised text */
    Sym *sym;
    size_t n_sym;
    Cand *heap;
    size_t n_heap, cap_heap;
    RevMerge *rev;
    size_t n_rev, cap_rev;
    IdVec *out;
    bool prev_unk; /* sentencepiece: fuse runs of unknown pieces without byte fallback */
} Work;

static bool cand_before(const Cand *a, const Cand *b) { return a->key < b->key; }

/* Maps a score to 32 bits that sort in the opposite order (higher score ->
 * smaller value), so that one integer comparison orders the queue. */
static uint32_t score_rank(float score)
{
    if (score == 0) score = 0; /* -0.0 and 0.0 compare equal, so must map alike */
    uint32_t bits;
    memcpy(&bits, &score, sizeof bits);
    uint32_t ordered = (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
    return ~ordered;
}

static int heap_push(Work *w, Cand c)
{
    if (w->n_heap == w->cap_heap) {
        size_t cap = w->cap_heap ? w->cap_heap * 2 : 64;
        Cand *h = realloc(w->heap, cap * sizeof *h);
        if (!h) return -1;
        w->heap = h;
        w->cap_heap = cap;
    }
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!cand_before(&c, &w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = c;
    return 0;
}

static Cand heap_pop(Work *w)
{
    Cand top = w->heap[0];
    Cand last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && cand_before(&w->heap[c + 1], &w->heap[c])) c++;
        if (!cand_before(&w->heap[c], &last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0) w->heap[i] = last;
    return top;
}

static int remember_unused(Work *w, int32_t merged, const Sym *l, const Sym *r)
{
    if (w->n_rev == w->cap_rev) {
        size_t cap = w->cap_rev ? w->cap_rev * 2 : 16;
        RevMerge *p = realloc(w->rev, cap * sizeof *p);
        if (!p) return -1;
        w->rev = p;
        w->cap_rev = cap;
    }
    w->rev[w->n_rev++] = (RevMerge){merged, l->start, l->len, r->start, r->len};
    return 0;
}

/* Queues the merge of symbols a and b if the model has one (sentencepiece's
 * MaybeAddNewSymbolPair / tokenizers' merge_word). */
static int maybe_add_pair(Work *w, int32_t a, int32_t b)
{
    if (a < 0 || b < 0) return 0;
    const Tokenizer *t = w->t;
    const Sym *l = &w->sym[a], *r = &w->sym[b];
    if (l->frozen || r->frozen) return 0;
    Cand c = {0, a, b, l->len, r->len, -1};
    uint32_t rank;
    if (t->rank_merges) {
        int32_t r32;
        if (l->id < 0 || r->id < 0 || !pairmap_get(&t->merges, l->id, r->id, &r32, &c.merged))
            return 0;
        rank = (uint32_t)r32;
    } else {
        c.merged = strmap_find(t, w->text + l->start, (size_t)l->len + r->len);
        if (c.merged < 0 || !is_mergeable(t->type[c.merged])) return 0;
        rank = score_rank(t->score[c.merged]);
        if (t->type[c.merged] == T_UNUSED && remember_unused(w, c.merged, l, r)) return -1;
    }
    c.key = (uint64_t)rank << 32 | (uint32_t)a;
    return heap_push(w, c);
}

/* Merges symbols [first, end), a list of their own. */
static int run_merges(Work *w, size_t first, size_t end)
{
    w->sym[first].prev = -1;
    w->sym[end - 1].next = -1;
    w->n_heap = 0;
    for (size_t i = first + 1; i < end; i++)
        if (maybe_add_pair(w, (int32_t)i - 1, (int32_t)i)) return -1;
    while (w->n_heap > 0) {
        Cand c = heap_pop(w);
        Sym *l = &w->sym[c.left], *r = &w->sym[c.right];
        /* A symbol only grows by absorbing its right neighbour, so unchanged
         * lengths mean the queued pair is still the current one. */
        if (l->len == 0 || r->len == 0 || l->len != c.left_len || r->len != c.right_len ||
            l->next != c.right)
            continue;
        l->len += r->len;
        l->id = c.merged;
        l->next = r->next;
        if (r->next >= 0) w->sym[r->next].prev = c.left;
        r->len = 0;
        if (maybe_add_pair(w, l->prev, c.left) || maybe_add_pair(w, c.left, l->next)) return -1;
    }
    return 0;
}

static void push_sym(Work *w, uint32_t start, uint32_t len, int32_t id, bool frozen)
{
    int32_t i = (int32_t)w->n_sym++;
    w->sym[i] = (Sym){start, len, i - 1, -1, id, frozen};
    if (i > 0) w->sym[i - 1].next = i;
}

/* Longest user-defined piece at s, or -1. */
static int match_user(const Tokenizer *t, const char *s, size_t n, size_t *len)
{
    int best = -1;
    *len = 0;
    for (size_t i = 0; i < t->n_user; i++) {
        int id = t->user_ids[i];
        size_t pl = t->piece_len[id];
        if (pl > *len && pl <= n && memcmp(t->piece[id], s, pl) == 0) {
            best = id;
            *len = pl;
        }
    }
    return best;
}

/* tokenizer.json: a character without a piece becomes its bytes' pieces
 * before merging, or the unknown id (fused with a preceding one). */
static void split_unknown_char_hf(Work *w, uint32_t pos, uint32_t n)
{
    const Tokenizer *t = w->t;
    const unsigned char *u = (const unsigned char *)w->text + pos;
    bool have_bytes = t->byte_fallback;
    for (uint32_t k = 0; k < n && have_bytes; k++) have_bytes = t->byte_id[u[k]] >= 0;
    if (have_bytes) {
        for (uint32_t k = 0; k < n; k++) push_sym(w, pos + k, 1, t->byte_id[u[k]], false);
        return;
    }
    if (t->drop_unknown || t->unk_id < 0) return;
    Sym *last = w->n_sym ? &w->sym[w->n_sym - 1] : NULL;
    if (t->fuse_unk && last && last->id == t->unk_id && !last->frozen &&
        last->start + last->len == pos) {
        last->len += n;
        return;
    }
    push_sym(w, pos, n, t->unk_id, false);
}

static void initial_symbols(Work *w, uint32_t start, uint32_t end)
{
    const Tokenizer *t = w->t;
    uint32_t pos = start;
    while (pos < end) {
        size_t ulen;
        int uid = t->n_user ? match_user(t, w->text + pos, end - pos, &ulen) : -1;
        if (uid >= 0) {
            push_sym(w, pos, (uint32_t)ulen, uid, true);
            pos += (uint32_t)ulen;
            continue;
        }
        uint32_t n = (uint32_t)utf8_lead_len((unsigned char)w->text[pos]);
        if (n > end - pos) n = end - pos;
        if (!t->rank_merges) {
            push_sym(w, pos, n, -1, false);
        } else {
            int id = strmap_find(t, w->text + pos, n);
            if (id >= 0)
                push_sym(w, pos, n, id, false);
            else
                split_unknown_char_hf(w, pos, n);
        }
        pos += n;
    }
}

static const RevMerge *find_rev(const Work *w, int32_t id)
{
    for (size_t i = w->n_rev; i-- > 0;)
        if (w->rev[i].merged == id) return &w->rev[i];
    return NULL;
}

/* sentencepiece's output step for one final symbol: split unused pieces back
 * into their parts, then map text to ids, unknown text to bytes or unk. */
static int emit_sp(Work *w, uint32_t start, uint32_t len, int depth)
{
    const Tokenizer *t = w->t;
    int id = strmap_find(t, w->text + start, len);
    if (id >= 0 && t->type[id] == T_UNUSED && depth < 64) {
        const RevMerge *rv = find_rev(w, id);
        if (rv) return emit_sp(w, rv->ls, rv->ll, depth + 1) || emit_sp(w, rv->rs, rv->rl, depth + 1);
    }
    if (id < 0) id = t->unk_id;
    bool is_unk = id >= 0 && t->type[id] == T_UNKNOWN;
    if (is_unk && t->byte_fallback) {
        for (uint32_t k = 0; k < len; k++) {
            int b = t->byte_id[(unsigned char)w->text[start + k]];
            if (ids_push(w->out, b >= 0 ? b : t->unk_id)) return -1;
        }
        w->prev_unk = false;
        return 0;
    }
    if (is_unk && w->prev_unk) return 0;
    w->prev_unk = is_unk;
    return id >= 0 ? ids_push(w->out, id) : 0;
}

/* A symbol that is one character exactly as the text has it. */
static bool plain_char(const Work *w, const Sym *s, uint32_t *cp)
{
    if (s->frozen) return false;
    /* tokenizer.json: byte-fallback and unk symbols merge under other names */
    if (w->t->rank_merges && (s->id < 0 || w->t->piece_len[s->id] != s->len)) return false;
    return utf8_decode(w->text + s->start, s->len, cp) == s->len;
}

/* True when no merge can ever join symbols i-1 and i: any piece spanning
 * them would contain their two characters side by side, and no piece does.
 * Cutting the text there and merging each part alone gives the same result,
 * and keeps the queue small: on one long text the queue's cache misses
 * otherwise dominate.  Frozen (user-defined) symbols never merge at all. */
static bool cut_here(const Work *w, size_t i)
{
    const Sym *a = &w->sym[i - 1], *b = &w->sym[i];
    if (a->frozen || b->frozen) return true;
    uint32_t x, y;
    if (!w->t->bigrams.key || !plain_char(w, a, &x) || !plain_char(w, b, &y)) return false;
    return !bigram_has(&w->t->bigrams, bigram_key(x, y));
}

static int emit_segment(Work *w, size_t first)
{
    const Tokenizer *t = w->t;
    for (int32_t i = (int32_t)first; i >= 0; i = w->sym[i].next) {
        const Sym *s = &w->sym[i];
        int rc = (t->rank_merges || s->frozen) ? ids_push(w->out, s->id)
                                                : emit_sp(w, s->start, s->len, 0);
        if (rc) return -1;
    }
    return 0;
}

static int encode_word(Work *w, uint32_t start, uint32_t end)
{
    const Tokenizer *t = w->t;
    if (t->ignore_merges) {
        int id = strmap_find(t, w->text + start, end - start);
        if (id >= 0) return ids_push(w->out, id);
    }
    w->n_sym = 0;
    w->n_rev = 0;
    initial_symbols(w, start, end);
    size_t first = 0;
    for (size_t i = 1; i <= w->n_sym; i++) {
        if (i < w->n_sym && !cut_here(w, i)) continue;
        if (run_merges(w, first, i) || emit_segment(w, first)) return -1;
        first = i;
    }
    return 0;
}

static int encode_normalized(Work *w, size_t n)
{
    const NormOp *sp = split_op(w->t);
    if (!sp) return encode_word(w, 0, (uint32_t)n);
    /* Metaspace split=true: every replacement char starts a new word. */
    size_t start = 0;
    for (size_t i = 1; i <= n; i++) {
        bool cut = i == n || (i + sp->a_len <= n && memcmp(w->text + i, sp->a, sp->a_len) == 0);
        if (!cut) continue;
        if (encode_word(w, (uint32_t)start, (uint32_t)i)) return -1;
        start = i;
    }
    return 0;
}

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                     size_t *n_ids, Error *err)
{
    *ids = NULL;
    *n_ids = 0;
    Buf norm = {0};
    IdVec out = {0};
    Work w = {.t = t, .out = &out};
    int rc = -1;
    if (normalize(t, text, len, &norm)) goto oom;
    if (norm.n > UINT32_MAX / 2) {
        error_set(err, "text of %zu bytes is too long to tokenize", len);
        goto done;
    }
    w.text = norm.p;
    w.sym = malloc((norm.n ? norm.n : 1) * sizeof *w.sym);
    if (!w.sym) goto oom;
    if (norm.n && encode_normalized(&w, norm.n)) goto oom;
    if (out.n == 0) { /* callers may always free(*ids) */
        free(out.v);
        out.v = malloc(sizeof *out.v);
        if (!out.v) goto oom;
    }
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    rc = 0;
    goto done;
oom:
    error_set(err, "out of memory while tokenizing %zu bytes", len);
done:
    free(out.v);
    free(norm.p);
    free(w.sym);
    free(w.heap);
    free(w.rev);
    return rc;
}

/* ----------------------------------------------------------------- decode */

/* Byte pieces are collected and turned into text together; bytes that do not
 * form valid UTF-8 become U+FFFD one by one (sentencepiece's ProcessBytePieces). */
static int flush_bytes(Buf *out, Buf *bytes)
{
    size_t i = 0;
    while (i < bytes->n) {
        size_t k = utf8_decode(bytes->p + i, bytes->n - i, NULL);
        int rc = k ? buf_put(out, bytes->p + i, k) : buf_put(out, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
        if (rc) return -1;
        i += k ? k : 1;
    }
    bytes->n = 0;
    return 0;
}

/* Where decoding stands on the dummy prefix (sentencepiece >= 0.2's rule):
 * the first visible piece loses one leading U+2581, and no later piece does,
 * so "▁" "▁x" decodes to " x".  After remove_extra_whitespaces every leading
 * U+2581 piece loses it, since the encoder dropped all leading spaces. */
typedef struct {
    bool at_start; /* is_bos_ws */
    bool seen;     /* bos_ws_seen: the previous piece gave up its U+2581 */
} PrefixState;

static int decode_piece(const Tokenizer *t, int id, Buf *out, PrefixState *ps)
{
    if (ps->seen || out->n > 0) ps->at_start = false;
    ps->seen = false;
    if (t->type[id] == T_CONTROL) return 0;
    if (t->type[id] == T_UNKNOWN) return buf_put(out, t->unk_surface, strlen(t->unk_surface));
    const char *p = t->piece[id];
    size_t n = t->piece_len[id];
    if (ps->at_start && t->strip_dummy_prefix && n >= METASPACE_LEN &&
        memcmp(p, METASPACE, METASPACE_LEN) == 0) {
        p += METASPACE_LEN;
        n -= METASPACE_LEN;
        ps->seen = !t->strip_all_leading;
    }
    for (size_t i = 0; i < n;) {
        if (i + METASPACE_LEN <= n && memcmp(p + i, METASPACE, METASPACE_LEN) == 0) {
            if (buf_put(out, " ", 1)) return -1;
            i += METASPACE_LEN;
        } else {
            if (buf_put(out, p + i, 1)) return -1;
            i++;
        }
    }
    return 0;
}

int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n_ids, char **text, Error *err)
{
    size_t len;
    return tokenizer_decode_len(t, ids, n_ids, text, &len, err);
}

int tokenizer_decode_len(const Tokenizer *t, const int32_t *ids, size_t n_ids, char **text,
                         size_t *len, Error *err)
{
    *text = NULL;
    *len = 0;
    Buf out = {0}, bytes = {0};
    PrefixState ps = {true, false};
    if (buf_reserve(&out, 16)) goto oom;
    out.p[0] = 0; /* no ids: empty string */
    for (size_t i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n) {
            free(out.p);
            free(bytes.p);
            return error_set(err, "token id %d at position %zu is outside the vocabulary [0, %d)",
                             id, i, t->n);
        }
        if (t->type[id] == T_BYTE) {
            char b = (char)byte_piece_value(t->piece[id], t->piece_len[id]);
            if (buf_put(&bytes, &b, 1)) goto oom;
            continue;
        }
        if (flush_bytes(&out, &bytes) || decode_piece(t, id, &out, &ps)) goto oom;
    }
    if (flush_bytes(&out, &bytes)) goto oom;
    free(bytes.p);
    *text = out.p;
    *len = out.n;
    return 0;
oom:
    free(out.p);
    free(bytes.p);
    return error_set(err, "out of memory while decoding %zu ids", n_ids);
}

/* ------------------------------------------------------ loading: shared */

static int add_op(Tokenizer *t, NormOp op)
{
    NormOp *p = realloc(t->ops, (t->n_ops + 1) * sizeof *p);
    if (!p) return -1;
    t->ops = p;
    t->ops[t->n_ops++] = op;
    return 0;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

static int add_text_op(Tokenizer *t, int kind, const char *a, size_t an, const char *b, size_t bn)
{
    NormOp op = {.kind = kind, .a = dupn(a, an), .a_len = an};
    if (b) {
        op.b = dupn(b, bn);
        op.b_len = bn;
    }
    if (!op.a || (b && !op.b) || add_op(t, op)) {
        free(op.a);
        free(op.b);
        return -1;
    }
    return 0;
}

/* Collects the adjacent code point pairs of every piece.  Unused pieces are
 * re-split by sentencepiece using state shared across the whole text, so a
 * model with them is never cut; nor is one with a piece that is not UTF-8. */
static int build_bigrams(Tokenizer *t)
{
    size_t total = 0;
    for (int id = 0; id < t->n; id++) total += t->piece_len[id];
    if (t->has_unused) return 0;
    size_t cap = table_size(total);
    BigramSet *s = &t->bigrams;
    s->key = malloc(cap * sizeof *s->key);
    if (!s->key) return -1;
    memset(s->key, 0xff, cap * sizeof *s->key);
    s->mask = cap - 1;
    for (int id = 0; id < t->n; id++) {
        const char *p = t->piece[id];
        size_t n = t->piece_len[id], i = 0;
        uint32_t prev = 0, cp;
        while (i < n) {
            size_t k = utf8_decode(p + i, n - i, &cp);
            if (k == 0) {
                free(s->key);
                s->key = NULL;
                return 0;
            }
            if (i > 0) bigram_add(s, bigram_key(prev, cp));
            prev = cp;
            i += k;
        }
    }
    return 0;
}

/* Builds the index and the derived tables once pieces and types are set. */
static int finish_tables(Tokenizer *t, Error *err)
{
    if (strmap_init(t)) return error_set(err, "out of memory");
    for (int id = 0; id < t->n; id++) {
        int dup = strmap_insert(t, id);
        if (dup >= 0)
            return error_set(err, "piece \"%s\" is defined twice (ids %d and %d)", t->piece[id],
                             dup, id);
        if (t->type[id] == T_BYTE) {
            int v = byte_piece_value(t->piece[id], t->piece_len[id]);
            if (v < 0) return error_set(err, "byte piece %d is \"%s\", not <0xNN>", id, t->piece[id]);
            t->byte_id[v] = id;
        }
        if (t->type[id] == T_UNUSED) t->has_unused = true;
        if (t->type[id] == T_USER) {
            int32_t *u = realloc(t->user_ids, (t->n_user + 1) * sizeof *u);
            if (!u) return error_set(err, "out of memory");
            t->user_ids = u;
            t->user_ids[t->n_user++] = id;
        }
    }
    /* Decode strips what a prepend step added; after stripping extra spaces
     * sentencepiece strips every leading U+2581 (see decode_piece). */
    for (size_t i = 0; i < t->n_ops; i++) {
        const NormOp *op = &t->ops[i];
        if ((op->kind == OP_PREPEND && op->a_len > 0) ||
            (op->kind == OP_METASPACE && op->scheme != SCHEME_NEVER))
            t->strip_dummy_prefix = true;
        if (op->kind == OP_STRIP_SPACES) t->strip_dummy_prefix = t->strip_all_leading = true;
    }
    if (!t->unk_surface) t->unk_surface = strdup(" \xE2\x81\x87 ");
    if (!t->unk_surface || build_bigrams(t)) return error_set(err, "out of memory");
    return 0;
}

/* ---------------------------------------------- loading: tokenizer.model */

static int spm_check_supported(const SpmModel *m, Error *err)
{
    static const char *types[] = {"?", "unigram", "bpe", "word", "char"};
    if (m->model_type != SPM_MODEL_BPE)
        return error_set(err, "sentencepiece model type is %s; only BPE is supported",
                         m->model_type >= 1 && m->model_type <= 4 ? types[m->model_type] : "unknown");
    if (m->precompiled_charsmap_len > 0)
        return error_set(err, "normalization rule \"%s\" is not supported (only \"identity\")",
                         m->normalizer_name);
    if (m->treat_whitespace_as_suffix)
        return error_set(err, "treat_whitespace_as_suffix is not supported");
    return 0;
}

static int spm_ops(Tokenizer *t, const SpmModel *m)
{
    if (m->remove_extra_whitespaces &&
        (add_op(t, (NormOp){.kind = OP_STRIP_SPACES}) ||
         add_op(t, (NormOp){.kind = OP_COLLAPSE_SPACES})))
        return -1;
    const char *ws = m->escape_whitespaces ? METASPACE : " ";
    size_t wn = m->escape_whitespaces ? METASPACE_LEN : 1;
    if (m->add_dummy_prefix && add_text_op(t, OP_PREPEND, ws, wn, NULL, 0)) return -1;
    if (m->escape_whitespaces && add_text_op(t, OP_REPLACE, " ", 1, METASPACE, METASPACE_LEN))
        return -1;
    return 0;
}

static int tokenizer_from_spm(const SpmModel *m, Tokenizer **out, Error *err)
{
    if (spm_check_supported(m, err)) return -1;
    if (m->n_pieces > INT32_MAX / 2) return error_set(err, "too many pieces");
    Tokenizer *t = tokenizer_alloc((int)m->n_pieces);
    if (!t) return error_set(err, "out of memory");
    for (int id = 0; id < t->n; id++) {
        const SpmPiece *p = &m->pieces[id];
        if (p->type < T_NORMAL || p->type > T_BYTE) {
            error_set(err, "piece %d (\"%s\") has unknown type %d", id, p->piece, p->type);
            goto fail;
        }
        if (set_piece(t, id, p->piece, p->len)) goto oom;
        t->score[id] = p->score;
        t->type[id] = (uint8_t)p->type;
        if (p->type == T_UNKNOWN) t->unk_id = id;
    }
    t->byte_fallback = m->byte_fallback;
    t->unk_surface = strdup(m->unk_surface);
    if (!t->unk_surface || spm_ops(t, m)) goto oom;
    if (finish_tables(t, err)) goto fail;
    if (t->unk_id < 0) {
        error_set(err, "sentencepiece model has no unknown piece");
        goto fail;
    }
    t->bos_id = strmap_find(t, m->bos_piece, strlen(m->bos_piece));
    t->eos_id = strmap_find(t, m->eos_piece, strlen(m->eos_piece));
    *out = t;
    return 0;
oom:
    error_set(err, "out of memory");
fail:
    tokenizer_free(t);
    return -1;
}

static int load_spm(const uint8_t *data, size_t len, Tokenizer **out, Error *err)
{
    SpmModel m;
    if (spm_model_parse(data, len, &m, err)) return -1;
    int rc = tokenizer_from_spm(&m, out, err);
    spm_model_free(&m);
    return rc;
}

/* ------------------------------------------------ loading: tokenizer.json */

static const char *json_str_field(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static bool json_flag(json_t *obj, const char *key, bool def)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

/* Finds the largest id among model.vocab and added_tokens. */
static int hf_max_id(json_t *vocab, json_t *added, int *max_id, Error *err)
{
    const char *key;
    json_t *v;
    *max_id = -1;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= INT32_MAX / 2)
            return error_set(err, "model.vocab[\"%s\"] is not a valid id", key);
        if (json_integer_value(v) > *max_id) *max_id = (int)json_integer_value(v);
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 ||
            json_integer_value(id) >= INT32_MAX / 2 || !json_str_field(v, "content"))
            return error_set(err, "added_tokens[%zu] needs an integer id and a content string", i);
        if (json_integer_value(id) > *max_id) *max_id = (int)json_integer_value(id);
    }
    return 0;
}

static int hf_fill_vocab(Tokenizer *t, json_t *vocab, Error *err)
{
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        int id = (int)json_integer_value(v);
        if (t->piece[id])
            return error_set(err, "model.vocab gives id %d to both \"%s\" and \"%s\"", id,
                             t->piece[id], key);
        if (set_piece(t, id, key, strlen(key))) return error_set(err, "out of memory");
        int b = t->byte_fallback ? byte_piece_value(key, strlen(key)) : -1;
        t->type[id] = b >= 0 ? T_BYTE : T_NORMAL;
    }
    return 0;
}

/* Special added tokens are control pieces (never produced from text);
 * other added tokens behave like user-defined pieces. */
static int hf_fill_added(Tokenizer *t, json_t *added, const char *unk_token, Error *err)
{
    size_t i;
    json_t *v;
    json_array_foreach(added, i, v) {
        int id = (int)json_integer_value(json_object_get(v, "id"));
        json_t *cs = json_object_get(v, "content");
        const char *content = json_string_value(cs);
        size_t len = json_string_length(cs);
        if (t->piece[id] && (t->piece_len[id] != len || memcmp(t->piece[id], content, len) != 0))
            return error_set(err, "added token \"%s\" has id %d, which model.vocab gives to \"%s\"",
                             content, id, t->piece[id]);
        if (!t->piece[id] && set_piece(t, id, content, len)) return error_set(err, "out of memory");
        bool special = json_flag(v, "special", false);
        bool is_unk = unk_token ? strcmp(content, unk_token) == 0 : strcmp(content, "<unk>") == 0;
        t->type[id] = is_unk ? T_UNKNOWN : special ? T_CONTROL : T_USER;
    }
    return 0;
}

static int hf_merge_pair(json_t *m, size_t i, const char **l, size_t *ll, const char **r,
                         size_t *rl, Error *err)
{
    if (json_is_string(m)) { /* older format: "left right" */
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return error_set(err, "model.merges[%zu] \"%s\" is not two pieces separated by one space", i, s);
        *l = s;
        *ll = (size_t)(sp - s);
        *r = sp + 1;
        *rl = strlen(sp + 1);
        return 0;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *l = json_string_value(json_array_get(m, 0));
        *ll = json_string_length(json_array_get(m, 0));
        *r = json_string_value(json_array_get(m, 1));
        *rl = json_string_length(json_array_get(m, 1));
        return 0;
    }
    return error_set(err, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
}

static int hf_load_merges(Tokenizer *t, json_t *merges, Error *err)
{
    size_t n = json_array_size(merges);
    t->merge_list = malloc((n ? n : 1) * sizeof *t->merge_list);
    if (!t->merge_list || pairmap_init(&t->merges, n)) return error_set(err, "out of memory");
    Buf cat = {0};
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (hf_merge_pair(m, i, &l, &ll, &r, &rl, err)) goto fail;
        int lid = strmap_find(t, l, ll), rid = strmap_find(t, r, rl);
        cat.n = 0;
        if (buf_put(&cat, l, ll) || buf_put(&cat, r, rl)) {
            error_set(err, "out of memory");
            goto fail;
        }
        int mid = strmap_find(t, cat.p, cat.n);
        if (lid < 0 || rid < 0 || mid < 0) {
            error_set(err, "model.merges[%zu] (\"%.*s\" + \"%.*s\") uses a piece missing from model.vocab",
                      i, (int)ll, l, (int)rl, r);
            goto fail;
        }
        t->merge_list[t->n_merges][0] = lid;
        t->merge_list[t->n_merges][1] = rid;
        t->n_merges++;
        /* Merging text into <s> would smuggle control ids into plain text. */
        if (t->type[mid] != T_CONTROL && t->type[mid] != T_UNKNOWN)
            pairmap_put(&t->merges, lid, rid, (int32_t)i, mid);
    }
    free(cat.p);
    return 0;
fail:
    free(cat.p);
    return -1;
}

static int hf_scheme(json_t *pt, int *scheme, Error *err)
{
    const char *s = json_str_field(pt, "prepend_scheme");
    if (!s) { /* tokenizers < 0.14 wrote add_prefix_space instead */
        *scheme = json_flag(pt, "add_prefix_space", true) ? SCHEME_ALWAYS : SCHEME_NEVER;
        return 0;
    }
    if (strcmp(s, "always") == 0) *scheme = SCHEME_ALWAYS;
    else if (strcmp(s, "first") == 0) *scheme = SCHEME_FIRST;
    else if (strcmp(s, "never") == 0) *scheme = SCHEME_NEVER;
    else return error_set(err, "unknown Metaspace prepend_scheme \"%s\"", s);
    return 0;
}

/* Regex replacements are supported only in the forms transformers writes for
 * sentencepiece models: "\A<text>" at the start, and the whitespace cleanup. */
static int hf_regex_op(Tokenizer *t, const char *re, const char *with, size_t wn, Error *err)
{
    if (strcmp(re, "\\A +| +\\z") == 0 && wn == 0)
        return add_op(t, (NormOp){.kind = OP_STRIP_SPACES}) ? error_set(err, "out of memory") : 0;
    if (strcmp(re, " {2,}") == 0 && wn == 1 && with[0] == ' ')
        return add_op(t, (NormOp){.kind = OP_COLLAPSE_SPACES}) ? error_set(err, "out of memory") : 0;
    if (strncmp(re, "\\A", 2) == 0 && re[2] && !strpbrk(re + 2, "\\.^$|?*+()[]{}"))
        return add_text_op(t, OP_REPLACE_PREFIX, re + 2, strlen(re + 2), with, wn)
                   ? error_set(err, "out of memory") : 0;
    return error_set(err, "Replace normalizer with regex \"%s\" is not supported", re);
}

static int hf_normalizer(Tokenizer *t, json_t *nz, Error *err)
{
    if (json_is_null(nz) || !nz) return 0;
    const char *type = json_str_field(nz, "type");
    if (!type) return error_set(err, "normalizer without a type");
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(nz, "normalizers"), i, v)
            if (hf_normalizer(t, v, err)) return -1;
        return 0;
    }
    if (strcmp(type, "Prepend") == 0) {
        json_t *p = json_object_get(nz, "prepend");
        if (!json_is_string(p)) return error_set(err, "Prepend normalizer without a prepend string");
        return add_text_op(t, OP_PREPEND, json_string_value(p), json_string_length(p), NULL, 0)
                   ? error_set(err, "out of memory") : 0;
    }
    if (strcmp(type, "Replace") == 0) {
        json_t *pat = json_object_get(nz, "pattern"), *c = json_object_get(nz, "content");
        json_t *s = json_object_get(pat, "String"), *re = json_object_get(pat, "Regex");
        if (!json_is_string(c)) return error_set(err, "Replace normalizer without content");
        if (json_is_string(s))
            return add_text_op(t, OP_REPLACE, json_string_value(s), json_string_length(s),
                               json_string_value(c), json_string_length(c))
                       ? error_set(err, "out of memory") : 0;
        if (json_is_string(re))
            return hf_regex_op(t, json_string_value(re), json_string_value(c), json_string_length(c), err);
        return error_set(err, "Replace normalizer without a String or Regex pattern");
    }
    return error_set(err, "normalizer \"%s\" is not supported", type);
}

static int hf_pre_tokenizer(Tokenizer *t, json_t *pt, Error *err)
{
    if (json_is_null(pt) || !pt) return 0;
    const char *type = json_str_field(pt, "type");
    if (!type) return error_set(err, "pre_tokenizer without a type");
    if (strcmp(type, "Sequence") == 0) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(pt, "pretokenizers"), i, v)
            if (hf_pre_tokenizer(t, v, err)) return -1;
        return 0;
    }
    if (strcmp(type, "Metaspace") != 0)
        return error_set(err, "pre_tokenizer \"%s\" is not supported", type);
    json_t *rep = json_object_get(pt, "replacement");
    const char *r = json_is_string(rep) ? json_string_value(rep) : METASPACE;
    NormOp op = {.kind = OP_METASPACE, .split = json_flag(pt, "split", true)};
    if (hf_scheme(pt, &op.scheme, err)) return -1;
    op.a_len = strlen(r);
    op.a = dupn(r, op.a_len);
    if (!op.a || add_op(t, op)) {
        free(op.a);
        return error_set(err, "out of memory");
    }
    return 0;
}

static int hf_check_model(json_t *model, Error *err)
{
    const char *type = json_str_field(model, "type");
    if (!json_is_object(model) || !json_is_object(json_object_get(model, "vocab")))
        return error_set(err, "no \"model\" object with a \"vocab\"");
    if (type && strcmp(type, "BPE") != 0)
        return error_set(err, "model type is %s; only BPE is supported", type);
    if (!json_is_array(json_object_get(model, "merges")))
        return error_set(err, "model.merges is missing (is this a BPE tokenizer?)");
    json_t *dropout = json_object_get(model, "dropout");
    if (json_is_number(dropout) && json_number_value(dropout) > 0)
        return error_set(err, "BPE dropout is not supported");
    const char *pre = json_str_field(model, "continuing_subword_prefix");
    const char *suf = json_str_field(model, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return error_set(err, "continuing_subword_prefix / end_of_word_suffix are not supported");
    return 0;
}

static int hf_specials(Tokenizer *t, const char *unk_token, Error *err)
{
    if (unk_token) {
        t->unk_id = strmap_find(t, unk_token, strlen(unk_token));
        if (t->unk_id < 0) return error_set(err, "model.unk_token \"%s\" is not in the vocabulary", unk_token);
        t->type[t->unk_id] = T_UNKNOWN;
    } else {
        t->unk_id = strmap_find(t, "<unk>", 5);
        t->drop_unknown = true; /* tokenizers skips such characters */
    }
    /* Llama's convention; these are the pieces sentencepiece's trainer uses. */
    t->bos_id = strmap_find(t, "<s>", 3);
    t->eos_id = strmap_find(t, "</s>", 4);
    return 0;
}

static int tokenizer_from_json(json_t *root, Tokenizer **out, Error *err)
{
    json_t *model = json_object_get(root, "model");
    json_t *added = json_object_get(root, "added_tokens");
    if (!json_is_object(root)) return error_set(err, "top level is not a JSON object");
    if (hf_check_model(model, err)) return -1;
    json_t *vocab = json_object_get(model, "vocab");
    int max_id;
    if (hf_max_id(vocab, added, &max_id, err)) return -1;
    if (max_id < 0) return error_set(err, "model.vocab is empty");
    Tokenizer *t = tokenizer_alloc(max_id + 1);
    if (!t) return error_set(err, "out of memory");
    t->rank_merges = true;
    t->byte_fallback = json_flag(model, "byte_fallback", false);
    t->fuse_unk = json_flag(model, "fuse_unk", false);
    t->ignore_merges = json_flag(model, "ignore_merges", false);
    const char *unk_token = json_str_field(model, "unk_token");
    if (hf_fill_vocab(t, vocab, err) || hf_fill_added(t, added, unk_token, err) ||
        hf_normalizer(t, json_object_get(root, "normalizer"), err) ||
        hf_pre_tokenizer(t, json_object_get(root, "pre_tokenizer"), err))
        goto fail;
    for (int id = 0; id < t->n; id++)
        if (!t->piece[id]) {
            error_set(err, "no token has id %d", id);
            goto fail;
        }
    if (finish_tables(t, err) || hf_specials(t, unk_token, err) ||
        hf_load_merges(t, json_object_get(model, "merges"), err))
        goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_free(t);
    return -1;
}

static int load_json(const char *data, size_t len, Tokenizer **out, Error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return error_set(err, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    int rc = tokenizer_from_json(root, out, err);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------ loading: files */

static int read_file(const char *path, char **data, size_t *len, Error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return error_set_errno(err, "cannot open %s", path);
    Buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (buf_put(&b, chunk, n)) {
            fclose(f);
            free(b.p);
            return error_set(err, "%s: out of memory", path);
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(b.p);
        return error_set(err, "%s: read error", path);
    }
    *data = b.p;
    *len = b.n;
    return 0;
}

int tokenizer_load_file(const char *path, Tokenizer **out, Error *err)
{
    *out = NULL;
    char *data = NULL;
    size_t len = 0;
    if (read_file(path, &data, &len, err)) return -1; /* already names the file */
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\r' || data[i] == '\t')) i++;
    /* A ModelProto starts with field 1 (0x0A); '{' can only be JSON. */
    int rc = (i < len && data[i] == '{') ? load_json(data, len, out, err)
                                         : load_spm((const uint8_t *)data, len, out, err);
    free(data);
    if (rc) return error_prefix(err, "%s: ", path);
    return 0;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tokenizer_load_dir(const char *dir, Tokenizer **out, Error *err)
{
    *out = NULL;
    static const char *names[] = {"tokenizer.json", "tokenizer.model"};
    char path[4096];
    for (size_t i = 0; i < 2; i++) {
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= sizeof path)
            return error_set(err, "%s: path too long", dir);
        if (file_exists(path)) return tokenizer_load_file(path, out, err);
    }
    return error_set(err, "%s: no tokenizer.json or tokenizer.model there", dir);
}

/* ------------------------------------------------- saving: tokenizer.json */

typedef struct {
    double score;
    int32_t l_chars, r_chars, merged, l, r;
} MergeRow;

/* transformers' converter order: higher score first, then longer left and
 * right parts, then vocabulary order.  Longer-left-first is what makes ties
 * (Llama's whitespace runs all score -1e9) merge left to right as
 * sentencepiece does. */
static int merge_row_cmp(const void *pa, const void *pb)
{
    const MergeRow *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->l_chars != b->l_chars) return b->l_chars - a->l_chars;
    if (a->r_chars != b->r_chars) return b->r_chars - a->r_chars;
    if (a->merged != b->merged) return a->merged - b->merged;
    if (a->l != b->l) return a->l - b->l;
    return a->r - b->r;
}

static int32_t count_chars(const char *s, size_t n)
{
    int32_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

static bool merge_part(int type) { return type == T_NORMAL || type == T_UNUSED; }

/* For a sentencepiece model: every split of a piece into two pieces is a
 * merge, ranked by the score of the piece it makes. */
static int spm_merges(const Tokenizer *t, MergeRow **rows, size_t *n_rows)
{
    size_t cap = 1024, n = 0;
    MergeRow *r = malloc(cap * sizeof *r);
    if (!r) return -1;
    for (int id = 0; id < t->n; id++) {
        if (!merge_part(t->type[id])) continue;
        const char *p = t->piece[id];
        size_t len = t->piece_len[id];
        for (size_t k = utf8_lead_len((unsigned char)p[0]); k < len; k += utf8_lead_len((unsigned char)p[k])) {
            int l = strmap_find(t, p, k), rr = strmap_find(t, p + k, len - k);
            if (l < 0 || rr < 0 || !merge_part(t->type[l]) || !merge_part(t->type[rr])) continue;
            if (n == cap) {
                MergeRow *g = realloc(r, (cap *= 2) * sizeof *g);
                if (!g) {
                    free(r);
                    return -1;
                }
                r = g;
            }
            r[n++] = (MergeRow){t->score[id], count_chars(p, k), count_chars(p + k, len - k), id, l, rr};
        }
    }
    qsort(r, n, sizeof *r, merge_row_cmp);
    *rows = r;
    *n_rows = n;
    return 0;
}

/* json_stringn refuses invalid UTF-8; such a piece cannot go into JSON. */
static json_t *jstr(const Tokenizer *t, int id)
{
    return json_stringn(t->piece[id], t->piece_len[id]);
}

static int jset(json_t *obj, const char *key, json_t *v)
{
    return v ? json_object_set_new(obj, key, v) : -1;
}

static int jpush(json_t *arr, json_t *v) { return v ? json_array_append_new(arr, v) : -1; }

/* One merge as ["left", "right"], the format tokenizers >= 0.20 writes
 * (it also reads "left right", which cannot hold pieces with spaces). */
static json_t *pair_json(const Tokenizer *t, int l, int r)
{
    json_t *arr = json_array();
    /* append_new takes ownership even on failure, and ignores NULL */
    if (!arr || json_array_append_new(arr, jstr(t, l)) || json_array_append_new(arr, jstr(t, r))) {
        json_decref(arr);
        return NULL;
    }
    return arr;
}

static json_t *hf_merges_json(const Tokenizer *t)
{
    json_t *arr = json_array();
    if (!arr) return NULL;
    if (t->merge_list) {
        for (size_t i = 0; i < t->n_merges; i++)
            if (jpush(arr, pair_json(t, t->merge_list[i][0], t->merge_list[i][1]))) goto fail;
        return arr;
    }
    MergeRow *rows;
    size_t n;
    if (spm_merges(t, &rows, &n)) goto fail;
    for (size_t i = 0; i < n; i++) {
        if (jpush(arr, pair_json(t, rows[i].l, rows[i].r))) {
            free(rows);
            goto fail;
        }
    }
    free(rows);
    return arr;
fail:
    json_decref(arr);
    return NULL;
}

static json_t *added_token_json(const Tokenizer *t, int id, bool with_id)
{
    json_t *o = json_object();
    if (!o) return NULL;
    int rc = 0;
    if (with_id) rc |= jset(o, "id", json_integer(id));
    rc |= jset(o, "content", jstr(t, id));
    rc |= jset(o, "single_word", json_false());
    rc |= jset(o, "lstrip", json_false());
    rc |= jset(o, "rstrip", json_false());
    rc |= jset(o, "normalized", json_false());
    rc |= jset(o, "special", json_boolean(t->type[id] != T_USER));
    if (rc) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static bool is_added(const Tokenizer *t, int id)
{
    return t->type[id] == T_CONTROL || t->type[id] == T_UNKNOWN || t->type[id] == T_USER;
}

static json_t *normalizer_json(const Tokenizer *t, json_t **pre)
{
    json_t *seq = json_array();
    *pre = json_null();
    for (size_t i = 0; seq && i < t->n_ops; i++) {
        const NormOp *op = &t->ops[i];
        json_t *v = NULL;
        switch (op->kind) {
        case OP_PREPEND: v = json_pack("{s:s, s:s%}", "type", "Prepend", "prepend", op->a, op->a_len); break;
        case OP_REPLACE:
            v = json_pack("{s:s, s:{s:s%}, s:s%}", "type", "Replace", "pattern", "String", op->a,
                          op->a_len, "content", op->b, op->b_len);
            break;
        case OP_REPLACE_PREFIX: {
            char re[256];
            snprintf(re, sizeof re, "\\A%.*s", (int)op->a_len, op->a);
            v = json_pack("{s:s, s:{s:s}, s:s%}", "type", "Replace", "pattern", "Regex", re,
                          "content", op->b, op->b_len);
            break;
        }
        case OP_STRIP_SPACES:
            v = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "Regex", "\\A +| +\\z", "content", "");
            break;
        case OP_COLLAPSE_SPACES:
            v = json_pack("{s:s, s:{s:s}, s:s}", "type", "Replace", "pattern", "Regex", " {2,}", "content", " ");
            break;
        case OP_METASPACE: {
            static const char *schemes[] = {"always", "first", "never"};
            json_decref(*pre);
            *pre = json_pack("{s:s, s:s%, s:s, s:b}", "type", "Metaspace", "replacement", op->a,
                             op->a_len, "prepend_scheme", schemes[op->scheme], "split", op->split);
            continue;
        }
        }
        if (jpush(seq, v)) {
            json_decref(seq);
            seq = NULL;
        }
    }
    if (!seq || !*pre) {
        json_decref(seq);
        json_decref(*pre);
        *pre = NULL;
        return NULL;
    }
    if (json_array_size(seq) == 0) {
        json_decref(seq);
        return json_null();
    }
    return json_pack("{s:s, s:o}", "type", "Sequence", "normalizers", seq);
}

/* Llama's template: BOS before each sequence, as LlamaTokenizerFast sets it. */
static json_t *post_processor_json(const Tokenizer *t)
{
    if (t->bos_id < 0) return json_null();
    const char *bos = t->piece[t->bos_id];
    return json_pack("{s:s, s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                     " s:[{s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}, {s:{s:s, s:i}}],"
                     " s:{s:{s:s, s:[i], s:[s]}}}",
                     "type", "TemplateProcessing",
                     "single", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                     "pair", "SpecialToken", "id", bos, "type_id", 0, "Sequence", "id", "A", "type_id", 0,
                     "SpecialToken", "id", bos, "type_id", 1, "Sequence", "id", "B", "type_id", 1,
                     "special_tokens", bos, "id", bos, "ids", t->bos_id, "tokens", bos);
}

static json_t *decoder_json(const Tokenizer *t)
{
    json_t *seq = json_pack("[{s:s, s:{s:s}, s:s}]", "type", "Replace", "pattern", "String",
                            METASPACE, "content", " ");
    if (!seq) return NULL;
    int rc = 0;
    if (t->byte_fallback) rc |= jpush(seq, json_pack("{s:s}", "type", "ByteFallback"));
    rc |= jpush(seq, json_pack("{s:s}", "type", "Fuse"));
    if (t->strip_dummy_prefix)
        rc |= jpush(seq, json_pack("{s:s, s:s, s:i, s:i}", "type", "Strip", "content", " ", "start", 1, "stop", 0));
    if (rc) {
        json_decref(seq);
        return NULL;
    }
    return json_pack("{s:s, s:o}", "type", "Sequence", "decoders", seq);
}

static json_t *model_json(const Tokenizer *t)
{
    json_t *vocab = json_object(), *merges = hf_merges_json(t);
    json_t *model = json_object();
    int rc = !vocab || !merges || !model;
    for (int id = 0; !rc && id < t->n; id++) {
        json_t *k = json_integer(id);
        rc |= !k || json_object_setn_new(vocab, t->piece[id], t->piece_len[id], k);
    }
    if (!rc) {
        rc |= jset(model, "type", json_string("BPE"));
        rc |= jset(model, "dropout", json_null());
        rc |= jset(model, "unk_token", t->unk_id >= 0 ? jstr(t, t->unk_id) : json_null());
        rc |= jset(model, "continuing_subword_prefix", json_null());
        rc |= jset(model, "end_of_word_suffix", json_null());
        rc |= jset(model, "fuse_unk", json_boolean(t->rank_merges ? t->fuse_unk : true));
        rc |= jset(model, "byte_fallback", json_boolean(t->byte_fallback));
        rc |= jset(model, "ignore_merges", json_boolean(t->ignore_merges));
        rc |= json_object_set(model, "vocab", vocab);
        rc |= json_object_set(model, "merges", merges);
    }
    json_decref(vocab);
    json_decref(merges);
    if (rc) {
        json_decref(model);
        return NULL;
    }
    return model;
}

static json_t *tokenizer_json(const Tokenizer *t)
{
    json_t *root = json_object(), *added = json_array(), *pre = NULL;
    int rc = !root || !added;
    for (int id = 0; !rc && id < t->n; id++)
        if (is_added(t, id)) rc |= jpush(added, added_token_json(t, id, true));
    json_t *norm = rc ? NULL : normalizer_json(t, &pre);
    if (!rc) {
        rc |= jset(root, "version", json_string("1.0"));
        rc |= jset(root, "truncation", json_null());
        rc |= jset(root, "padding", json_null());
        rc |= json_object_set(root, "added_tokens", added);
        rc |= jset(root, "normalizer", norm);
        rc |= jset(root, "pre_tokenizer", pre);
        rc |= jset(root, "post_processor", post_processor_json(t));
        rc |= jset(root, "decoder", decoder_json(t));
        rc |= jset(root, "model", model_json(t));
    }
    json_decref(added);
    if (rc) {
        json_decref(root);
        return NULL;
    }
    return root;
}

static json_t *token_name(const Tokenizer *t, int id)
{
    return id >= 0 ? jstr(t, id) : json_null();
}

/* tokenizer_class is PreTrainedTokenizerFast on purpose: transformers 5's
 * LlamaTokenizer(Fast) rebuilds the pipeline with a Metaspace pre-tokenizer
 * and ignores this file's normalizer, which changes ids of text starting with
 * a space ("  leading spaces"); PreTrainedTokenizerFast uses the file as is in
 * transformers 4 and 5, and the post-processor above adds BOS. */
static json_t *tokenizer_config_json(const Tokenizer *t)
{
    json_t *dec = json_object();
    int rc = !dec;
    for (int id = 0; !rc && id < t->n; id++) {
        if (!is_added(t, id)) continue;
        char key[16];
        snprintf(key, sizeof key, "%d", id);
        rc |= jset(dec, key, added_token_json(t, id, false));
    }
    json_t *cfg = rc ? NULL : json_object();
    if (!cfg) {
        json_decref(dec);
        return NULL;
    }
    rc |= jset(cfg, "add_bos_token", json_true());
    rc |= jset(cfg, "add_eos_token", json_false());
    rc |= jset(cfg, "added_tokens_decoder", dec);
    rc |= jset(cfg, "bos_token", token_name(t, t->bos_id));
    rc |= jset(cfg, "clean_up_tokenization_spaces", json_false());
    rc |= jset(cfg, "eos_token", token_name(t, t->eos_id));
    rc |= jset(cfg, "legacy", json_true());
    rc |= jset(cfg, "pad_token", json_null());
    rc |= jset(cfg, "tokenizer_class", json_string("PreTrainedTokenizerFast"));
    rc |= jset(cfg, "unk_token", token_name(t, t->unk_id));
    if (rc) {
        json_decref(cfg);
        return NULL;
    }
    return cfg;
}

static json_t *special_tokens_map_json(const Tokenizer *t)
{
    json_t *m = json_object();
    const char *keys[] = {"bos_token", "eos_token", "unk_token"};
    int ids[] = {t->bos_id, t->eos_id, t->unk_id};
    int rc = !m;
    for (int i = 0; !rc && i < 3; i++) {
        if (ids[i] < 0) continue;
        json_t *o = json_pack("{s:o, s:b, s:b, s:b, s:b}", "content", jstr(t, ids[i]), "lstrip", 0,
                              "normalized", 0, "rstrip", 0, "single_word", 0);
        rc |= jset(m, keys[i], o);
    }
    if (rc) {
        json_decref(m);
        return NULL;
    }
    return m;
}

/* Writes through a temporary file and rename, so a reader never sees half a file. */
static int write_json(const char *dir, const char *name, json_t *doc, size_t flags, Error *err)
{
    char path[4096], tmp[4200];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return error_set(err, "%s: path too long", dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (!doc) return error_set(err, "%s: out of memory, or a piece is not valid UTF-8", path);
    if (json_dump_file(doc, tmp, flags) != 0) {
        remove(tmp);
        return error_set_errno(err, "cannot write %s", tmp);
    }
    if (rename(tmp, path) != 0) {
        remove(tmp);
        return error_set_errno(err, "cannot rename %s to %s", tmp, path);
    }
    return 0;
}

int tokenizer_save_hf(const Tokenizer *t, const char *dir, Error *err)
{
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return error_set_errno(err, "cannot create %s", dir);
    struct {
        const char *name;
        json_t *(*build)(const Tokenizer *);
        size_t flags;
    } files[] = {
        /* the vocabulary is large: no indentation for it */
        {"tokenizer.json", tokenizer_json, JSON_COMPACT},
        {"tokenizer_config.json", tokenizer_config_json, JSON_INDENT(2)},
        {"special_tokens_map.json", special_tokens_map_json, JSON_INDENT(2)},
    };
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        json_t *doc = files[i].build(t);
        int rc = write_json(dir, files[i].name, doc, files[i].flags, err);
        json_decref(doc);
        if (rc) return -1;
    }
    return 0;
}

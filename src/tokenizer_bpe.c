/* The tokenizer's merge engine, for both rules (see tokenizer.c):
 * sentencepiece's (a pair merges when its concatenation is a piece, highest
 * score first) and Hugging Face tokenizers' (listed merges by rank, lowest
 * first); ties go to the leftmost pair.  The normalised text becomes symbols,
 * one per character or user-defined piece; merging runs on a binary heap. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "utf8.h"

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

static bool is_mergeable(int type) { return type == T_NORMAL || type == T_USER || type == T_UNUSED; }

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
        if (l->id < 0 || r->id < 0 || !tok_pairmap_get(&t->merges, l->id, r->id, &r32, &c.merged))
            return 0;
        rank = (uint32_t)r32;
    } else {
        c.merged = tok_strmap_find(t, w->text + l->start, (size_t)l->len + r->len);
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
            int id = tok_strmap_find(t, w->text + pos, n);
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
    int id = tok_strmap_find(t, w->text + start, len);
    if (id >= 0 && t->type[id] == T_UNUSED && depth < 64) {
        const RevMerge *rv = find_rev(w, id);
        if (rv) return emit_sp(w, rv->ls, rv->ll, depth + 1) || emit_sp(w, rv->rs, rv->rl, depth + 1);
    }
    if (id < 0) id = t->unk_id;
    bool is_unk = id >= 0 && t->type[id] == T_UNKNOWN;
    if (is_unk && t->byte_fallback) {
        for (uint32_t k = 0; k < len; k++) {
            int b = t->byte_id[(unsigned char)w->text[start + k]];
            if (tok_ids_push(w->out, b >= 0 ? b : t->unk_id)) return -1;
        }
        w->prev_unk = false;
        return 0;
    }
    if (is_unk && w->prev_unk) return 0;
    w->prev_unk = is_unk;
    return id >= 0 ? tok_ids_push(w->out, id) : 0;
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
    return !tok_bigram_has(&w->t->bigrams, tok_bigram_key(x, y));
}

static int emit_segment(Work *w, size_t first)
{
    const Tokenizer *t = w->t;
    for (int32_t i = (int32_t)first; i >= 0; i = w->sym[i].next) {
        const Sym *s = &w->sym[i];
        int rc = (t->rank_merges || s->frozen) ? tok_ids_push(w->out, s->id)
                                                : emit_sp(w, s->start, s->len, 0);
        if (rc) return -1;
    }
    return 0;
}

static int encode_word(Work *w, uint32_t start, uint32_t end)
{
    const Tokenizer *t = w->t;
    if (t->ignore_merges) {
        int id = tok_strmap_find(t, w->text + start, end - start);
        if (id >= 0) return tok_ids_push(w->out, id);
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
    const NormOp *sp = tok_split_op(w->t);
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

int tok_bpe_encode(const Tokenizer *t, const char *text, size_t n, IdVec *out)
{
    Work w = {.t = t, .text = text, .out = out};
    int rc = -1;
    w.sym = malloc((n ? n : 1) * sizeof *w.sym);
    if (w.sym && (n == 0 || encode_normalized(&w, n) == 0)) rc = 0;
    free(w.sym);
    free(w.heap);
    free(w.rev);
    return rc;
}

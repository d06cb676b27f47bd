#include "sequences.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

void sequence_free(Sequence *seq)
{
    free(seq->tokens);
    memset(seq, 0, sizeof *seq);
}

/* ---- prompt template ---------------------------------------------------- */

int prompt_template_check(const char *tmpl, Error *err)
{
    if (!strstr(tmpl, PROMPT_PLACEHOLDER))
        return error_set(err, "prompt template must contain the placeholder " PROMPT_PLACEHOLDER);
    return 0;
}

int prompt_template_apply(const char *tmpl, const char *raw_prompt, char **out, Error *err)
{
    *out = NULL;
    if (prompt_template_check(tmpl, err)) return -1;
    const size_t ph = strlen(PROMPT_PLACEHOLDER), raw = strlen(raw_prompt);
    size_t n_ph = 0;
    for (const char *p = tmpl; (p = strstr(p, PROMPT_PLACEHOLDER)); p += ph) n_ph++;
    size_t len = strlen(tmpl) - n_ph * ph + n_ph * raw;
    char *s = malloc(len + 1), *w = s;
    if (!s) return error_set(err, "out of memory for a %zu-byte prompt", len);
    for (const char *p = tmpl, *hit; *p; p = hit + ph) {
        hit = strstr(p, PROMPT_PLACEHOLDER);
        size_t lit = hit ? (size_t)(hit - p) : strlen(p);
        memcpy(w, p, lit);
        w += lit;
        if (!hit) break;
        memcpy(w, raw_prompt, raw);
        w += raw;
    }
    *w = '\0';
    *out = s;
    return 0;
}

/* ---- tokens --------------------------------------------------------------- */

/* tokens(a + b): the seed tokenizes the concatenated string, not the parts. */
static int encode_concat(const Tokenizer *tok, const char *a, const char *b, int32_t **ids,
                         size_t *n, Error *err)
{
    size_t la = strlen(a), lb = strlen(b);
    char *text = malloc(la + lb + 1);
    if (!text) return error_set(err, "out of memory for a %zu-byte text", la + lb);
    memcpy(text, a, la);
    memcpy(text + la, b, lb + 1);
    int rc = tokenizer_encode(tok, text, la + lb, ids, n, err);
    free(text);
    return rc;
}

/* BOS + ids + EOS. */
static int wrap(const Tokenizer *tok, const int32_t *ids, size_t n, Sequence *s, Error *err)
{
    memset(s, 0, sizeof *s);
    if (n + 2 > (size_t)INT32_MAX) return error_set(err, "sequence of %zu tokens is too long", n);
    s->tokens = malloc((n + 2) * sizeof *s->tokens);
    if (!s->tokens) return error_set(err, "out of memory for a %zu-token sequence", n + 2);
    s->tokens[0] = tokenizer_bos_id(tok);
    if (n) memcpy(s->tokens + 1, ids, n * sizeof *ids);
    s->tokens[n + 1] = tokenizer_eos_id(tok);
    s->len = (int32_t)(n + 2);
    s->completion_start = s->len;
    return 0;
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    size_t i = 0;
    while (i < na && i < nb && a[i] == b[i]) i++;
    return i;
}

/* Labels start after the common prefix of the two full sequences (BOS and
 * EOS included, exactly as the seed's common_prefix_length sees them). */
static void set_pair_completion(Sequence *c, Sequence *r)
{
    size_t cp = common_prefix(c->tokens, (size_t)c->len, r->tokens, (size_t)r->len);
    c->completion_start = r->completion_start = (int32_t)cp;
}

/* SFT: common prefix of BOS+tokens(prompt+response)+EOS and BOS+tokens(prompt). */
static void set_sft_completion(Sequence *s, const int32_t *prompt_ids, size_t n_prompt)
{
    size_t cp = common_prefix(s->tokens + 1, (size_t)s->len - 1, prompt_ids, n_prompt);
    s->completion_start = (int32_t)(1 + cp);
}

static int pair_from_ids(const Tokenizer *tok, const int32_t *ci, size_t cn, const int32_t *ri,
                         size_t rn, Sequence *c, Sequence *r, Error *err)
{
    if (wrap(tok, ci, cn, c, err)) return -1;
    if (wrap(tok, ri, rn, r, err)) {
        sequence_free(c);
        return -1;
    }
    set_pair_completion(c, r);
    return 0;
}

int sequence_pair_build(const Tokenizer *tok, const char *prompt, const char *chosen,
                        const char *rejected, Sequence *c, Sequence *r, Error *err)
{
    int32_t *ci = NULL, *ri = NULL;
    size_t cn = 0, rn = 0;
    int rc = -1;
    if (encode_concat(tok, prompt, chosen, &ci, &cn, err) ||
        encode_concat(tok, prompt, rejected, &ri, &rn, err))
        goto done;
    rc = pair_from_ids(tok, ci, cn, ri, rn, c, r, err);
done:
    free(ci);
    free(ri);
    return rc;
}

int sequence_sft_build(const Tokenizer *tok, const char *prompt, const char *response,
                       Sequence *s, Error *err)
{
    int32_t *ids = NULL, *pids = NULL;
    size_t n = 0, pn = 0;
    int rc = -1;
    if (encode_concat(tok, prompt, response, &ids, &n, err) ||
        tokenizer_encode(tok, prompt, strlen(prompt), &pids, &pn, err) || wrap(tok, ids, n, s, err))
        goto done;
    set_sft_completion(s, pids, pn);
    rc = 0;
done:
    free(ids);
    free(pids);
    return rc;
}

/* ---- memo: one prompt group at a time ------------------------------------- */

/* Consecutive pairs share a prompt and each response of a group appears in
 * n-1 pairs, so tokens(prompt + response) is cached per row within a group;
 * the cache is emptied when the prompt changes, so memory stays one group. */
typedef struct {
    size_t row;
    const char *response; /* with row, the key (pointer identity) */
    int32_t *ids;
    size_t n;
} MemoEntry;

typedef struct {
    const char *raw_prompt; /* the group's key (pointer identity) */
    char *prompt;           /* templated */
    int32_t *prompt_ids;    /* tokens(prompt), SFT only; NULL until needed */
    size_t n_prompt_ids;
    MemoEntry *e;
    size_t n, cap;
} Memo;

static void memo_clear(Memo *m)
{
    for (size_t i = 0; i < m->n; i++) free(m->e[i].ids);
    free(m->prompt);
    free(m->prompt_ids);
    m->prompt = NULL;
    m->prompt_ids = NULL;
    m->raw_prompt = NULL;
    m->n = 0;
}

static void memo_free(Memo *m)
{
    memo_clear(m);
    free(m->e);
}

static int memo_set_prompt(Memo *m, const char *tmpl, const char *raw_prompt, Error *err)
{
    if (m->raw_prompt == raw_prompt) return 0;
    memo_clear(m);
    if (prompt_template_apply(tmpl, raw_prompt, &m->prompt, err)) return -1;
    m->raw_prompt = raw_prompt;
    return 0;
}

/* tokens(prompt + response) of a row, computed once per group. */
static int memo_tokens(Memo *m, const Tokenizer *tok, size_t row, const char *response,
                       const int32_t **ids, size_t *n, Error *err)
{
    for (size_t i = 0; i < m->n; i++)
        if (m->e[i].row == row && m->e[i].response == response) {
            *ids = m->e[i].ids;
            *n = m->e[i].n;
            return 0;
        }
    if (m->n == m->cap) {
        size_t cap = m->cap ? 2 * m->cap : 8;
        MemoEntry *grown = realloc(m->e, cap * sizeof *grown);
        if (!grown) return error_set(err, "out of memory");
        m->e = grown;
        m->cap = cap;
    }
    MemoEntry *e = &m->e[m->n];
    e->row = row;
    e->response = response;
    if (encode_concat(tok, m->prompt, response, &e->ids, &e->n, err)) return -1;
    m->n++;
    *ids = e->ids;
    *n = e->n;
    return 0;
}

/* ---- sets ----------------------------------------------------------------- */

static bool too_long(const Sequence *s, int max_length)
{
    return max_length > 0 && s->len > max_length;
}

static int pair_alloc(PairSequences *out, size_t n, Error *err)
{
    memset(out, 0, sizeof *out);
    if (n == 0) return 0;
    out->chosen = calloc(n, sizeof *out->chosen);
    out->rejected = calloc(n, sizeof *out->rejected);
    out->source = calloc(n, sizeof *out->source);
    if (!out->chosen || !out->rejected || !out->source) {
        pair_sequences_free(out);
        return error_set(err, "out of memory for %zu pair sequences", n);
    }
    return 0;
}

static int build_one_pair(const Tokenizer *tok, const char *tmpl, const Pair *p, Memo *m,
                          Sequence *c, Sequence *r, Error *err)
{
    const int32_t *ci, *ri;
    size_t cn, rn;
    if (memo_set_prompt(m, tmpl, p->prompt, err) ||
        memo_tokens(m, tok, p->row_chosen, p->chosen, &ci, &cn, err) ||
        memo_tokens(m, tok, p->row_rejected, p->rejected, &ri, &rn, err))
        return -1;
    return pair_from_ids(tok, ci, cn, ri, rn, c, r, err);
}

int pair_sequences_build(const Tokenizer *tok, const char *tmpl, int max_length,
                         const PairSet *pairs, PairSequences *out, Error *err)
{
    if (prompt_template_check(tmpl, err) || pair_alloc(out, pairs->n, err)) return -1;
    Memo memo = { 0 };
    for (size_t i = 0; i < pairs->n; i++) {
        Sequence c, r;
        if (build_one_pair(tok, tmpl, &pairs->pairs[i], &memo, &c, &r, err)) {
            error_prefix(err, "pair %zu (rows %zu, %zu): ", i, pairs->pairs[i].row_chosen,
                         pairs->pairs[i].row_rejected);
            memo_free(&memo);
            pair_sequences_free(out);
            return -1;
        }
        if (too_long(&c, max_length) || too_long(&r, max_length)) {
            sequence_free(&c);
            sequence_free(&r);
            out->n_too_long++;
            continue;
        }
        out->chosen[out->n] = c;
        out->rejected[out->n] = r;
        out->source[out->n++] = i;
    }
    memo_free(&memo);
    return 0;
}

void pair_sequences_free(PairSequences *ps)
{
    for (size_t i = 0; i < ps->n; i++) {
        if (ps->chosen) sequence_free(&ps->chosen[i]);
        if (ps->rejected) sequence_free(&ps->rejected[i]);
    }
    free(ps->chosen);
    free(ps->rejected);
    free(ps->source);
    memset(ps, 0, sizeof *ps);
}

static int build_one_sft(const Tokenizer *tok, const char *tmpl, const SftExample *ex, Memo *m,
                         Sequence *s, Error *err)
{
    const int32_t *ids;
    size_t n;
    if (memo_set_prompt(m, tmpl, ex->prompt, err)) return -1;
    if (!m->prompt_ids &&
        tokenizer_encode(tok, m->prompt, strlen(m->prompt), &m->prompt_ids, &m->n_prompt_ids, err))
        return -1;
    if (memo_tokens(m, tok, ex->row, ex->response, &ids, &n, err) || wrap(tok, ids, n, s, err))
        return -1;
    set_sft_completion(s, m->prompt_ids, m->n_prompt_ids);
    return 0;
}

int sft_sequences_build(const Tokenizer *tok, const char *tmpl, int max_length,
                        const SftSet *set, SftSequences *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if (prompt_template_check(tmpl, err)) return -1;
    if (set->n) {
        out->seqs = calloc(set->n, sizeof *out->seqs);
        out->source = calloc(set->n, sizeof *out->source);
        if (!out->seqs || !out->source) {
            sft_sequences_free(out);
            return error_set(err, "out of memory for %zu SFT sequences", set->n);
        }
    }
    Memo memo = { 0 };
    for (size_t i = 0; i < set->n; i++) {
        Sequence s;
        if (build_one_sft(tok, tmpl, &set->ex[i], &memo, &s, err)) {
            error_prefix(err, "SFT example %zu (row %zu): ", i, set->ex[i].row);
            memo_free(&memo);
            sft_sequences_free(out);
            return -1;
        }
        if (too_long(&s, max_length)) {
            sequence_free(&s);
            out->n_too_long++;
            continue;
        }
        out->seqs[out->n] = s;
        out->source[out->n++] = i;
    }
    memo_free(&memo);
    return 0;
}

void sft_sequences_free(SftSequences *ss)
{
    for (size_t i = 0; i < ss->n; i++)
        if (ss->seqs) sequence_free(&ss->seqs[i]);
    free(ss->seqs);
    free(ss->source);
    memset(ss, 0, sizeof *ss);
}

/* Tokenizer normalisation: the text is made valid UTF-8, then the steps
 * (NormOp) the file lists run in order.  For Llama: "prepend U+2581 to
 * non-empty text, then replace ' ' by U+2581". */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "utf8.h"

static bool starts_with(const Buf *b, const char *s, size_t n)
{
    return b->n >= n && memcmp(b->p, s, n) == 0;
}

static int op_prepend(Buf *b, const char *s, size_t n)
{
    if (b->n == 0) return 0; /* empty text stays empty, as in both libraries */
    if (tok_buf_reserve(b, n)) return -1;
    memmove(b->p + n, b->p, b->n + 1);
    memcpy(b->p, s, n);
    b->n += n;
    return 0;
}

static int op_replace(Buf *b, const char *pat, size_t pn, const char *with, size_t wn)
{
    if (pn == 0 || b->n < pn) return 0;
    Buf out = {0};
    if (tok_buf_reserve(&out, b->n)) return -1;
    size_t i = 0;
    while (i < b->n) {
        if (i + pn <= b->n && memcmp(b->p + i, pat, pn) == 0) {
            if (tok_buf_put(&out, with, wn)) goto oom;
            i += pn;
        } else {
            if (tok_buf_put(&out, b->p + i, 1)) goto oom;
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
    if (wn > pn && tok_buf_reserve(b, wn - pn)) return -1;
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
    if (tok_buf_reserve(out, n)) return -1;
    size_t i = 0;
    while (i < n) {
        size_t k = utf8_decode(s + i, n - i, NULL);
        int rc = k ? tok_buf_put(out, s + i, k) : tok_buf_put(out, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
        if (rc) return -1;
        i += k ? k : 1;
    }
    return 0;
}

int tok_normalize(const Tokenizer *t, const char *text, size_t len, Buf *out)
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

const NormOp *tok_split_op(const Tokenizer *t)
{
    for (size_t i = 0; i < t->n_ops; i++)
        if (t->ops[i].kind == OP_METASPACE && t->ops[i].split && t->ops[i].a_len > 0)
            return &t->ops[i];
    return NULL;
}

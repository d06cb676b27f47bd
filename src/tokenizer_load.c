/* Tokenizer loading: the tables and steps both file formats build on, and the
 * public entry points, which pick the format (tokenizer_spm.c or
 * tokenizer_json.c) by a file's content. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "tokenizer_internal.h"
#include "utf8.h"

/* ------------------------------------------------------------------ shared */

int tok_add_op(Tokenizer *t, NormOp op)
{
    NormOp *p = realloc(t->ops, (t->n_ops + 1) * sizeof *p);
    if (!p) return -1;
    t->ops = p;
    t->ops[t->n_ops++] = op;
    return 0;
}

char *tok_dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = 0;
    }
    return p;
}

int tok_add_text_op(Tokenizer *t, int kind, const char *a, size_t an, const char *b, size_t bn)
{
    NormOp op = {.kind = kind, .a = tok_dupn(a, an), .a_len = an};
    if (b) {
        op.b = tok_dupn(b, bn);
        op.b_len = bn;
    }
    if (!op.a || (b && !op.b) || tok_add_op(t, op)) {
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
    size_t cap = tok_table_size(total);
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
            if (i > 0) tok_bigram_add(s, tok_bigram_key(prev, cp));
            prev = cp;
            i += k;
        }
    }
    return 0;
}

int tok_finish_tables(Tokenizer *t, Error *err)
{
    if (tok_strmap_init(t)) return error_set(err, "out of memory");
    for (int id = 0; id < t->n; id++) {
        int dup = tok_strmap_insert(t, id);
        if (dup >= 0)
            return error_set(err, "piece \"%s\" is defined twice (ids %d and %d)", t->piece[id],
                             dup, id);
        if (t->type[id] == T_BYTE) {
            int v = tok_byte_piece_value(t->piece[id], t->piece_len[id]);
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
     * sentencepiece strips every leading U+2581 (see decode_piece in tokenizer_decode.c). */
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

/* ------------------------------------------------------------------- files */

static int read_file(const char *path, char **data, size_t *len, Error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return error_set_errno(err, "cannot open %s", path);
    Buf b = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (tok_buf_put(&b, chunk, n)) {
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
    int rc = (i < len && data[i] == '{') ? tok_load_json(data, len, out, err)
                                         : tok_load_spm((const uint8_t *)data, len, out, err);
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

/* Tokenizer loading from a Hugging Face tokenizer.json: a BPE model with its
 * vocabulary, merges and added tokens, and the normalizer / pre_tokenizer
 * forms transformers writes for sentencepiece models. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tokenizer_internal.h"

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
        if (tok_set_piece(t, id, key, strlen(key))) return error_set(err, "out of memory");
        int b = t->byte_fallback ? tok_byte_piece_value(key, strlen(key)) : -1;
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
        if (!t->piece[id] && tok_set_piece(t, id, content, len)) return error_set(err, "out of memory");
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
    if (!t->merge_list || tok_pairmap_init(&t->merges, n)) return error_set(err, "out of memory");
    Buf cat = {0};
    size_t i;
    json_t *m;
    json_array_foreach(merges, i, m) {
        const char *l = NULL, *r = NULL;
        size_t ll = 0, rl = 0;
        if (hf_merge_pair(m, i, &l, &ll, &r, &rl, err)) goto fail;
        int lid = tok_strmap_find(t, l, ll), rid = tok_strmap_find(t, r, rl);
        cat.n = 0;
        if (tok_buf_put(&cat, l, ll) || tok_buf_put(&cat, r, rl)) {
            error_set(err, "out of memory");
            goto fail;
        }
        int mid = tok_strmap_find(t, cat.p, cat.n);
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
            tok_pairmap_put(&t->merges, lid, rid, (int32_t)i, mid);
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
        return tok_add_op(t, (NormOp){.kind = OP_STRIP_SPACES}) ? error_set(err, "out of memory") : 0;
    if (strcmp(re, " {2,}") == 0 && wn == 1 && with[0] == ' ')
        return tok_add_op(t, (NormOp){.kind = OP_COLLAPSE_SPACES}) ? error_set(err, "out of memory") : 0;
    if (strncmp(re, "\\A", 2) == 0 && re[2] && !strpbrk(re + 2, "\\.^$|?*+()[]{}"))
        return tok_add_text_op(t, OP_REPLACE_PREFIX, re + 2, strlen(re + 2), with, wn)
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
        return tok_add_text_op(t, OP_PREPEND, json_string_value(p), json_string_length(p), NULL, 0)
                   ? error_set(err, "out of memory") : 0;
    }
    if (strcmp(type, "Replace") == 0) {
        json_t *pat = json_object_get(nz, "pattern"), *c = json_object_get(nz, "content");
        json_t *s = json_object_get(pat, "String"), *re = json_object_get(pat, "Regex");
        if (!json_is_string(c)) return error_set(err, "Replace normalizer without content");
        if (json_is_string(s))
            return tok_add_text_op(t, OP_REPLACE, json_string_value(s), json_string_length(s),
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
    op.a = tok_dupn(r, op.a_len);
    if (!op.a || tok_add_op(t, op)) {
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
        t->unk_id = tok_strmap_find(t, unk_token, strlen(unk_token));
        if (t->unk_id < 0) return error_set(err, "model.unk_token \"%s\" is not in the vocabulary", unk_token);
        t->type[t->unk_id] = T_UNKNOWN;
    } else {
        t->unk_id = tok_strmap_find(t, "<unk>", 5);
        t->drop_unknown = true; /* tokenizers skips such characters */
    }
    /* Llama's convention; these are the pieces sentencepiece's trainer uses. */
    t->bos_id = tok_strmap_find(t, "<s>", 3);
    t->eos_id = tok_strmap_find(t, "</s>", 4);
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
    if (tok_finish_tables(t, err) || hf_specials(t, unk_token, err) ||
        hf_load_merges(t, json_object_get(model, "merges"), err))
        goto fail;
    *out = t;
    return 0;
fail:
    tokenizer_free(t);
    return -1;
}

int tok_load_json(const char *data, size_t len, Tokenizer **out, Error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(data, len, JSON_ALLOW_NUL, &jerr);
    if (!root)
        return error_set(err, "invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
    int rc = tokenizer_from_json(root, out, err);
    json_decref(root);
    return rc;
}

/* tokenizer_save_hf: the tokenizer as Hugging Face files (tokenizer.json,
 * tokenizer_config.json, special_tokens_map.json).  A sentencepiece model's
 * merges are derived from its pieces and scores, in transformers' order. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <jansson.h>

#include "tokenizer_internal.h"
#include "utf8.h"

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
            int l = tok_strmap_find(t, p, k), rr = tok_strmap_find(t, p + k, len - k);
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

/* Tokenizer loading from tokenizer.model, sentencepiece's ModelProto (parsed
 * by sentencepiece_model.c).  Only BPE models with the identity normaliser
 * are supported. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sentencepiece_model.h"
#include "tokenizer_internal.h"

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
        (tok_add_op(t, (NormOp){.kind = OP_STRIP_SPACES}) ||
         tok_add_op(t, (NormOp){.kind = OP_COLLAPSE_SPACES})))
        return -1;
    const char *ws = m->escape_whitespaces ? METASPACE : " ";
    size_t wn = m->escape_whitespaces ? METASPACE_LEN : 1;
    if (m->add_dummy_prefix && tok_add_text_op(t, OP_PREPEND, ws, wn, NULL, 0)) return -1;
    if (m->escape_whitespaces && tok_add_text_op(t, OP_REPLACE, " ", 1, METASPACE, METASPACE_LEN))
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
        if (tok_set_piece(t, id, p->piece, p->len)) goto oom;
        t->score[id] = p->score;
        t->type[id] = (uint8_t)p->type;
        if (p->type == T_UNKNOWN) t->unk_id = id;
    }
    t->byte_fallback = m->byte_fallback;
    t->unk_surface = strdup(m->unk_surface);
    if (!t->unk_surface || spm_ops(t, m)) goto oom;
    if (tok_finish_tables(t, err)) goto fail;
    if (t->unk_id < 0) {
        error_set(err, "sentencepiece model has no unknown piece");
        goto fail;
    }
    t->bos_id = tok_strmap_find(t, m->bos_piece, strlen(m->bos_piece));
    t->eos_id = tok_strmap_find(t, m->eos_piece, strlen(m->eos_piece));
    *out = t;
    return 0;
oom:
    error_set(err, "out of memory");
fail:
    tokenizer_free(t);
    return -1;
}

int tok_load_spm(const uint8_t *data, size_t len, Tokenizer **out, Error *err)
{
    SpmModel m;
    if (spm_model_parse(data, len, &m, err)) return -1;
    int rc = tokenizer_from_spm(&m, out, err);
    spm_model_free(&m);
    return rc;
}

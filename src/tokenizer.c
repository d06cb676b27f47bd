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
 * The parts, one concept per file (private declarations in tokenizer_internal.h):
 *  token_table.c          buffers and hash tables
 *  tokenizer.c            life cycle, pieces, info, tokenizer_encode
 *  tokenizer_normalize.c  the normalisation steps
 *  tokenizer_bpe.c        the merge engine (both rules)
 *  tokenizer_decode.c     ids -> text
 *  tokenizer_load.c       what loading shares; tokenizer_load_file/_dir
 *  tokenizer_spm.c        tokenizer.model
 *  tokenizer_json.c       tokenizer.json
 *  tokenizer_save_hf.c    tokenizer_save_hf (tokenizer.json and its companions)
 *
 * The Tokenizer is immutable after loading; encode and decode allocate their
 * scratch space per call, so one tokenizer may be shared between threads. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"

/* ------------------------------------------------------- life cycle, info */

Tokenizer *tokenizer_alloc(int n)
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
    return tok_strmap_find(t, piece, strlen(piece));
}

int tok_set_piece(Tokenizer *t, int id, const char *s, size_t n)
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

int tok_byte_piece_value(const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *hi = s[3] ? strchr(hex, s[3]) : NULL;
    const char *lo = s[4] ? strchr(hex, s[4]) : NULL;
    if (!hi || !lo) return -1;
    return (int)((hi - hex) * 16 + (lo - hex));
}

/* ----------------------------------------------------------------- encode */

int tokenizer_encode(const Tokenizer *t, const char *text, size_t len, int32_t **ids,
                     size_t *n_ids, Error *err)
{
    *ids = NULL;
    *n_ids = 0;
    Buf norm = {0};
    IdVec out = {0};
    int rc = -1;
    if (tok_normalize(t, text, len, &norm)) goto oom;
    if (norm.n > UINT32_MAX / 2) {
        error_set(err, "text of %zu bytes is too long to tokenize", len);
        goto done;
    }
    if (tok_bpe_encode(t, norm.p, norm.n, &out)) goto oom;
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
    return rc;
}

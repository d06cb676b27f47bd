/* Tokenizer decoding: ids -> text, as sentencepiece does it (U+2581 becomes
 * ' ', byte pieces become bytes, control pieces vanish, the dummy prefix's
 * space is dropped). */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "tokenizer_internal.h"
#include "utf8.h"

/* Byte pieces are collected and turned into text together; bytes that do not
 * form valid UTF-8 become U+FFFD one by one (sentencepiece's ProcessBytePieces). */
static int flush_bytes(Buf *out, Buf *bytes)
{
    size_t i = 0;
    while (i < bytes->n) {
        size_t k = utf8_decode(bytes->p + i, bytes->n - i, NULL);
        int rc = k ? tok_buf_put(out, bytes->p + i, k) : tok_buf_put(out, UTF8_REPLACEMENT, UTF8_REPLACEMENT_LEN);
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
    if (t->type[id] == T_UNKNOWN) return tok_buf_put(out, t->unk_surface, strlen(t->unk_surface));
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
            if (tok_buf_put(out, " ", 1)) return -1;
            i += METASPACE_LEN;
        } else {
            if (tok_buf_put(out, p + i, 1)) return -1;
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
    if (tok_buf_reserve(&out, 16)) goto oom;
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
            char b = (char)tok_byte_piece_value(t->piece[id], t->piece_len[id]);
            if (tok_buf_put(&bytes, &b, 1)) goto oom;
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

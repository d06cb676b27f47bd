/* Private to the tokenizer: the Tokenizer struct and the helpers its parts
 * share, one concept per file (tokenizer_<concept>.c; the buffers and hash
 * tables are token_table.h / token_table.c).
 *
 * Two sources, two merge rules, one engine (see tokenizer.c for the whole
 * picture): tokenizer.model merges by piece score (sentencepiece), and
 * tokenizer.json by merge rank (Hugging Face tokenizers); rank_merges says
 * which.  Normalisation is a short list of steps (NormOp) read from either
 * format.  The Tokenizer is immutable after loading. */
#ifndef MODPO_TOKENIZER_INTERNAL_H
#define MODPO_TOKENIZER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "sentencepiece_model.h"
#include "token_table.h"
#include "tokenizer.h"

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

/* ---- the tokenizer ---- */

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
    bool rank_merges;    /* tokenizer.json rules (see the top of tokenizer.c) */
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

/* ---- tokenizer.c: life cycle and pieces ---- */

/* A tokenizer of n pieces, all empty; NULL when out of memory. */
Tokenizer *tokenizer_alloc(int n);
int tok_set_piece(Tokenizer *t, int id, const char *s, size_t n);
/* "<0xNN>" with two upper-case hex digits, as byte fallback spells them:
 * the byte's value, or -1. */
int tok_byte_piece_value(const char *s, size_t n);

/* ---- tokenizer_normalize.c: text -> normalised text ---- */

/* Appends the normalised text to out (which starts empty). */
int tok_normalize(const Tokenizer *t, const char *text, size_t len, Buf *out);
/* The Metaspace step whose split flag cuts the text into words, if any. */
const NormOp *tok_split_op(const Tokenizer *t);

/* ---- tokenizer_bpe.c: normalised text -> ids ---- */

/* Appends the ids of n bytes of normalised text (n <= UINT32_MAX / 2) to out;
 * -1 only when out of memory. */
int tok_bpe_encode(const Tokenizer *t, const char *text, size_t n, IdVec *out);

/* ---- tokenizer_load.c: what both file formats share ---- */

int tok_add_op(Tokenizer *t, NormOp op);
int tok_add_text_op(Tokenizer *t, int kind, const char *a, size_t an, const char *b, size_t bn);
char *tok_dupn(const char *s, size_t n);
/* Builds the index and the derived tables once pieces and types are set. */
int tok_finish_tables(Tokenizer *t, Error *err);

/* ---- tokenizer_spm.c, tokenizer_json.c: the two file formats ---- */

int tok_load_spm(const uint8_t *data, size_t len, Tokenizer **out, Error *err);
int tok_load_json(const char *data, size_t len, Tokenizer **out, Error *err);

#endif

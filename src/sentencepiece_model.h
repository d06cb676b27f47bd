/* Reader for sentencepiece's tokenizer.model: a ModelProto in protobuf wire
 * format.  Only the fields a BPE encoder needs are kept; everything else is
 * skipped, so models written by newer sentencepiece versions still load.
 * Field numbers follow sentencepiece_model.proto. */
#ifndef MODPO_SENTENCEPIECE_MODEL_H
#define MODPO_SENTENCEPIECE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* ModelProto.SentencePiece.Type */
enum {
    SPM_NORMAL = 1,
    SPM_UNKNOWN = 2,
    SPM_CONTROL = 3,
    SPM_USER_DEFINED = 4,
    SPM_UNUSED = 5,
    SPM_BYTE = 6,
};

/* TrainerSpec.ModelType */
enum { SPM_MODEL_UNIGRAM = 1, SPM_MODEL_BPE = 2, SPM_MODEL_WORD = 3, SPM_MODEL_CHAR = 4 };

typedef struct {
    char *piece;   /* NUL-terminated copy; len excludes the NUL */
    size_t len;
    float score;
    int type;      /* SPM_NORMAL ... SPM_BYTE */
} SpmPiece;

typedef struct {
    SpmPiece *pieces;
    size_t n_pieces;
    /* TrainerSpec (proto2 defaults applied when a field is absent) */
    int model_type;
    bool byte_fallback;
    bool treat_whitespace_as_suffix;
    int unk_id, bos_id, eos_id, pad_id;
    char *unk_piece, *bos_piece, *eos_piece, *unk_surface;
    /* NormalizerSpec */
    char *normalizer_name;
    size_t precompiled_charsmap_len; /* non-zero means a normalisation table */
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
} SpmModel;

/* Parses a serialized ModelProto.  On failure *out is left empty (nothing to
 * free) and err says what is wrong and at which byte offset. */
int spm_model_parse(const uint8_t *data, size_t len, SpmModel *out, Error *err);
void spm_model_free(SpmModel *m);

#endif

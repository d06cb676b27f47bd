/* Llama 2's tokenizer: SentencePiece BPE with byte fallback, as sentencepiece
 * and Hugging Face's LlamaTokenizer (legacy) encode it.  Text is normalised by
 * replacing ' ' with U+2581 and prepending one U+2581 (the dummy prefix); pieces
 * are merged by priority; characters with no piece fall back to <0xNN> bytes. */
#ifndef MODPO_TOKENIZER_H
#define MODPO_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct Tokenizer Tokenizer;

/* Loads DIR/tokenizer.json (Hugging Face) or, failing that, DIR/tokenizer.model
 * (sentencepiece protobuf). */
int tokenizer_load_dir(const char *dir, Tokenizer **out, Error *err);
/* Loads one file; the format is chosen by its content (JSON or protobuf). */
int tokenizer_load_file(const char *path, Tokenizer **out, Error *err);
void tokenizer_free(Tokenizer *tok);

int tokenizer_vocab_size(const Tokenizer *tok);
int tokenizer_bos_id(const Tokenizer *tok);
int tokenizer_eos_id(const Tokenizer *tok);

/* Encodes `len` bytes of UTF-8 text without BOS/EOS.  On success *ids is a
 * malloc'd array of *n_ids ids (the caller frees it). */
int tokenizer_encode(const Tokenizer *tok, const char *text, size_t len,
                     int32_t **ids, size_t *n_ids, Error *err);

/* Decodes ids to a malloc'd NUL-terminated UTF-8 string, dropping BOS/EOS and
 * the dummy-prefix space as sentencepiece does. */
int tokenizer_decode(const Tokenizer *tok, const int32_t *ids, size_t n_ids,
                     char **text, Error *err);

/* The text of one piece (U+2581 kept), for debugging and init-model. */
const char *tokenizer_piece(const Tokenizer *tok, int id);

/* Additions. */

/* Id of the unknown piece (<unk>, 0 for Llama), or -1 if there is none. */
int tokenizer_unk_id(const Tokenizer *tok);
/* Id of the piece with exactly this text (U+2581 for spaces), or -1. */
int tokenizer_piece_id(const Tokenizer *tok, const char *piece);
/* tokenizer_decode that also returns the length, for text holding NUL bytes. */
int tokenizer_decode_len(const Tokenizer *tok, const int32_t *ids, size_t n_ids,
                         char **text, size_t *len, Error *err);

/* Notes on tokenizer_encode: invalid UTF-8 bytes are encoded as U+FFFD, as
 * sentencepiece does; text such as "<s>" is encoded as ordinary characters,
 * never as a control id.  With tokenizer.model, merges follow sentencepiece
 * (piece scores, ties leftmost); with tokenizer.json they follow Hugging
 * Face tokenizers (merge ranks, and its normalizer / Metaspace rules), so
 * each file gives the ids its own library gives.  A tokenizer.json with
 * merges in score order, as tokenizer_save_hf writes it, gives Llama 2's
 * sentencepiece ids; one re-saved by transformers 5 (Metaspace, merges in
 * vocabulary order) differs on some whitespace, as transformers does.
 * tokenizer_bos_id/eos_id return -1 when the vocabulary has no <s>/</s>. */

/* Writes the tokenizer as a Hugging Face tokenizer.json (plus the
 * tokenizer_config.json and special_tokens_map.json that transformers reads)
 * into DIR, so that a model directory made by init-model is complete. */
int tokenizer_save_hf(const Tokenizer *tok, const char *dir, Error *err);

#endif

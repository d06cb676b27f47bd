/* Generation records and the files that hold them, in the seed's format.
 *
 * A record is one JSON object per line, keys in this order:
 *   raw_prompt       the dataset's prompt, untemplated
 *   prompt           the text the model saw: the templated prompt after
 *                    truncation to max_input_length tokens keeping the LAST
 *                    tokens (the seed's left truncation), as decoded text.
 *                    The caller truncates and decodes; this module only
 *                    stores what it is given.
 *   response         the decoded generated tokens (see gen_pick_response)
 *   prompt_response  prompt + response
 *   response_had_prompt_prefix_match
 *                    whether decode(prompt_ids + response_ids) began with
 *                    decode(prompt_ids)
 * Text is UTF-8, written unescaped; separators are ", " and ": " as
 * Python's json.dumps writes them.
 *
 * Rank r of a world of W ranks writes "<dir>/NNNNN-of-MMMMM.jsonl" (r and W,
 * five digits each), atomically: a temporary file in the same directory,
 * fsync, rename, fsync of the directory.  A reader loads every shard of a
 * directory in rank order, so with contiguous sharding (shard_range) the
 * records come back in prompt order. */
#ifndef MODPO_GENERATION_IO_H
#define MODPO_GENERATION_IO_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

typedef struct {
    char *raw_prompt;
    char *prompt;
    char *response;
    char *prompt_response;
    bool response_had_prompt_prefix_match;
} GenRecord;

typedef struct {
    GenRecord *items;
    size_t n;
    int world; /* the M of the shards read */
} GenRecordList;

/* The seed's response: when the decoded full sequence starts with the
 * decoded prompt, what follows it (flag true); otherwise the response ids
 * decoded alone (flag false).  Decoding the whole sequence keeps a token
 * that merges across the prompt/response boundary (a leading space, a
 * multi-byte character) as the tokenizer renders it in context.  Returns a
 * pointer into decoded_full or decoded_response_only; nothing is copied. */
const char *gen_pick_response(const char *decoded_prompt, const char *decoded_full,
                              const char *decoded_response_only, bool *had_prefix_match);

/* Copies the strings into r and sets prompt_response = prompt + response. */
int gen_record_init(GenRecord *r, const char *raw_prompt, const char *prompt,
                    const char *response, bool had_prefix_match, Error *err);
void gen_record_free(GenRecord *r);

/* "<dir>/NNNNN-of-MMMMM.jsonl"; 0 <= rank < world <= 99999. */
int gen_shard_path(char *buf, size_t size, const char *dir, int rank, int world, Error *err);

/* Writes records[0..n) as rank's shard file (the directory must exist),
 * replacing any earlier file of that name only once the new one is whole.
 * Strings must be valid UTF-8 (an invalid one is an error naming the record
 * and field). */
int gen_write_shard(const char *dir, int rank, int world, const GenRecord *records, size_t n,
                    Error *err);

/* Loads every shard of dir in rank order.  The set must be complete: all of
 * 00000..M-1 of one M; a missing shard, a second M, a malformed line (file:
 * line) or a record lacking a field is an error.  Other files are ignored. */
int gen_read_dir(const char *dir, GenRecordList *out, Error *err);
void gen_list_free(GenRecordList *list);

#endif

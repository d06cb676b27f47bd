/* A randomly initialised Llama directory from a named preset, with a
 * tokenizer: what `modpo init-model` writes and what a run whose model.path
 * does not exist gets. */
#ifndef MODPO_MODEL_INIT_H
#define MODPO_MODEL_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "safetensors.h"

#define MODEL_INIT_DEFAULT_TOKENIZER "tests/tiny-tokenizer"

typedef struct {
    const char *preset;       /* llama_preset_find name */
    const char *out;          /* must not exist or be empty */
    const char *tokenizer;    /* tokenizer dir or file */
    uint64_t seed;
    SafetensorsDtype dtype;   /* ST_N_DTYPES: the preset's default (bf16 for llama2-7b) */
    size_t max_shard_bytes;   /* 0: one file */
} ModelInitOptions;

void model_init_options_default(ModelInitOptions *o, const char *preset, const char *out);

/* Writes OUT atomically (a temporary directory renamed into place). */
int model_init_from_preset(const ModelInitOptions *o, Error *err);

#endif

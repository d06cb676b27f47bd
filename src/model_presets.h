/* Named model shapes for `modpo init-model`: a CI-sized model, one of about
 * 100M parameters for CPU benchmarks, and Llama-2-7B's shape for GPU work. */
#ifndef MODPO_MODEL_PRESETS_H
#define MODPO_MODEL_PRESETS_H

#include <stddef.h>

#include "llama.h"

typedef struct {
    const char *name;
    const char *summary;
    /* vocab_size 0 means "exactly the tokenizer's vocabulary"; bos/eos are
     * always taken from the tokenizer. */
    LlamaConfig config;
} LlamaPreset;

size_t llama_preset_count(void);
const LlamaPreset *llama_preset_at(size_t i);
/* NULL for an unknown name. */
const LlamaPreset *llama_preset_find(const char *name);

#endif

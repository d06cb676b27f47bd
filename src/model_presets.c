#include "model_presets.h"

#include <string.h>

/* Field order of LlamaConfig: hidden, intermediate, layers, heads, kv heads,
 * vocab, max positions, rms eps, rope theta, tied, bos, eos.  bos/eos are
 * placeholders: init-model takes them from the tokenizer. */
static const LlamaPreset presets[] = {
    {"tiny", "CI-sized: hidden 64, 2 layers, 4 heads / 2 kv heads (GQA), the tokenizer's vocab",
     {64, 176, 2, 4, 2, 0, 512, 1e-5f, 10000.0f, false, 1, 2}},
    /* 85M in the layers + 25M tied embeddings = 110M */
    {"small-100m", "~110M parameters: hidden 768, 12 layers, 12 heads, tied vocab 32000",
     {768, 2048, 12, 12, 12, 32000, 2048, 1e-5f, 10000.0f, true, 1, 2}},
    {"llama2-7b", "Llama-2-7B's shape (6.74B parameters), for GPU benchmarks",
     {4096, 11008, 32, 32, 32, 32000, 4096, 1e-5f, 10000.0f, false, 1, 2}},
};

size_t llama_preset_count(void) { return sizeof presets / sizeof presets[0]; }

const LlamaPreset *llama_preset_at(size_t i)
{
    return i < llama_preset_count() ? &presets[i] : NULL;
}

const LlamaPreset *llama_preset_find(const char *name)
{
    for (size_t i = 0; i < llama_preset_count(); i++)
        if (strcmp(presets[i].name, name) == 0) return &presets[i];
    return NULL;
}

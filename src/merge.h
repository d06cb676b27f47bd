/* Folding a LoRA adapter into the base weights, as PEFT's merge_and_unload:
 * W += (alpha / r) * B @ A for every adapted projection, in fp32. */
#ifndef MODPO_MERGE_H
#define MODPO_MERGE_H

#include <stddef.h>

#include "error.h"
#include "llama.h"
#include "lora.h"
#include "safetensors.h"

/* The adapter must have been made for m's shape (same layers and sizes). */
int lora_merge_into(LlamaModel *m, const LoraAdapter *a, Error *err);

/* `modpo merge` as a function: loads MODEL_DIR and the PEFT adapter in
 * ADAPTER_DIR, merges, and writes a complete Hugging Face directory OUT_DIR
 * (config, weights as dtype ST_F32 or ST_BF16 -- ST_N_DTYPES keeps the base's
 * config.json dtype --, generation config and the base's tokenizer files).
 * OUT_DIR must be missing or empty; it is built as OUT_DIR.tmp-<pid> and
 * renamed at the end, so it either appears complete or not at all. */
int merge_model_dir(const char *model_dir, const char *adapter_dir, const char *out_dir,
                    SafetensorsDtype dtype, size_t max_shard_bytes, Error *err);

#endif

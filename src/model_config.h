/* config.json <-> LlamaConfig.  Reads configs as transformers 4.x writes them
 * (rope_theta, rope_scaling) and as 5.x does (rope_parameters); writes one that
 * transformers' LlamaForCausalLM loads as is.  Only plain Llama is accepted:
 * RoPE scaling, biases, a head_dim other than hidden/heads or an activation
 * other than SiLU are rejected with the key named, never silently ignored. */
#ifndef MODPO_MODEL_CONFIG_H
#define MODPO_MODEL_CONFIG_H

#include <stddef.h>

#include "error.h"
#include "llama.h"

/* Parses config.json at `path`; errors name the file and the key. */
int llama_config_load(const char *path, LlamaConfig *c, Error *err);
/* The same from text in memory; `what` names it in messages. */
int llama_config_parse(const char *text, size_t len, const char *what, LlamaConfig *c, Error *err);
/* Shape sanity: positive sizes, heads divide hidden, kv heads divide heads. */
int llama_config_validate(const LlamaConfig *c, Error *err);

/* Writes config.json; torch_dtype is "float32" or "bfloat16". */
int llama_config_save(const char *path, const LlamaConfig *c, const char *torch_dtype, Error *err);
/* Writes generation_config.json (bos/eos ids). */
int llama_generation_config_save(const char *path, const LlamaConfig *c, Error *err);

/* The "torch_dtype" (4.x) or "dtype" (5.x) string of a config.json, copied
 * into buf; "" when absent.  Lets merge keep the base's precision. */
int llama_config_read_dtype(const char *path, char *buf, size_t size, Error *err);

#endif

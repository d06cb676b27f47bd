/* Llama weights on disk <-> LlamaModel in host memory.
 *
 * A model directory is what Hugging Face publishes: config.json plus either
 * model.safetensors or shards model-0000k-of-0000n.safetensors with
 * model.safetensors.index.json (weight_map: tensor name -> shard).  Loading
 * converts every tensor (F32, BF16 or F16) to fp32 in one allocation and
 * checks names and shapes; tied embeddings have no lm_head tensor and
 * weights.lm_head points at embed_tokens. */
#ifndef MODPO_MODEL_IO_H
#define MODPO_MODEL_IO_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "llama.h"
#include "safetensors.h"

/* One weight tensor of a model with a given config, in a fixed order:
 * embed_tokens, then for each layer the nine tensors of LlamaLayerWeights in
 * declaration order, then norm, then lm_head (absent when tied). */
typedef struct {
    char name[96];   /* HF name, e.g. "model.layers.3.self_attn.q_proj.weight" */
    int ndim;
    int64_t shape[2];
    size_t n_elements;
    int layer;       /* -1 for embed_tokens, norm and lm_head */
    int is_norm;     /* RMSNorm weight (initialised to 1) */
} LlamaTensorInfo;

size_t llama_tensor_count(const LlamaConfig *c);
void llama_tensor_info(const LlamaConfig *c, size_t i, LlamaTensorInfo *out);
/* The address of tensor i's pointer inside w (so loaders can fill it). */
float **llama_tensor_slot(LlamaWeights *w, const LlamaConfig *c, size_t i);
/* Parameter count, tied embeddings counted once. */
size_t llama_param_count(const LlamaConfig *c);

/* Allocates zeroed weights for config c (validated) in one 64-byte aligned
 * block; lm_head aliases embed_tokens when tied. */
int llama_model_alloc(LlamaModel *m, const LlamaConfig *c, Error *err);

/* Loads DIR (config.json + weights).  On error m is left empty. */
int llama_model_load(const char *dir, LlamaModel *m, Error *err);

/* Allocates a model for config c with HF's initialisation: every Linear and
 * the embedding normal(0, 0.02), norms 1.  Values depend only on (seed,
 * tensor name, index), so llama_model_write_random gives identical weights. */
int llama_model_init_random(LlamaModel *m, const LlamaConfig *c, uint64_t seed, Error *err);

/* Writes DIR/config.json, DIR/generation_config.json and the weights as
 * dtype ST_F32 or ST_BF16.  max_shard_bytes 0 writes one model.safetensors;
 * otherwise tensors are packed in order into shards of at most that many
 * bytes (a larger tensor gets a shard of its own) plus the index.  DIR is
 * created if missing.  config.json is written last, so a directory that has
 * one is complete. */
int llama_model_save(const char *dir, const LlamaModel *m, SafetensorsDtype dtype,
                     size_t max_shard_bytes, Error *err);

/* Like llama_model_init_random + llama_model_save, but generates each tensor
 * while writing it, so memory stays bounded (a 7B model in bf16 needs no
 * 27 GB of host memory). */
int llama_model_write_random(const char *dir, const LlamaConfig *c, uint64_t seed,
                             SafetensorsDtype dtype, size_t max_shard_bytes, Error *err);

void llama_model_free(LlamaModel *m);

/* Copies the tokenizer files a model directory may hold (tokenizer.json,
 * tokenizer.model, tokenizer_config.json, special_tokens_map.json,
 * added_tokens.json) and generation_config.json from SRC to DST; returns
 * the number of tokenizer files copied (0 when there were none). */
int llama_copy_tokenizer_files(const char *src_dir, const char *dst_dir, Error *err);

#endif

/* The Llama model as host memory: its hyper-parameters (config.json) and its
 * frozen base weights in fp32, laid out exactly as Hugging Face stores them
 * (a Linear weight is [out_features, in_features], row-major, y = x W^T). */
#ifndef MODPO_LLAMA_H
#define MODPO_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int hidden_size;          /* D */
    int intermediate_size;    /* F */
    int num_hidden_layers;    /* L */
    int num_attention_heads;  /* H */
    int num_key_value_heads;  /* Hkv, divides H (GQA when < H) */
    int vocab_size;           /* V */
    int max_position_embeddings;
    float rms_norm_eps;
    float rope_theta;
    bool tie_word_embeddings;
    int bos_token_id;
    int eos_token_id;
} LlamaConfig;

static inline int llama_head_dim(const LlamaConfig *c) { return c->hidden_size / c->num_attention_heads; }
static inline int llama_kv_dim(const LlamaConfig *c) { return llama_head_dim(c) * c->num_key_value_heads; }

typedef struct {
    float *input_layernorm;          /* [D]              model.layers.i.input_layernorm.weight */
    float *q_proj;                   /* [D, D]           model.layers.i.self_attn.q_proj.weight */
    float *k_proj;                   /* [Dkv, D] */
    float *v_proj;                   /* [Dkv, D] */
    float *o_proj;                   /* [D, D] */
    float *post_attention_layernorm; /* [D] */
    float *gate_proj;                /* [F, D]           model.layers.i.mlp.gate_proj.weight */
    float *up_proj;                  /* [F, D] */
    float *down_proj;                /* [D, F] */
} LlamaLayerWeights;

typedef struct {
    float *embed_tokens;       /* [V, D]  model.embed_tokens.weight */
    LlamaLayerWeights *layers; /* [L] */
    float *norm;               /* [D]     model.norm.weight */
    float *lm_head;            /* [V, D]  lm_head.weight; == embed_tokens when tied */
} LlamaWeights;

/* A loaded model: config plus weights.  `storage` owns every weight buffer
 * (one allocation or an mmap); the pointers in `weights` point into it. */
typedef struct {
    LlamaConfig config;
    LlamaWeights weights;
    void *storage;
    size_t storage_bytes;
} LlamaModel;

#endif

/* LoRA adapters as PEFT defines them: for each targeted Linear W [out, in],
 * y = x W^T + scale * (x A^T) B^T with A [r, in], B [out, r], scale = alpha / r.
 * A starts kaiming-uniform, B zero, so a fresh adapter leaves the model as is.
 * All trainable values of one adapter live in one flat fp32 buffer so the
 * optimizer, the gradient all-reduce and checkpoints see a single vector. */
#ifndef MODPO_LORA_H
#define MODPO_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "llama.h"

typedef enum {
    LORA_Q_PROJ, LORA_K_PROJ, LORA_V_PROJ, LORA_O_PROJ,
    LORA_GATE_PROJ, LORA_UP_PROJ, LORA_DOWN_PROJ,
    LORA_N_TARGETS
} LoraTarget;

typedef struct {
    int rank;
    float alpha;
    unsigned target_mask; /* bit (1u << LoraTarget) set for each targeted projection */
} LoraSpec;

typedef struct {
    size_t a_offset, b_offset; /* into params/grads; valid when the target is set */
    int in_features, out_features;
} LoraSlot;

typedef struct {
    LoraSpec spec;
    int n_layers;
    LoraSlot *slots;  /* [n_layers * LORA_N_TARGETS], index layer * LORA_N_TARGETS + target */
    size_t n_params;
    float *params;    /* [n_params] fp32 master weights */
    float *grads;     /* [n_params] accumulated gradients */
} LoraAdapter;


/* Allocates an adapter for the model shape with every parameter zero. */
int lora_adapter_init(LoraAdapter *a, const LlamaConfig *cfg, LoraSpec spec, Error *err);
/* PEFT's initialisation: A kaiming-uniform (bound 1/sqrt(in_features)), B zero. */
void lora_adapter_randomize(LoraAdapter *a, uint64_t seed);
void lora_adapter_free(LoraAdapter *a);
void lora_adapter_zero_grads(LoraAdapter *a);

static inline float lora_scale(const LoraSpec *s) { return s->alpha / (float)s->rank; }
static inline int lora_has_target(const LoraSpec *s, LoraTarget t) { return (s->target_mask >> t) & 1u; }
/* The slot of (layer, target), or NULL when that projection is not adapted. */
const LoraSlot *lora_slot(const LoraAdapter *a, int layer, LoraTarget t);

/* "q_proj" <-> LORA_Q_PROJ etc.; -1 for an unknown name. */
int lora_target_from_name(const char *name);
const char *lora_target_name(LoraTarget t);
/* "self_attn" or "mlp": the module that holds the projection in HF names. */
const char *lora_target_module(LoraTarget t);

#endif

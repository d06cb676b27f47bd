#include "lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const target_names[LORA_N_TARGETS] = {
    "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
};

int lora_target_from_name(const char *name)
{
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (strcmp(name, target_names[t]) == 0) return t;
    return -1;
}

const char *lora_target_name(LoraTarget t) { return target_names[t]; }

const char *lora_target_module(LoraTarget t)
{
    return t <= LORA_O_PROJ ? "self_attn" : "mlp";
}

static void target_shape(const LlamaConfig *c, LoraTarget t, int *in, int *out)
{
    int d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    switch (t) {
    case LORA_Q_PROJ: case LORA_O_PROJ: *in = d; *out = d; break;
    case LORA_K_PROJ: case LORA_V_PROJ: *in = d; *out = kv; break;
    case LORA_GATE_PROJ: case LORA_UP_PROJ: *in = d; *out = f; break;
    default: *in = f; *out = d; break; /* down_proj */
    }
}

int lora_adapter_init(LoraAdapter *a, const LlamaConfig *cfg, LoraSpec spec, Error *err)
{
    memset(a, 0, sizeof *a);
    if (spec.rank <= 0) return error_set(err, "LoRA rank must be positive, got %d", spec.rank);
    if (spec.target_mask == 0) return error_set(err, "LoRA needs at least one target projection");
    a->spec = spec;
    a->n_layers = cfg->num_hidden_layers;
    a->slots = calloc((size_t)a->n_layers * LORA_N_TARGETS, sizeof *a->slots);
    if (!a->slots) return error_set(err, "out of memory for LoRA slots");
    size_t off = 0;
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            if (!lora_has_target(&spec, (LoraTarget)t)) continue;
            LoraSlot *s = &a->slots[l * LORA_N_TARGETS + t];
            target_shape(cfg, (LoraTarget)t, &s->in_features, &s->out_features);
            s->a_offset = off;
            off += (size_t)spec.rank * (size_t)s->in_features;
            s->b_offset = off;
            off += (size_t)s->out_features * (size_t)spec.rank;
        }
    }
    a->n_params = off;
    a->params = calloc(off, sizeof *a->params);
    a->grads = calloc(off, sizeof *a->grads);
    if (!a->params || !a->grads) {
        lora_adapter_free(a);
        return error_set(err, "out of memory for %zu LoRA parameters", off);
    }
    return 0;
}

const LoraSlot *lora_slot(const LoraAdapter *a, int layer, LoraTarget t)
{
    if (!lora_has_target(&a->spec, t) || layer < 0 || layer >= a->n_layers) return NULL;
    return &a->slots[layer * LORA_N_TARGETS + t];
}

/* splitmix64: a tiny counter-based generator, enough for initialisation. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static double uniform01(uint64_t *state)
{
    return (double)(splitmix64(state) >> 11) * (1.0 / 9007199254740992.0);
}

void lora_adapter_randomize(LoraAdapter *a, uint64_t seed)
{
    uint64_t state = seed;
    memset(a->params, 0, a->n_params * sizeof *a->params);
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            if (!s) continue;
            /* kaiming_uniform_(a=sqrt(5)) as PEFT uses: bound = 1/sqrt(fan_in). */
            double bound = 1.0 / sqrt((double)s->in_features);
            size_t n = (size_t)a->spec.rank * (size_t)s->in_features;
            for (size_t i = 0; i < n; i++)
                a->params[s->a_offset + i] = (float)((2.0 * uniform01(&state) - 1.0) * bound);
        }
    }
}

void lora_adapter_zero_grads(LoraAdapter *a)
{
    memset(a->grads, 0, a->n_params * sizeof *a->grads);
}

void lora_adapter_free(LoraAdapter *a)
{
    free(a->slots);
    free(a->params);
    free(a->grads);
    memset(a, 0, sizeof *a);
}

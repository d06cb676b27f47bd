/* LoRA adapters in PEFT's on-disk format, so PEFT loads ours and we load PEFT's:
 *   adapter_config.json        peft_type "LORA", r, lora_alpha, target_modules...
 *   adapter_model.safetensors  base_model.model.model.layers.{i}.{self_attn|mlp}.
 *                              {proj}.lora_A.weight [r, in], .lora_B.weight [out, r]
 * Only what our LoRA computes is accepted: plain LoRA (no DoRA, rsLoRA, bias,
 * per-layer rank/alpha patterns, layer subsets or extra trainable modules);
 * anything else is an error that names the key. */
#ifndef MODPO_LORA_PEFT_H
#define MODPO_LORA_PEFT_H

#include "error.h"
#include "llama.h"
#include "lora.h"

/* Reads r, lora_alpha and target_modules of DIR/adapter_config.json. */
int lora_peft_read_spec(const char *dir, LoraSpec *spec, Error *err);

/* Loads DIR into a newly initialised adapter for the model shape `cfg`.
 * Every (layer, target) tensor must be present with the right shape; tensors
 * that our adapter would not use are an error too. */
int lora_peft_load(const char *dir, const LlamaConfig *cfg, LoraAdapter *a, Error *err);

/* Writes DIR/adapter_config.json and DIR/adapter_model.safetensors (fp32),
 * creating DIR if needed.  base_model may be NULL. */
int lora_peft_save(const char *dir, const LoraAdapter *a, const char *base_model, Error *err);

#endif

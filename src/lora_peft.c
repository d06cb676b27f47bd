#include "lora_peft.h"

#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"
#include "safetensors.h"

#define CONFIG_NAME "adapter_config.json"
#define WEIGHTS_NAME "adapter_model.safetensors"
/* PeftModelForCausalLM wraps LlamaForCausalLM (".model") as ".base_model.model". */
#define PREFIX "base_model.model.model.layers."

static void tensor_name(char *buf, size_t size, int layer, LoraTarget t, char which)
{
    snprintf(buf, size, PREFIX "%d.%s.%s.lora_%c.weight", layer, lora_target_module(t),
             lora_target_name(t), which);
}

/* ---------------------------------------------------- adapter_config.json */

static int is_set(json_t *v)
{
    if (!v || json_is_null(v) || json_is_false(v)) return 0;
    if (json_is_object(v)) return json_object_size(v) > 0;
    if (json_is_array(v)) return json_array_size(v) > 0;
    return 1;
}

/* Options that change what the adapter computes and that our LoRA does not
 * implement.  Refusing them beats silently computing something else. */
static int reject_unsupported(json_t *root, const char *path, Error *err)
{
    static const struct {
        const char *key, *why;
    } unsupported[] = {
        {"use_dora", "DoRA"},
        {"use_rslora", "rank-stabilised LoRA (scale alpha/sqrt(r))"},
        {"lora_bias", "a LoRA bias"},
        {"fan_in_fan_out", "transposed (Conv1D) weights"},
        {"layers_to_transform", "adapting a subset of layers"},
        {"layer_replication", "layer replication"},
        {"rank_pattern", "per-module ranks"},
        {"alpha_pattern", "per-module alphas"},
        {"modules_to_save", "extra trainable modules"},
        {"exclude_modules", "excluded modules"},
        {"target_parameters", "LoRA on parameters"},
        {"trainable_token_indices", "trainable tokens"},
        {"alora_invocation_tokens", "activated LoRA"},
        {"use_qalora", "QA-LoRA"},
        {"use_bdlora", "block-diagonal LoRA"},
        {"arrow_config", "Arrow routing"},
        {"kasa_config", "KaSA"},
        {"velora_config", "VeLoRA"},
        {"monteclora_config", "MonteCLoRA"},
        {"megatron_config", "Megatron layers"},
    };
    for (size_t i = 0; i < sizeof unsupported / sizeof unsupported[0]; i++)
        if (is_set(json_object_get(root, unsupported[i].key)))
            return error_set(err, "%s: \"%s\" is set: %s is not supported", path,
                             unsupported[i].key, unsupported[i].why);
    json_t *type = json_object_get(root, "peft_type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "LORA") != 0)
        return error_set(err, "%s: \"peft_type\" must be \"LORA\"", path);
    json_t *bias = json_object_get(root, "bias");
    if (bias && !json_is_null(bias) &&
        !(json_is_string(bias) && strcmp(json_string_value(bias), "none") == 0))
        return error_set(err, "%s: \"bias\" must be \"none\": trained biases are not supported",
                         path);
    return 0;
}

/* One entry of target_modules: PEFT matches it as a suffix of the module
 * name, so "q_proj" and "self_attn.q_proj" mean the same; the last component
 * decides. */
static int target_from_entry(const char *entry)
{
    const char *dot = strrchr(entry, '.');
    return lora_target_from_name(dot ? dot + 1 : entry);
}

/* target_modules: a list of names, "all-linear", or a regex (then *mask = 0
 * and the tensors present decide). */
static int parse_targets(json_t *tm, const char *path, unsigned *mask, Error *err)
{
    *mask = 0;
    if (json_is_string(tm)) {
        if (strcmp(json_string_value(tm), "all-linear") == 0)
            *mask = (1u << LORA_N_TARGETS) - 1; /* every Linear but lm_head */
        return 0;
    }
    if (!json_is_array(tm) || json_array_size(tm) == 0)
        return error_set(err, "%s: \"target_modules\" must be a non-empty list or a string", path);
    size_t i;
    json_t *v;
    json_array_foreach(tm, i, v) {
        int t = json_is_string(v) ? target_from_entry(json_string_value(v)) : -1;
        if (t < 0)
            return error_set(err, "%s: target_modules entry %zu (%s) is not one of q_proj, "
                             "k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj", path, i,
                             json_is_string(v) ? json_string_value(v) : "not a string");
        *mask |= 1u << t;
    }
    return 0;
}

static int parse_config(json_t *root, const char *path, LoraSpec *spec, Error *err)
{
    if (!json_is_object(root)) return error_set(err, "%s: not a JSON object", path);
    if (reject_unsupported(root, path, err)) return -1;
    json_t *r = json_object_get(root, "r"), *alpha = json_object_get(root, "lora_alpha");
    if (!json_is_integer(r) || json_integer_value(r) <= 0 || json_integer_value(r) > INT_MAX)
        return error_set(err, "%s: \"r\" must be a positive integer", path);
    if (!json_is_number(alpha) || !(json_number_value(alpha) > 0))
        return error_set(err, "%s: \"lora_alpha\" must be a positive number", path);
    spec->rank = (int)json_integer_value(r);
    spec->alpha = (float)json_number_value(alpha);
    return parse_targets(json_object_get(root, "target_modules"), path, &spec->target_mask, err);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* ------------------------------------------------ adapter_model.safetensors */

/* Parses a PEFT tensor name into (layer, target, 'A'|'B'); -1 if it is not
 * the A or B of a projection we support. */
static int parse_tensor_name(const char *name, int *layer, int *target, char *which)
{
    char module[32], proj[32], ab[2];
    int end = -1;
    if (sscanf(name, PREFIX "%d.%31[^.].%31[^.].lora_%1[AB].weight%n", layer, module, proj, ab,
               &end) != 4 || end < 0 || name[end] != '\0')
        return -1;
    *target = lora_target_from_name(proj);
    if (*target < 0 || strcmp(module, lora_target_module((LoraTarget)*target)) != 0) return -1;
    *which = ab[0];
    return 0;
}

/* Every tensor must be a LoRA A/B for a layer of the model and a target of
 * the config (when the config lists them); collects the targets seen. */
static int scan_tensors(const SafetensorsFile *f, int n_layers, unsigned cfg_mask,
                        unsigned *seen, Error *err)
{
    *seen = 0;
    for (size_t i = 0; i < safetensors_count(f); i++) {
        const char *name = safetensors_tensor(f, i)->name;
        int layer, target;
        char which;
        if (parse_tensor_name(name, &layer, &target, &which) != 0)
            return error_set(err, "%s: unexpected tensor '%s' (only lora_A/lora_B of the "
                             "attention and MLP projections are supported)",
                             safetensors_path(f), name);
        if (layer < 0 || layer >= n_layers)
            return error_set(err, "%s: tensor '%s' is for layer %d but the model has %d layers",
                             safetensors_path(f), name, layer, n_layers);
        if (cfg_mask && !((cfg_mask >> target) & 1u))
            return error_set(err, "%s: tensor '%s' is for %s, which target_modules does not list",
                             safetensors_path(f), name, lora_target_name((LoraTarget)target));
        *seen |= 1u << target;
    }
    return 0;
}

static int read_weights(const SafetensorsFile *f, LoraAdapter *a, Error *err)
{
    int r = a->spec.rank;
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            if (!s) continue;
            char name[160];
            int64_t sa[2] = {r, s->in_features}, sb[2] = {s->out_features, r};
            tensor_name(name, sizeof name, l, (LoraTarget)t, 'A');
            if (safetensors_read_f32(f, name, a->params + s->a_offset, 2, sa, err)) return -1;
            tensor_name(name, sizeof name, l, (LoraTarget)t, 'B');
            if (safetensors_read_f32(f, name, a->params + s->b_offset, 2, sb, err)) return -1;
        }
    }
    return 0;
}

/* Reads the config and opens the weights; the spec's targets are the
 * config's list, or the tensors present when the config gives a regex. */
static int open_adapter(const char *dir, int n_layers, LoraSpec *spec, SafetensorsFile **f,
                        Error *err)
{
    *f = NULL;
    char *cpath = join(dir, CONFIG_NAME), *wpath = join(dir, WEIGHTS_NAME);
    int rc = -1;
    json_error_t jerr;
    json_t *root = NULL;
    if (!cpath || !wpath) {
        error_set(err, "out of memory");
        goto out;
    }
    if (!(root = json_load_file(cpath, 0, &jerr))) {
        if (!fs_exists(cpath)) error_set(err, "%s: missing (not a PEFT adapter directory?)", cpath);
        else error_set(err, "%s: malformed JSON (line %d: %s)", cpath, jerr.line, jerr.text);
        goto out;
    }
    if (parse_config(root, cpath, spec, err)) goto out;
    if (!fs_exists(wpath)) {
        char *bin = join(dir, "adapter_model.bin");
        int has_bin = bin && fs_exists(bin);
        free(bin);
        error_set(err, "%s: missing%s", wpath,
                  has_bin ? " (adapter_model.bin is a pickle: re-save it with safetensors)" : "");
        goto out;
    }
    if (safetensors_open(wpath, f, err)) goto out;
    unsigned seen;
    if (scan_tensors(*f, n_layers, spec->target_mask, &seen, err)) goto out;
    if (spec->target_mask == 0) spec->target_mask = seen;
    if (spec->target_mask == 0) {
        error_set(err, "%s: no LoRA tensors", wpath);
        goto out;
    }
    rc = 0;
out:
    if (rc) {
        safetensors_close(*f);
        *f = NULL;
    }
    json_decref(root);
    free(cpath);
    free(wpath);
    return rc;
}

int lora_peft_read_spec(const char *dir, LoraSpec *spec, Error *err)
{
    SafetensorsFile *f;
    if (open_adapter(dir, INT_MAX, spec, &f, err)) return -1;
    safetensors_close(f);
    return 0;
}

int lora_peft_load(const char *dir, const LlamaConfig *cfg, LoraAdapter *a, Error *err)
{
    memset(a, 0, sizeof *a);
    LoraSpec spec;
    SafetensorsFile *f;
    if (open_adapter(dir, cfg->num_hidden_layers, &spec, &f, err)) return -1;
    int rc = lora_adapter_init(a, cfg, spec, err);
    if (rc == 0) rc = read_weights(f, a, err);
    if (rc) lora_adapter_free(a);
    safetensors_close(f);
    return rc;
}

/* ------------------------------------------------------------------ saving */

static json_t *alpha_json(float alpha)
{
    /* PEFT writes an integer alpha as an integer */
    if (alpha == floorf(alpha) && fabsf(alpha) < 1e9f) return json_integer((json_int_t)alpha);
    return json_real(alpha);
}

/* The keys PEFT 0.21 writes that older PEFT versions also know, with the
 * values that describe plain LoRA. */
static int save_config(const char *path, const LoraAdapter *a, const char *base_model, Error *err)
{
    json_t *targets = json_array();
    for (int t = 0; t < LORA_N_TARGETS; t++)
        if (lora_has_target(&a->spec, (LoraTarget)t))
            json_array_append_new(targets, json_string(lora_target_name((LoraTarget)t)));
    json_t *root = json_pack(
        "{s:{}, s:n, s:o, s:s, s:n, s:b, s:b, s:b, s:b, s:n, s:n, s:n, s:{}, s:o, s:b, s:f, "
        "s:n, s:s, s:n, s:s, s:i, s:{}, s:n, s:o, s:s, s:b, s:b}",
        "alpha_pattern", "auto_mapping", "base_model_name_or_path",
        base_model ? json_string(base_model) : json_null(), "bias", "none", "exclude_modules",
        "fan_in_fan_out", 0, "inference_mode", 1, "init_lora_weights", 1, "lora_bias", 0,
        "layer_replication", "layers_pattern", "layers_to_transform", "loftq_config",
        "lora_alpha", alpha_json(a->spec.alpha), "use_dora", 0, "lora_dropout", 0.0,
        "megatron_config", "megatron_core", "megatron.core", "modules_to_save", "peft_type",
        "LORA", "r", a->spec.rank, "rank_pattern", "revision", "target_modules", targets,
        "task_type", "CAUSAL_LM", "use_rslora", 0, "use_qalora", 0);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!text) return error_set(err, "%s: cannot build JSON", path);
    int rc = fs_write_atomic(path, text, strlen(text), err);
    free(text);
    return rc;
}

static int save_weights(const char *path, const LoraAdapter *a, Error *err)
{
    SafetensorsWriter *w = safetensors_writer_new();
    if (!w) return error_set(err, "out of memory");
    int rc = 0, r = a->spec.rank;
    for (int l = 0; rc == 0 && l < a->n_layers; l++) {
        for (int t = 0; rc == 0 && t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            if (!s) continue;
            char name[160];
            int64_t sa[2] = {r, s->in_features}, sb[2] = {s->out_features, r};
            tensor_name(name, sizeof name, l, (LoraTarget)t, 'A');
            rc = safetensors_writer_add(w, name, ST_F32, 2, sa, a->params + s->a_offset, err);
            tensor_name(name, sizeof name, l, (LoraTarget)t, 'B');
            if (rc == 0)
                rc = safetensors_writer_add(w, name, ST_F32, 2, sb, a->params + s->b_offset, err);
        }
    }
    if (rc == 0) rc = safetensors_writer_write(w, path, err);
    safetensors_writer_free(w);
    return rc;
}

int lora_peft_save(const char *dir, const LoraAdapter *a, const char *base_model, Error *err)
{
    if (fs_mkdir_p(dir, err)) return -1;
    char *cpath = join(dir, CONFIG_NAME), *wpath = join(dir, WEIGHTS_NAME);
    int rc = cpath && wpath ? 0 : error_set(err, "out of memory");
    /* weights first: a directory with a config is a complete adapter */
    if (rc == 0) rc = save_weights(wpath, a, err);
    if (rc == 0) rc = save_config(cpath, a, base_model, err);
    free(cpath);
    free(wpath);
    return rc;
}

#include "model_config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"

/* --------------------------------------------------------------- reading */

static int get_int(json_t *root, const char *what, const char *key, int required, int def,
                   int *out, Error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return error_set(err, "%s: missing key \"%s\"", what, key);
        *out = def;
        return 0;
    }
    if (!json_is_integer(v))
        return error_set(err, "%s: key \"%s\" must be an integer", what, key);
    json_int_t x = json_integer_value(v);
    if (x < -2147483647LL || x > 2147483647LL)
        return error_set(err, "%s: key \"%s\" = %lld is out of range", what, key, (long long)x);
    *out = (int)x;
    return 0;
}

static int get_float(json_t *root, const char *what, const char *key, float def, float *out,
                     Error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        *out = def;
        return 0;
    }
    if (!json_is_number(v)) return error_set(err, "%s: key \"%s\" must be a number", what, key);
    *out = (float)json_number_value(v);
    return 0;
}

/* bos/eos may be null (no such token: -1) or, in newer configs, a list. */
static int get_token_id(json_t *root, const char *what, const char *key, int def, int *out,
                        Error *err)
{
    json_t *v = json_object_get(root, key);
    if (json_is_array(v)) v = json_array_get(v, 0);
    if (json_is_null(v)) {
        *out = -1;
        return 0;
    }
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_integer(v)) return error_set(err, "%s: key \"%s\" must be an integer", what, key);
    *out = (int)json_integer_value(v);
    return 0;
}

/* A key that, when present, must hold one specific value we implement. */
static int expect_string(json_t *root, const char *what, const char *key, const char *want,
                         Error *err)
{
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || strcmp(json_string_value(v), want) != 0)
        return error_set(err, "%s: key \"%s\" must be \"%s\" (only plain Llama is supported)",
                         what, key, want);
    return 0;
}

static int expect_false(json_t *root, const char *what, const char *key, Error *err)
{
    json_t *v = json_object_get(root, key);
    if (v && !json_is_null(v) && !json_is_false(v))
        return error_set(err, "%s: key \"%s\" must be false (biases are not supported)", what, key);
    return 0;
}

static int is_default_rope(json_t *obj)
{
    json_t *t = json_object_get(obj, "rope_type");
    if (!t) t = json_object_get(obj, "type");
    return !t || (json_is_string(t) && strcmp(json_string_value(t), "default") == 0);
}

/* RoPE: 4.x writes rope_theta (+ rope_scaling), 5.x rope_parameters.  Any
 * scaling (linear, dynamic, llama3, yarn...) changes the maths: reject it. */
static int parse_rope(json_t *root, const char *what, LlamaConfig *c, Error *err)
{
    json_t *scaling = json_object_get(root, "rope_scaling");
    if (scaling && !json_is_null(scaling) && !(json_is_object(scaling) && is_default_rope(scaling)))
        return error_set(err, "%s: key \"rope_scaling\" must be null: RoPE scaling is not "
                         "supported", what);
    if (get_float(root, what, "rope_theta", 10000.0f, &c->rope_theta, err)) return -1;
    json_t *params = json_object_get(root, "rope_parameters");
    if (!params || json_is_null(params)) return 0;
    if (!json_is_object(params))
        return error_set(err, "%s: key \"rope_parameters\" must be an object", what);
    if (!is_default_rope(params))
        return error_set(err, "%s: key \"rope_parameters\": rope_type must be \"default\": RoPE "
                         "scaling is not supported", what);
    return get_float(params, what, "rope_theta", c->rope_theta, &c->rope_theta, err);
}

static int parse_head_dim(json_t *root, const char *what, const LlamaConfig *c, Error *err)
{
    int head_dim;
    if (get_int(root, what, "head_dim", 0, 0, &head_dim, err)) return -1;
    if (head_dim != 0 && c->num_attention_heads > 0 &&
        head_dim * c->num_attention_heads != c->hidden_size)
        return error_set(err, "%s: key \"head_dim\" = %d but hidden_size / num_attention_heads = "
                         "%d / %d: a separate head_dim is not supported", what, head_dim,
                         c->hidden_size, c->num_attention_heads);
    return 0;
}

static int parse_root(json_t *root, const char *what, LlamaConfig *c, Error *err)
{
    if (!json_is_object(root)) return error_set(err, "%s: not a JSON object", what);
    memset(c, 0, sizeof *c);
    if (get_int(root, what, "hidden_size", 1, 0, &c->hidden_size, err) ||
        get_int(root, what, "intermediate_size", 1, 0, &c->intermediate_size, err) ||
        get_int(root, what, "num_hidden_layers", 1, 0, &c->num_hidden_layers, err) ||
        get_int(root, what, "num_attention_heads", 1, 0, &c->num_attention_heads, err) ||
        get_int(root, what, "num_key_value_heads", 0, c->num_attention_heads,
                &c->num_key_value_heads, err) ||
        get_int(root, what, "vocab_size", 1, 0, &c->vocab_size, err) ||
        get_int(root, what, "max_position_embeddings", 0, 2048, &c->max_position_embeddings,
                err) ||
        get_float(root, what, "rms_norm_eps", 1e-6f, &c->rms_norm_eps, err) ||
        get_token_id(root, what, "bos_token_id", 1, &c->bos_token_id, err) ||
        get_token_id(root, what, "eos_token_id", 2, &c->eos_token_id, err))
        return -1;
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    if (tie && !json_is_null(tie) && !json_is_boolean(tie))
        return error_set(err, "%s: key \"tie_word_embeddings\" must be true or false", what);
    c->tie_word_embeddings = json_is_true(tie);
    if (parse_rope(root, what, c, err) || parse_head_dim(root, what, c, err) ||
        expect_string(root, what, "model_type", "llama", err) ||
        expect_string(root, what, "hidden_act", "silu", err) ||
        expect_false(root, what, "attention_bias", err) ||
        expect_false(root, what, "mlp_bias", err))
        return -1;
    if (llama_config_validate(c, err)) return error_prefix(err, "%s: ", what);
    return 0;
}

int llama_config_validate(const LlamaConfig *c, Error *err)
{
    if (c->hidden_size <= 0 || c->intermediate_size <= 0 || c->num_hidden_layers <= 0 ||
        c->num_attention_heads <= 0 || c->num_key_value_heads <= 0 || c->vocab_size <= 0 ||
        c->max_position_embeddings <= 0)
        return error_set(err, "model sizes must be positive (hidden %d, intermediate %d, layers "
                         "%d, heads %d, kv heads %d, vocab %d, max positions %d)", c->hidden_size,
                         c->intermediate_size, c->num_hidden_layers, c->num_attention_heads,
                         c->num_key_value_heads, c->vocab_size, c->max_position_embeddings);
    if (c->hidden_size % c->num_attention_heads != 0)
        return error_set(err, "hidden_size %d is not a multiple of num_attention_heads %d",
                         c->hidden_size, c->num_attention_heads);
    if (c->num_attention_heads % c->num_key_value_heads != 0)
        return error_set(err, "num_attention_heads %d is not a multiple of num_key_value_heads %d",
                         c->num_attention_heads, c->num_key_value_heads);
    if (llama_head_dim(c) % 2 != 0)
        return error_set(err, "head dimension %d must be even for RoPE", llama_head_dim(c));
    if (!(c->rms_norm_eps > 0.0f) || !(c->rope_theta > 0.0f))
        return error_set(err, "rms_norm_eps (%g) and rope_theta (%g) must be positive",
                         (double)c->rms_norm_eps, (double)c->rope_theta);
    return 0;
}

int llama_config_parse(const char *text, size_t len, const char *what, LlamaConfig *c, Error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root)
        return error_set(err, "%s: malformed JSON (line %d column %d: %s)", what, jerr.line,
                         jerr.column, jerr.text);
    int rc = parse_root(root, what, c, err);
    json_decref(root);
    return rc;
}

static json_t *load_json(const char *path, Error *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    if (!root) {
        if (jerr.line < 0 || jerr.position == 0)
            error_set(err, "cannot read %s: %s", path, jerr.text);
        else
            error_set(err, "%s: malformed JSON (line %d column %d: %s)", path, jerr.line,
                      jerr.column, jerr.text);
    }
    return root;
}

int llama_config_load(const char *path, LlamaConfig *c, Error *err)
{
    json_t *root = load_json(path, err);
    if (!root) return -1;
    int rc = parse_root(root, path, c, err);
    json_decref(root);
    return rc;
}

int llama_config_read_dtype(const char *path, char *buf, size_t size, Error *err)
{
    json_t *root = load_json(path, err);
    if (!root) return -1;
    json_t *v = json_object_get(root, "dtype");
    if (!json_is_string(v)) v = json_object_get(root, "torch_dtype");
    snprintf(buf, size, "%s", json_is_string(v) ? json_string_value(v) : "");
    json_decref(root);
    return 0;
}

/* --------------------------------------------------------------- writing */

/* The shortest decimal that reads back as the same float, so 1e-5f is
 * written "1e-05" rather than 9.99999975e-06. */
static double short_decimal(float f)
{
    char buf[32];
    for (int p = 1; p <= 9; p++) {
        snprintf(buf, sizeof buf, "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return strtod(buf, NULL);
}

static json_t *token_json(int id) { return id >= 0 ? json_integer(id) : json_null(); }

static int dump_json(json_t *root, const char *path, Error *err)
{
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER |
                                             JSON_REAL_PRECISION(9)) : NULL;
    json_decref(root);
    if (!text) return error_set(err, "%s: cannot build JSON", path);
    size_t n = strlen(text);
    char *buf = realloc(text, n + 2);
    if (!buf) {
        free(text);
        return error_set(err, "%s: out of memory", path);
    }
    buf[n] = '\n';
    buf[n + 1] = '\0';
    int rc = fs_write_atomic(path, buf, n + 1, err);
    free(buf);
    return rc;
}

/* What transformers 5 writes for LlamaForCausalLM, plus rope_theta and
 * torch_dtype so that 4.x reads the same values. */
int llama_config_save(const char *path, const LlamaConfig *c, const char *torch_dtype, Error *err)
{
    json_t *root = json_pack(
        "{s:[s], s:b, s:f, s:o, s:s, s:o, s:s, s:i, s:i, s:f, s:i, s:i, s:b, s:s, s:i, s:i, "
        "s:i, s:n, s:i, s:f, s:{s:f, s:s}, s:f, s:b, s:s, s:b, s:i}",
        "architectures", "LlamaForCausalLM",
        "attention_bias", 0,
        "attention_dropout", 0.0,
        "bos_token_id", token_json(c->bos_token_id),
        "dtype", torch_dtype,
        "eos_token_id", token_json(c->eos_token_id),
        "hidden_act", "silu",
        "head_dim", llama_head_dim(c),
        "hidden_size", c->hidden_size,
        "initializer_range", 0.02,
        "intermediate_size", c->intermediate_size,
        "max_position_embeddings", c->max_position_embeddings,
        "mlp_bias", 0,
        "model_type", "llama",
        "num_attention_heads", c->num_attention_heads,
        "num_hidden_layers", c->num_hidden_layers,
        "num_key_value_heads", c->num_key_value_heads,
        "pad_token_id",
        "pretraining_tp", 1,
        "rms_norm_eps", short_decimal(c->rms_norm_eps),
        "rope_parameters", "rope_theta", short_decimal(c->rope_theta), "rope_type", "default",
        "rope_theta", short_decimal(c->rope_theta),
        "tie_word_embeddings", c->tie_word_embeddings,
        "torch_dtype", torch_dtype,
        "use_cache", 1,
        "vocab_size", c->vocab_size);
    return dump_json(root, path, err);
}

int llama_generation_config_save(const char *path, const LlamaConfig *c, Error *err)
{
    json_t *root = json_pack("{s:b, s:o, s:o}", "_from_model_config", 1,
                             "bos_token_id", token_json(c->bos_token_id),
                             "eos_token_id", token_json(c->eos_token_id));
    return dump_json(root, path, err);
}

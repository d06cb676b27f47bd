/* Llama model directories: config.json parsing, loading single-file, sharded
 * and tied-embedding models written by transformers (tests/gen_model_fixtures.py),
 * the errors for broken directories, saving, and random initialisation. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "llama.h"
#include "model_config.h"
#include "model_io.h"
#include "model_presets.h"
#include "safetensors.h"
#include "tokenizer.h"

#define FIX "tests/fixtures/model/"

/* ------------------------------------------------------------- helpers */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/modpo-mio-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void sh(const char *fmt, const char *a, const char *b)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, fmt, a, b);
    ck_assert_msg(system(cmd) == 0, "%s", cmd);
}

static void remove_tmpdir(void) { sh("rm -rf '%s'%s", tmpdir, ""); }

static const char *tmp_path(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, 256, "%s/%s", tmpdir, name);
    return buf;
}

/* A copy of a fixture directory to break. */
static const char *copy_fixture(const char *fixture, const char *name)
{
    const char *dst = tmp_path(name);
    sh("cp -r '" FIX "%s' '%s'", fixture, dst);
    return dst;
}

/* Sets key in DIR/config.json to the JSON value `value` (NULL deletes it). */
static void edit_config(const char *dir, const char *key, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(root);
    if (value) json_object_set_new(root, key, json_loads(value, JSON_DECODE_ANY, NULL));
    else json_object_del(root, key);
    ck_assert_int_eq(json_dump_file(root, path, JSON_INDENT(1)), 0);
    json_decref(root);
}

static void expect_load_error(const char *dir, const char *s1, const char *s2, const char *s3)
{
    LlamaModel m;
    Error err = {{0}};
    ck_assert_int_eq(llama_model_load(dir, &m, &err), -1);
    ck_assert_ptr_null(m.storage);
    const char *want[3] = {s1, s2, s3};
    for (int i = 0; i < 3; i++)
        if (want[i]) ck_assert_msg(strstr(err.msg, want[i]), "'%s' not in: %s", want[i], err.msg);
}

static void load_ok(const char *dir, LlamaModel *m)
{
    Error err = {{0}};
    ck_assert_msg(llama_model_load(dir, m, &err) == 0, "%s", err.msg);
}

/* Every tensor's first values and sum against what torch saw. */
static void check_against_expected(const LlamaModel *m, const char *expected_json)
{
    json_t *want = json_load_file(expected_json, 0, NULL);
    ck_assert_ptr_nonnull(want);
    size_t n = llama_tensor_count(&m->config);
    ck_assert_uint_eq(n, json_object_size(want));
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&m->config, i, &t);
        json_t *w = json_object_get(want, t.name);
        ck_assert_msg(w != NULL, "%s not expected", t.name);
        json_t *shape = json_object_get(w, "shape"), *first = json_object_get(w, "first");
        ck_assert_int_eq(t.ndim, (int)json_array_size(shape));
        for (int d = 0; d < t.ndim; d++)
            ck_assert_int_eq(t.shape[d], json_integer_value(json_array_get(shape, (size_t)d)));
        const float *p = *llama_tensor_slot((LlamaWeights *)&m->weights, &m->config, i);
        for (size_t k = 0; k < json_array_size(first); k++)
            ck_assert_msg(p[k] == (float)json_number_value(json_array_get(first, k)),
                          "%s[%zu]", t.name, k);
        double sum = 0, ref = json_number_value(json_object_get(w, "sum"));
        for (size_t k = 0; k < t.n_elements; k++) sum += p[k];
        ck_assert_msg(fabs(sum - ref) < 1e-9 * (1 + fabs(ref)), "%s: sum %.12g vs %.12g", t.name,
                      sum, ref);
    }
    json_decref(want);
}

/* Field by field: struct padding is not part of the value. */
static int config_eq(const LlamaConfig *a, const LlamaConfig *b)
{
    return a->hidden_size == b->hidden_size && a->intermediate_size == b->intermediate_size &&
           a->num_hidden_layers == b->num_hidden_layers &&
           a->num_attention_heads == b->num_attention_heads &&
           a->num_key_value_heads == b->num_key_value_heads && a->vocab_size == b->vocab_size &&
           a->max_position_embeddings == b->max_position_embeddings &&
           a->rms_norm_eps == b->rms_norm_eps && a->rope_theta == b->rope_theta &&
           a->tie_word_embeddings == b->tie_word_embeddings &&
           a->bos_token_id == b->bos_token_id && a->eos_token_id == b->eos_token_id;
}

static void assert_same_weights(const LlamaModel *a, const LlamaModel *b)
{
    ck_assert(config_eq(&a->config, &b->config));
    for (size_t i = 0; i < llama_tensor_count(&a->config); i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&a->config, i, &t);
        const float *pa = *llama_tensor_slot((LlamaWeights *)&a->weights, &a->config, i);
        const float *pb = *llama_tensor_slot((LlamaWeights *)&b->weights, &b->config, i);
        ck_assert_msg(memcmp(pa, pb, t.n_elements * sizeof(float)) == 0, "%s differs", t.name);
    }
}

/* ------------------------------------------------------------- config */

static int parse(const char *json, LlamaConfig *c, Error *err)
{
    return llama_config_parse(json, strlen(json), "config.json", c, err);
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 176, \"num_hidden_layers\": 2, " \
             "\"num_attention_heads\": 4, \"vocab_size\": 100"

START_TEST(test_config_defaults_and_gqa)
{
    LlamaConfig c;
    Error err = {{0}};
    ck_assert_msg(parse("{" BASE "}", &c, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(c.num_key_value_heads, 4); /* defaults to the heads */
    ck_assert(c.rope_theta == 10000.0f);
    ck_assert(c.rms_norm_eps == 1e-6f);
    ck_assert(!c.tie_word_embeddings);
    ck_assert_int_eq(c.max_position_embeddings, 2048);
    ck_assert_int_eq(c.bos_token_id, 1);
    ck_assert_int_eq(c.eos_token_id, 2);
    ck_assert_int_eq(parse("{" BASE ", \"num_key_value_heads\": 2, \"rope_theta\": 5e5, "
                           "\"tie_word_embeddings\": true, \"bos_token_id\": null, "
                           "\"eos_token_id\": [7, 9], \"rope_scaling\": null, "
                           "\"head_dim\": 16, \"rms_norm_eps\": 1e-5}", &c, &err), 0);
    ck_assert_int_eq(c.num_key_value_heads, 2);
    ck_assert_int_eq(llama_head_dim(&c), 16);
    ck_assert_int_eq(llama_kv_dim(&c), 32);
    ck_assert(c.rope_theta == 500000.0f && c.tie_word_embeddings);
    ck_assert_int_eq(c.bos_token_id, -1);
    ck_assert_int_eq(c.eos_token_id, 7);
    /* transformers 5's rope_parameters wins over nothing */
    ck_assert_int_eq(parse("{" BASE ", \"rope_parameters\": {\"rope_theta\": 1234.0, "
                           "\"rope_type\": \"default\"}}", &c, &err), 0);
    ck_assert(c.rope_theta == 1234.0f);
}
END_TEST

static void expect_config_error(const char *json, const char *s1, const char *s2)
{
    LlamaConfig c;
    Error err = {{0}};
    ck_assert_int_eq(parse(json, &c, &err), -1);
    ck_assert_msg(strstr(err.msg, "config.json"), "file not named: %s", err.msg);
    if (s1) ck_assert_msg(strstr(err.msg, s1), "'%s' not in: %s", s1, err.msg);
    if (s2) ck_assert_msg(strstr(err.msg, s2), "'%s' not in: %s", s2, err.msg);
}

START_TEST(test_config_errors)
{
    expect_config_error("{\"intermediate_size\": 176, \"num_hidden_layers\": 2, "
                        "\"num_attention_heads\": 4, \"vocab_size\": 100}", "missing",
                        "\"hidden_size\"");
    expect_config_error("{" BASE ", \"hidden_size\": \"64\"}", "\"hidden_size\"", "integer");
    expect_config_error("{" BASE ", \"rms_norm_eps\": \"small\"}", "\"rms_norm_eps\"", "number");
    expect_config_error("{" BASE ", \"tie_word_embeddings\": 1}", "tie_word_embeddings", NULL);
    expect_config_error("{" BASE ", \"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
                        "rope_scaling", "not supported");
    expect_config_error("{" BASE ", \"rope_parameters\": {\"rope_type\": \"llama3\", "
                        "\"rope_theta\": 5e5, \"factor\": 8.0}}", "rope_parameters",
                        "not supported");
    expect_config_error("{" BASE ", \"head_dim\": 8}", "head_dim", NULL);
    expect_config_error("{" BASE ", \"hidden_act\": \"gelu\"}", "hidden_act", "silu");
    expect_config_error("{" BASE ", \"attention_bias\": true}", "attention_bias", NULL);
    expect_config_error("{" BASE ", \"mlp_bias\": true}", "mlp_bias", NULL);
    expect_config_error("{" BASE ", \"model_type\": \"mistral\"}", "model_type", NULL);
    expect_config_error("{" BASE ", \"num_key_value_heads\": 3}", "num_key_value_heads", NULL);
    expect_config_error("{" BASE ", \"hidden_size\": 66}", "num_attention_heads", NULL);
    expect_config_error("{" BASE ", \"vocab_size\": 0}", "positive", NULL);
    expect_config_error("{" BASE ",}", "malformed JSON", NULL);
    expect_config_error("[1]", "not a JSON object", NULL);
}
END_TEST

START_TEST(test_config_save_round_trip)
{
    make_tmpdir();
    LlamaConfig c = {48, 128, 3, 6, 2, 77, 300, 1e-5f, 500000.0f, true, 5, -1}, d;
    Error err = {{0}};
    const char *path = tmp_path("config.json");
    ck_assert_int_eq(llama_config_save(path, &c, "bfloat16", &err), 0);
    ck_assert_msg(llama_config_load(path, &d, &err) == 0, "%s", err.msg);
    ck_assert(config_eq(&c, &d));
    char dtype[32];
    ck_assert_int_eq(llama_config_read_dtype(path, dtype, sizeof dtype, &err), 0);
    ck_assert_str_eq(dtype, "bfloat16");
    /* written for humans too: 1e-05, not 9.99999975e-06 */
    json_t *root = json_load_file(path, 0, NULL);
    ck_assert(json_real_value(json_object_get(root, "rms_norm_eps")) == 1e-5);
    ck_assert_str_eq(json_string_value(json_object_get(root, "model_type")), "llama");
    ck_assert(json_is_null(json_object_get(root, "eos_token_id")));
    json_decref(root);
    ck_assert_int_eq(llama_config_load(tmp_path("missing.json"), &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "missing.json"));
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------- loading */

START_TEST(test_load_gqa)
{
    LlamaModel m;
    load_ok(FIX "tiny-gqa", &m);
    const LlamaConfig *c = &m.config;
    ck_assert_int_eq(c->hidden_size, 16);
    ck_assert_int_eq(c->intermediate_size, 40);
    ck_assert_int_eq(c->num_hidden_layers, 2);
    ck_assert_int_eq(c->num_attention_heads, 4);
    ck_assert_int_eq(c->num_key_value_heads, 2);
    ck_assert_int_eq(c->vocab_size, 64);
    ck_assert_int_eq(c->max_position_embeddings, 128);
    ck_assert(c->rms_norm_eps == 1e-5f && c->rope_theta == 10000.0f && !c->tie_word_embeddings);
    ck_assert(m.weights.lm_head != m.weights.embed_tokens);
    ck_assert_uint_eq(((uintptr_t)m.weights.layers[1].k_proj) % 64, 0);
    check_against_expected(&m, FIX "tiny-gqa.expected.json");
    llama_model_free(&m);
    ck_assert_ptr_null(m.storage);
}
END_TEST

START_TEST(test_load_sharded_equals_single)
{
    LlamaModel a, b;
    load_ok(FIX "tiny-gqa", &a);
    load_ok(FIX "tiny-gqa-sharded", &b);
    assert_same_weights(&a, &b);
    llama_model_free(&a);
    llama_model_free(&b);
}
END_TEST

START_TEST(test_load_tied_bf16)
{
    LlamaModel m;
    load_ok(FIX "tiny-tied-bf16", &m);
    ck_assert(m.config.tie_word_embeddings);
    ck_assert_int_eq(m.config.num_key_value_heads, 4);
    ck_assert_int_eq(m.config.vocab_size, 48);
    ck_assert(m.config.rope_theta == 500000.0f);
    ck_assert_ptr_eq(m.weights.lm_head, m.weights.embed_tokens);
    ck_assert_uint_eq(llama_tensor_count(&m.config), 2 + 2 * 9);
    check_against_expected(&m, FIX "tiny-tied-bf16.expected.json");
    llama_model_free(&m);
}
END_TEST

START_TEST(test_load_errors)
{
    make_tmpdir();
    /* a projection whose shape disagrees with config.json */
    const char *d = copy_fixture("tiny-gqa", "shape");
    edit_config(d, "intermediate_size", "41");
    expect_load_error(d, "model.layers.0.mlp.gate_proj.weight", "[40, 16]", "expected [41, 16]");
    expect_load_error(d, "shape/model.safetensors", NULL, NULL);

    /* a tensor missing from the file: rewrite it without one */
    LlamaModel m;
    load_ok(FIX "tiny-gqa", &m);
    d = copy_fixture("tiny-gqa", "missing");
    Error err = {{0}};
    SafetensorsWriter *w = safetensors_writer_new();
    for (size_t i = 0; i < llama_tensor_count(&m.config); i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&m.config, i, &t);
        if (strcmp(t.name, "model.layers.1.mlp.up_proj.weight") == 0) continue;
        ck_assert_int_eq(safetensors_writer_add(w, t.name, ST_F32, t.ndim, t.shape,
                         *llama_tensor_slot(&m.weights, &m.config, i), &err), 0);
    }
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", d);
    ck_assert_int_eq(safetensors_writer_write(w, path, &err), 0);
    safetensors_writer_free(w);
    expect_load_error(d, "missing tensor 'model.layers.1.mlp.up_proj.weight'",
                      "missing/model.safetensors", NULL);

    /* untied config but no lm_head (a tied checkpoint with a wrong config) */
    d = copy_fixture("tiny-tied-bf16", "untied");
    edit_config(d, "tie_word_embeddings", "false");
    expect_load_error(d, "missing tensor 'lm_head.weight'", NULL, NULL);

    /* no weights at all */
    d = tmp_path("empty");
    sh("mkdir '%s' && cp " FIX "tiny-gqa/config.json '%s'", d, d);
    expect_load_error(d, "neither model.safetensors nor", NULL, NULL);
    /* no config */
    expect_load_error(tmp_path("nowhere"), "nowhere/config.json", NULL, NULL);

    /* index naming a shard that is not there, and an index missing a tensor */
    d = copy_fixture("tiny-gqa-sharded", "noshard");
    sh("rm '%s/model-00002-of-00002.safetensors'%s", d, "");
    expect_load_error(d, "model-00002-of-00002.safetensors", "cannot open", NULL);
    d = copy_fixture("tiny-gqa-sharded", "noentry");
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", d);
    json_t *idx = json_load_file(path, 0, NULL);
    json_object_del(json_object_get(idx, "weight_map"), "model.norm.weight");
    json_dump_file(idx, path, 0);
    json_decref(idx);
    expect_load_error(d, "'model.norm.weight'", "weight_map", "index.json");

    /* a truncated shard: the safetensors error comes through with its file */
    d = copy_fixture("tiny-gqa-sharded", "trunc");
    sh("truncate -s 1000 '%s/model-00001-of-00002.safetensors'%s", d, "");
    expect_load_error(d, "model-00001-of-00002.safetensors", "truncated", NULL);

    /* an unsupported config surfaces through the loader */
    d = copy_fixture("tiny-gqa", "rope");
    edit_config(d, "rope_scaling", "{\"rope_type\": \"dynamic\", \"factor\": 2.0}");
    expect_load_error(d, "rope/config.json", "rope_scaling", NULL);
    llama_model_free(&m);
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------- saving */

START_TEST(test_save_f32_round_trip)
{
    make_tmpdir();
    LlamaModel a, b;
    Error err = {{0}};
    load_ok(FIX "tiny-gqa", &a);
    const char *d = tmp_path("sub/dir/f32");
    ck_assert_msg(llama_model_save(d, &a, ST_F32, 0, &err) == 0, "%s", err.msg);
    load_ok(d, &b);
    assert_same_weights(&a, &b);
    ck_assert_int_eq(access(tmp_path("sub/dir/f32/generation_config.json"), F_OK), 0);
    ck_assert_int_eq(access(tmp_path("sub/dir/f32/model.safetensors.index.json"), F_OK), -1);
    llama_model_free(&b);
    llama_model_free(&a);
    remove_tmpdir();
}
END_TEST

START_TEST(test_save_bf16_sharded)
{
    make_tmpdir();
    LlamaModel a, b;
    Error err = {{0}};
    load_ok(FIX "tiny-gqa", &a);
    const char *d = tmp_path("bf16");
    ck_assert_msg(llama_model_save(d, &a, ST_BF16, 4000, &err) == 0, "%s", err.msg);
    load_ok(d, &b);
    for (size_t i = 0; i < llama_tensor_count(&a.config); i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&a.config, i, &t);
        const float *pa = *llama_tensor_slot(&a.weights, &a.config, i);
        const float *pb = *llama_tensor_slot(&b.weights, &b.config, i);
        for (size_t k = 0; k < t.n_elements; k++)
            ck_assert(pb[k] == safetensors_bf16_to_f32(safetensors_f32_to_bf16(pa[k])));
    }
    /* 2 KB embedding each, 4 KB cap: several shards plus the index */
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", d);
    json_t *idx = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(idx);
    json_t *meta = json_object_get(idx, "metadata");
    ck_assert_int_eq(json_integer_value(json_object_get(meta, "total_size")),
                     (json_int_t)(2 * llama_param_count(&a.config)));
    ck_assert_uint_eq(json_object_size(json_object_get(idx, "weight_map")),
                      llama_tensor_count(&a.config));
    const char *last = json_string_value(json_object_get(json_object_get(idx, "weight_map"),
                                                         "lm_head.weight"));
    ck_assert_ptr_nonnull(strstr(last, "-of-"));
    ck_assert_int_eq(strncmp(last, "model-", 6), 0);
    ck_assert_int_eq(strncmp(last + 6, last + 15, 5), 0); /* last shard: k == n */
    json_decref(idx);
    snprintf(path, sizeof path, "%s/config.json", d);
    char dtype[32];
    ck_assert_int_eq(llama_config_read_dtype(path, dtype, sizeof dtype, &err), 0);
    ck_assert_str_eq(dtype, "bfloat16");
    llama_model_free(&b);
    llama_model_free(&a);
    remove_tmpdir();
}
END_TEST

START_TEST(test_save_tied_has_no_lm_head)
{
    make_tmpdir();
    LlamaModel a, b;
    Error err = {{0}};
    load_ok(FIX "tiny-tied-bf16", &a);
    ck_assert_int_eq(llama_model_save(tmp_path("t"), &a, ST_F32, 0, &err), 0);
    SafetensorsFile *f;
    ck_assert_int_eq(safetensors_open(tmp_path("t/model.safetensors"), &f, &err), 0);
    ck_assert_ptr_null(safetensors_find(f, "lm_head.weight"));
    ck_assert_ptr_nonnull(safetensors_find(f, "model.embed_tokens.weight"));
    safetensors_close(f);
    load_ok(tmp_path("t"), &b);
    assert_same_weights(&a, &b);
    ck_assert_ptr_eq(b.weights.lm_head, b.weights.embed_tokens);
    ck_assert_int_eq(llama_model_save(tmp_path("t2"), &a, ST_F16, 0, &err), -1);
    llama_model_free(&b);
    llama_model_free(&a);
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------- random */

START_TEST(test_random_init)
{
    const LlamaPreset *p = llama_preset_find("tiny");
    ck_assert_ptr_nonnull(p);
    LlamaConfig c = p->config;
    c.vocab_size = 300;
    LlamaModel a, b, x;
    Error err = {{0}};
    ck_assert_int_eq(llama_model_init_random(&a, &c, 42, &err), 0);
    ck_assert_int_eq(llama_model_init_random(&b, &c, 42, &err), 0);
    ck_assert_int_eq(llama_model_init_random(&x, &c, 43, &err), 0);
    assert_same_weights(&a, &b);
    ck_assert(memcmp(a.weights.layers[0].q_proj, x.weights.layers[0].q_proj, 64) != 0);
    for (int i = 0; i < c.hidden_size; i++) {
        ck_assert(a.weights.norm[i] == 1.0f);
        ck_assert(a.weights.layers[1].input_layernorm[i] == 1.0f);
    }
    /* normal(0, 0.02): 300*64 = 19200 draws give mean and std to well under 5% */
    double s = 0, s2 = 0;
    size_t n = (size_t)c.vocab_size * (size_t)c.hidden_size;
    for (size_t i = 0; i < n; i++) {
        s += a.weights.embed_tokens[i];
        s2 += (double)a.weights.embed_tokens[i] * a.weights.embed_tokens[i];
    }
    double mean = s / (double)n, std = sqrt(s2 / (double)n - mean * mean);
    ck_assert_msg(fabs(mean) < 0.001 && fabs(std - 0.02) < 0.001, "mean %g std %g", mean, std);
    /* distinct tensors of the same shape get distinct values */
    ck_assert(memcmp(a.weights.layers[0].q_proj, a.weights.layers[0].o_proj, 64) != 0);
    ck_assert(memcmp(a.weights.layers[0].q_proj, a.weights.layers[1].q_proj, 64) != 0);
    ck_assert(memcmp(a.weights.embed_tokens, a.weights.lm_head, 64) != 0);

    /* Streaming writer: same values, bf16-rounded. */
    make_tmpdir();
    ck_assert_msg(llama_model_write_random(tmp_path("r"), &c, 42, ST_BF16, 20000, &err) == 0,
                  "%s", err.msg);
    LlamaModel r;
    load_ok(tmp_path("r"), &r);
    for (size_t i = 0; i < llama_tensor_count(&c); i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&c, i, &t);
        const float *pa = *llama_tensor_slot(&a.weights, &c, i);
        const float *pr = *llama_tensor_slot(&r.weights, &c, i);
        for (size_t k = 0; k < t.n_elements; k++)
            ck_assert(pr[k] == safetensors_bf16_to_f32(safetensors_f32_to_bf16(pa[k])));
    }
    ck_assert_int_eq(access(tmp_path("r/model.safetensors.index.json"), F_OK), 0);
    ck_assert_int_eq(llama_model_write_random(tmp_path("f"), &c, 42, ST_F32, 0, &err), 0);
    LlamaModel f;
    load_ok(tmp_path("f"), &f);
    assert_same_weights(&a, &f);
    llama_model_free(&f);
    llama_model_free(&r);
    remove_tmpdir();
    llama_model_free(&a);
    llama_model_free(&b);
    llama_model_free(&x);
}
END_TEST

START_TEST(test_presets)
{
    const LlamaPreset *p = llama_preset_find("llama2-7b");
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(llama_param_count(&p->config), 6738415616ull); /* Llama-2-7b-hf */
    Error err = {{0}};
    ck_assert_int_eq(llama_config_validate(&p->config, &err), 0);
    p = llama_preset_find("small-100m");
    ck_assert_ptr_nonnull(p);
    size_t n = llama_param_count(&p->config);
    ck_assert_msg(n > 90000000 && n < 130000000, "%zu", n);
    ck_assert_int_eq(llama_config_validate(&p->config, &err), 0);
    p = llama_preset_find("tiny");
    ck_assert_int_eq(p->config.vocab_size, 0); /* from the tokenizer */
    ck_assert_int_lt(p->config.num_key_value_heads, p->config.num_attention_heads);
    ck_assert_ptr_null(llama_preset_find("huge"));
    ck_assert_uint_ge(llama_preset_count(), 3);
}
END_TEST

/* `modpo init-model` end to end with the committed tiny tokenizer (the
 * default --tokenizer, resolved from the repository root). */
START_TEST(test_cmd_init_model)
{
    make_tmpdir();
    char out[256];
    snprintf(out, sizeof out, "%s/tiny", tmpdir);
    char *argv[] = {"init-model", "--preset", "tiny", "--out", out, "--seed", "7", NULL};
    ck_assert_int_eq(cmd_init_model(7, argv), 0);
    LlamaModel m, r;
    load_ok(out, &m);
    Tokenizer *tok;
    Error err = {{0}};
    ck_assert_msg(tokenizer_load_dir(out, &tok, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(m.config.vocab_size, tokenizer_vocab_size(tok));
    ck_assert_int_eq(m.config.bos_token_id, tokenizer_bos_id(tok));
    ck_assert_int_eq(m.config.eos_token_id, tokenizer_eos_id(tok));
    tokenizer_free(tok);
    ck_assert_int_eq(m.config.hidden_size, 64);
    ck_assert_int_eq(m.config.num_key_value_heads, 2);
    ck_assert_int_eq(llama_model_init_random(&r, &m.config, 7, &err), 0);
    assert_same_weights(&m, &r);
    llama_model_free(&r);
    llama_model_free(&m);

    ck_assert_int_eq(cmd_init_model(7, argv), 1); /* not empty: refused */
    char *bad_preset[] = {"init-model", "--preset", "huge", "--out", (char *)tmp_path("h"), NULL};
    ck_assert_int_eq(cmd_init_model(5, bad_preset), 1);
    char *bad_tok[] = {"init-model", "--preset", "tiny", "--out", (char *)tmp_path("t"),
                       "--tokenizer", (char *)tmp_path("no-such-tokenizer"), NULL};
    ck_assert_int_eq(cmd_init_model(7, bad_tok), 1);
    ck_assert_int_eq(access(tmp_path("t"), F_OK), -1);
    char *bf16[] = {"init-model", "--preset", "tiny", "--out", (char *)tmp_path("b"), "--dtype",
                    "bf16", NULL};
    ck_assert_int_eq(cmd_init_model(7, bf16), 0);
    SafetensorsFile *f;
    ck_assert_int_eq(safetensors_open(tmp_path("b/model.safetensors"), &f, &err), 0);
    ck_assert_int_eq(safetensors_find(f, "lm_head.weight")->dtype, ST_BF16);
    safetensors_close(f);
    char *help[] = {"init-model", "--help", NULL};
    ck_assert_int_eq(cmd_init_model(2, help), 0);
    remove_tmpdir();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("model_io");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, test_config_defaults_and_gqa);
    tcase_add_test(tc, test_config_errors);
    tcase_add_test(tc, test_config_save_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("load");
    tcase_add_test(tc, test_load_gqa);
    tcase_add_test(tc, test_load_sharded_equals_single);
    tcase_add_test(tc, test_load_tied_bf16);
    tcase_add_test(tc, test_load_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("save");
    tcase_add_test(tc, test_save_f32_round_trip);
    tcase_add_test(tc, test_save_bf16_sharded);
    tcase_add_test(tc, test_save_tied_has_no_lm_head);
    tcase_add_test(tc, test_random_init);
    tcase_add_test(tc, test_presets);
    tcase_add_test(tc, test_cmd_init_model);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

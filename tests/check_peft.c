/* PEFT's adapter format and merging, against an adapter PEFT wrote and the
 * weights PEFT's merge_and_unload produced (tests/gen_model_fixtures.py).
 * The other direction -- PEFT loading what we write -- is checked by
 * `python tests/gen_model_fixtures.py --check-c` on what test_c_outputs leaves
 * in build/test-out/peft/. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "commands.h"
#include "fs_util.h"
#include "lora.h"
#include "lora_peft.h"
#include "merge.h"
#include "model_io.h"
#include "safetensors.h"

#define FIX "tests/fixtures/model/"
#define ADAPTER FIX "peft-adapter"
#define C_OUT "build/test-out/peft"

/* ------------------------------------------------------------- helpers */

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/modpo-peft-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void remove_tmpdir(void) { ck_assert_int_eq(fs_remove_tree(tmpdir, NULL), 0); }

static const char *tmp_path(const char *name)
{
    static char bufs[4][256];
    static int next;
    char *buf = bufs[next++ % 4];
    snprintf(buf, 256, "%s/%s", tmpdir, name);
    return buf;
}

static const char *copy_adapter(const char *name)
{
    const char *dst = tmp_path(name);
    char cmd[512];
    snprintf(cmd, sizeof cmd, "cp -r '" ADAPTER "' '%s'", dst);
    ck_assert_int_eq(system(cmd), 0);
    return dst;
}

static void edit_config(const char *dir, const char *key, const char *value)
{
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    ck_assert_ptr_nonnull(root);
    json_object_set_new(root, key, json_loads(value, JSON_DECODE_ANY, NULL));
    ck_assert_int_eq(json_dump_file(root, path, JSON_INDENT(1)), 0);
    json_decref(root);
}

static void load_model(const char *dir, LlamaModel *m)
{
    Error err = {{0}};
    ck_assert_msg(llama_model_load(dir, m, &err) == 0, "%s", err.msg);
}

static void expect_adapter_error(const char *dir, const LlamaConfig *c, const char *s1,
                                 const char *s2)
{
    LoraAdapter a;
    Error err = {{0}};
    ck_assert_int_eq(lora_peft_load(dir, c, &a, &err), -1);
    ck_assert_ptr_null(a.params);
    if (s1) ck_assert_msg(strstr(err.msg, s1), "'%s' not in: %s", s1, err.msg);
    if (s2) ck_assert_msg(strstr(err.msg, s2), "'%s' not in: %s", s2, err.msg);
}

/* Every weight of `m` against PEFT's merge: adapted projections from
 * peft-merged.safetensors within tol (after optional bf16 rounding), all
 * others equal to the base. */
static void check_merged(const LlamaModel *m, const LlamaModel *base, int bf16, float tol)
{
    SafetensorsFile *ref;
    Error err = {{0}};
    ck_assert_int_eq(safetensors_open(FIX "peft-merged.safetensors", &ref, &err), 0);
    size_t n_adapted = 0;
    for (size_t i = 0; i < llama_tensor_count(&m->config); i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&m->config, i, &t);
        const float *got = *llama_tensor_slot((LlamaWeights *)&m->weights, &m->config, i);
        const float *orig = *llama_tensor_slot((LlamaWeights *)&base->weights, &base->config, i);
        float *want = malloc(t.n_elements * sizeof *want);
        if (safetensors_find(ref, t.name)) {
            ck_assert_int_eq(safetensors_read_f32(ref, t.name, want, t.ndim, t.shape, &err), 0);
            n_adapted++;
        } else {
            memcpy(want, orig, t.n_elements * sizeof *want);
        }
        for (size_t k = 0; k < t.n_elements; k++) {
            float w = bf16 ? safetensors_bf16_to_f32(safetensors_f32_to_bf16(want[k])) : want[k];
            ck_assert_msg(fabsf(got[k] - w) <= tol, "%s[%zu]: %.9g vs PEFT %.9g", t.name, k,
                          (double)got[k], (double)w);
        }
        free(want);
    }
    ck_assert_uint_eq(n_adapted, safetensors_count(ref)); /* 7 targets x 2 layers */
    ck_assert_uint_eq(n_adapted, 14);
    safetensors_close(ref);
}

/* ------------------------------------------------------------- loading */

START_TEST(test_load_peft_adapter)
{
    LlamaModel m;
    load_model(FIX "tiny-gqa", &m);
    LoraAdapter a;
    Error err = {{0}};
    ck_assert_msg(lora_peft_load(ADAPTER, &m.config, &a, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(a.spec.rank, 4);
    ck_assert(a.spec.alpha == 6.0f);
    ck_assert_uint_eq(a.spec.target_mask, (1u << LORA_N_TARGETS) - 1);
    ck_assert_int_eq(a.n_layers, 2);
    /* every slot holds exactly the file's tensor of its name */
    SafetensorsFile *f;
    ck_assert_int_eq(safetensors_open(ADAPTER "/adapter_model.safetensors", &f, &err), 0);
    ck_assert_uint_eq(safetensors_count(f), 2 * 7 * 2);
    const LoraSlot *s = lora_slot(&a, 1, LORA_DOWN_PROJ);
    ck_assert_int_eq(s->in_features, 40);
    ck_assert_int_eq(s->out_features, 16);
    const SafetensorsTensor *t =
        safetensors_find(f, "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight");
    ck_assert_mem_eq(a.params + s->b_offset, t->data, t->nbytes);
    s = lora_slot(&a, 0, LORA_K_PROJ);
    ck_assert_int_eq(s->out_features, 8); /* GQA: 2 kv heads x 4 */
    t = safetensors_find(f, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight");
    ck_assert_mem_eq(a.params + s->a_offset, t->data, t->nbytes);
    safetensors_close(f);

    LoraSpec spec;
    ck_assert_int_eq(lora_peft_read_spec(ADAPTER, &spec, &err), 0);
    ck_assert_int_eq(spec.rank, 4);
    ck_assert_uint_eq(spec.target_mask, a.spec.target_mask);
    lora_adapter_free(&a);
    llama_model_free(&m);
}
END_TEST

START_TEST(test_load_errors)
{
    make_tmpdir();
    LlamaModel m;
    load_model(FIX "tiny-gqa", &m);
    struct {
        const char *key, *value, *want;
    } cases[] = {
        {"use_rslora", "true", "\"use_rslora\" is set"},
        {"use_dora", "true", "DoRA"},
        {"bias", "\"lora_only\"", "\"bias\" must be \"none\""},
        {"layers_to_transform", "[0]", "layers_to_transform"},
        {"rank_pattern", "{\"q_proj\": 8}", "rank_pattern"},
        {"alpha_pattern", "{\"q_proj\": 8}", "alpha_pattern"},
        {"modules_to_save", "[\"lm_head\"]", "modules_to_save"},
        {"fan_in_fan_out", "true", "fan_in_fan_out"},
        {"peft_type", "\"IA3\"", "peft_type"},
        {"r", "0", "\"r\""},
        {"r", "\"4\"", "\"r\""},
        {"lora_alpha", "null", "lora_alpha"},
        {"target_modules", "[\"q_proj\", \"lm_head\"]", "lm_head"},
        {"target_modules", "[]", "target_modules"},
        /* the file has all seven; the config claims fewer */
        {"target_modules", "[\"q_proj\", \"v_proj\"]", "does not list"},
        /* a rank the tensors do not have: shape error naming the tensor */
        {"r", "8", "[8, 16]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "case%zu", i);
        const char *d = copy_adapter(name);
        edit_config(d, cases[i].key, cases[i].value);
        expect_adapter_error(d, &m.config, cases[i].want, "adapter_");
    }

    /* a regex target_modules: the tensors present decide */
    const char *d = copy_adapter("regex");
    edit_config(d, "target_modules", "\".*\\\\.(q|k|v|o|gate|up|down)_proj\"");
    LoraAdapter a;
    Error err = {{0}};
    ck_assert_msg(lora_peft_load(d, &m.config, &a, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(a.spec.target_mask, (1u << LORA_N_TARGETS) - 1);
    lora_adapter_free(&a);

    /* a model with fewer layers than the adapter */
    LlamaConfig one = m.config;
    one.num_hidden_layers = 1;
    expect_adapter_error(ADAPTER, &one, "layer 1", "1 layers");
    /* wrong model width: the shape message names tensor, file and shapes */
    LlamaConfig wide = m.config;
    wide.intermediate_size = 48;
    expect_adapter_error(ADAPTER, &wide, "adapter_model.safetensors", "expected [48, 4]");

    /* missing pieces */
    d = copy_adapter("noweights");
    char path[512];
    snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
    ck_assert_int_eq(unlink(path), 0);
    expect_adapter_error(d, &m.config, "adapter_model.safetensors", "missing");
    expect_adapter_error(tmp_path("nothing"), &m.config, "adapter_config.json", NULL);

    /* a missing tensor and an unexpected one: rewrite the file */
    SafetensorsFile *f;
    ck_assert_int_eq(safetensors_open(ADAPTER "/adapter_model.safetensors", &f, &err), 0);
    const char *drop = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
    for (int variant = 0; variant < 2; variant++) {
        d = copy_adapter(variant ? "extra" : "dropped");
        SafetensorsWriter *w = safetensors_writer_new();
        float *bufs[64] = {0};
        for (size_t i = 0; i < safetensors_count(f); i++) {
            const SafetensorsTensor *t = safetensors_tensor(f, i);
            if (!variant && strcmp(t->name, drop) == 0) continue;
            bufs[i] = malloc(t->nbytes);
            ck_assert_int_eq(safetensors_tensor_to_f32(f, t, bufs[i], &err), 0);
            ck_assert_int_eq(safetensors_writer_add(w, t->name, ST_F32, t->ndim, t->shape,
                                                    bufs[i], &err), 0);
        }
        float extra[4 * 16] = {0};
        int64_t sh[2] = {4, 16};
        if (variant)
            ck_assert_int_eq(safetensors_writer_add(w, "base_model.model.lm_head.lora_A.weight",
                                                    ST_F32, 2, sh, extra, &err), 0);
        snprintf(path, sizeof path, "%s/adapter_model.safetensors", d);
        ck_assert_int_eq(safetensors_writer_write(w, path, &err), 0);
        safetensors_writer_free(w);
        for (int i = 0; i < 64; i++) free(bufs[i]);
        if (variant)
            expect_adapter_error(d, &m.config, "unexpected tensor 'base_model.model.lm_head.lora_A",
                                 "adapter_model.safetensors");
        else
            expect_adapter_error(d, &m.config, "missing tensor", drop);
    }
    safetensors_close(f);
    llama_model_free(&m);
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------- saving */

START_TEST(test_save_round_trip)
{
    make_tmpdir();
    LlamaModel m;
    load_model(FIX "tiny-gqa", &m);
    LoraAdapter a, b;
    Error err = {{0}};
    ck_assert_int_eq(lora_peft_load(ADAPTER, &m.config, &a, &err), 0);
    const char *d = tmp_path("saved");
    ck_assert_msg(lora_peft_save(d, &a, "some/base", &err) == 0, "%s", err.msg);
    ck_assert_msg(lora_peft_load(d, &m.config, &b, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(b.spec.rank, a.spec.rank);
    ck_assert(b.spec.alpha == a.spec.alpha);
    ck_assert_uint_eq(b.spec.target_mask, a.spec.target_mask);
    ck_assert_uint_eq(b.n_params, a.n_params);
    ck_assert_mem_eq(b.params, a.params, a.n_params * sizeof(float));

    /* the config says what PEFT needs, and only plain LoRA */
    json_t *cfg = json_load_file(tmp_path("saved/adapter_config.json"), 0, NULL);
    ck_assert_ptr_nonnull(cfg);
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "peft_type")), "LORA");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "task_type")), "CAUSAL_LM");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "bias")), "none");
    ck_assert_str_eq(json_string_value(json_object_get(cfg, "base_model_name_or_path")),
                     "some/base");
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "r")), 4);
    ck_assert_int_eq(json_integer_value(json_object_get(cfg, "lora_alpha")), 6);
    ck_assert(json_is_false(json_object_get(cfg, "use_rslora")));
    ck_assert(json_is_false(json_object_get(cfg, "use_dora")));
    ck_assert(json_real_value(json_object_get(cfg, "lora_dropout")) == 0.0);
    json_t *tm = json_object_get(cfg, "target_modules");
    ck_assert_uint_eq(json_array_size(tm), 7);
    ck_assert_str_eq(json_string_value(json_array_get(tm, 0)), "q_proj");
    ck_assert_str_eq(json_string_value(json_array_get(tm, 6)), "down_proj");
    json_decref(cfg);
    SafetensorsFile *f;
    ck_assert_int_eq(safetensors_open(tmp_path("saved/adapter_model.safetensors"), &f, &err), 0);
    const SafetensorsTensor *t =
        safetensors_find(f, "base_model.model.model.layers.0.mlp.gate_proj.lora_B.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert(t->dtype == ST_F32 && t->shape[0] == 40 && t->shape[1] == 4);
    safetensors_close(f);

    /* a non-integer alpha survives as a number */
    b.spec.alpha = 2.5f;
    ck_assert_int_eq(lora_peft_save(tmp_path("alpha"), &b, NULL, &err), 0);
    LoraSpec spec;
    ck_assert_int_eq(lora_peft_read_spec(tmp_path("alpha"), &spec, &err), 0);
    ck_assert(spec.alpha == 2.5f);
    lora_adapter_free(&a);
    lora_adapter_free(&b);
    llama_model_free(&m);
    remove_tmpdir();
}
END_TEST

/* ------------------------------------------------------------- merging */

START_TEST(test_merge_matches_peft)
{
    LlamaModel base, m;
    load_model(FIX "tiny-gqa", &base);
    load_model(FIX "tiny-gqa", &m);
    LoraAdapter a;
    Error err = {{0}};
    ck_assert_int_eq(lora_peft_load(ADAPTER, &m.config, &a, &err), 0);
    ck_assert_int_eq(lora_merge_into(&m, &a, &err), 0);
    check_merged(&m, &base, 0, 1e-6f);

    /* an adapter for another shape is refused and leaves the model alone */
    LoraAdapter wrong;
    LlamaConfig c = m.config;
    c.intermediate_size = 48;
    LoraSpec spec = {2, 4.0f, 1u << LORA_DOWN_PROJ};
    ck_assert_int_eq(lora_adapter_init(&wrong, &c, spec, &err), 0);
    float before = m.weights.layers[0].down_proj[0];
    ck_assert_int_eq(lora_merge_into(&m, &wrong, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "down_proj"));
    ck_assert(m.weights.layers[0].down_proj[0] == before);
    lora_adapter_free(&wrong);
    lora_adapter_free(&a);
    llama_model_free(&m);
    llama_model_free(&base);
}
END_TEST

START_TEST(test_cmd_merge)
{
    make_tmpdir();
    LlamaModel base, m;
    load_model(FIX "tiny-gqa", &base);
    char out[256];
    snprintf(out, sizeof out, "%s/merged", tmpdir);
    char *argv[] = {"merge", FIX "tiny-gqa", ADAPTER, "--out", out, NULL};
    ck_assert_int_eq(cmd_merge(5, argv), 0);
    load_model(out, &m);
    check_merged(&m, &base, 0, 1e-6f);
    llama_model_free(&m);
    ck_assert_int_eq(access(tmp_path("merged/generation_config.json"), F_OK), 0);
    /* DIR is not empty now: refused */
    ck_assert_int_eq(cmd_merge(5, argv), 1);

    snprintf(out, sizeof out, "%s/bf16/", tmpdir);
    char *argv2[] = {"merge", FIX "tiny-gqa", ADAPTER, "--out", out, "--dtype", "bf16",
                     "--max-shard-mb", "0", NULL};
    ck_assert_int_eq(cmd_merge(9, argv2), 0);
    load_model(out, &m);
    check_merged(&m, &base, 1, 0.0f);
    llama_model_free(&m);

    char *bad[] = {"merge", FIX "tiny-gqa", "--out", (char *)tmp_path("x"), NULL};
    ck_assert_int_eq(cmd_merge(4, bad), 1);
    char *bad_dtype[] = {"merge", FIX "tiny-gqa", ADAPTER, "--out", (char *)tmp_path("y"), "--dtype",
                         "f16", NULL};
    ck_assert_int_eq(cmd_merge(7, bad_dtype), 1);
    char *no_adapter[] = {"merge", FIX "tiny-gqa", (char *)tmp_path("none"), "--out",
                          (char *)tmp_path("z"), NULL};
    ck_assert_int_eq(cmd_merge(5, no_adapter), 1);
    ck_assert_int_eq(access(tmp_path("z"), F_OK), -1); /* nothing left behind */
    char *help[] = {"merge", "--help", NULL};
    ck_assert_int_eq(cmd_merge(2, help), 0);
    llama_model_free(&base);
    remove_tmpdir();
}
END_TEST

/* A random adapter (nonzero B, r 2, alpha 5, q/v/down) written by us and the
 * model merged by us, left for `gen_model_fixtures.py --check-c`, which loads
 * the adapter with peft.PeftModel.from_pretrained and compares logits. */
START_TEST(test_c_outputs)
{
    Error err = {{0}};
    ck_assert_int_eq(fs_remove_tree(C_OUT, &err), 0);
    LlamaModel m;
    load_model(FIX "tiny-gqa", &m);
    LoraAdapter a;
    LoraSpec spec = {2, 5.0f, (1u << LORA_Q_PROJ) | (1u << LORA_V_PROJ) | (1u << LORA_DOWN_PROJ)};
    ck_assert_int_eq(lora_adapter_init(&a, &m.config, spec, &err), 0);
    lora_adapter_randomize(&a, 99);
    for (int l = 0; l < a.n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(&a, l, (LoraTarget)t);
            if (!s) continue;
            for (int k = 0; k < s->out_features * spec.rank; k++)
                a.params[s->b_offset + (size_t)k] = 0.05f * (float)((k * 7 + l * 3 + t) % 11 - 5);
        }
    }
    ck_assert_msg(lora_peft_save(C_OUT "/adapter", &a, FIX "tiny-gqa", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(lora_merge_into(&m, &a, &err), 0);
    ck_assert_msg(llama_model_save(C_OUT "/merged", &m, ST_F32, 0, &err) == 0, "%s", err.msg);
    lora_adapter_free(&a);
    llama_model_free(&m);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("peft");
    TCase *tc = tcase_create("format");
    tcase_add_test(tc, test_load_peft_adapter);
    tcase_add_test(tc, test_load_errors);
    tcase_add_test(tc, test_save_round_trip);
    suite_add_tcase(s, tc);
    tc = tcase_create("merge");
    tcase_add_test(tc, test_merge_matches_peft);
    tcase_add_test(tc, test_cmd_merge);
    tcase_add_test(tc, test_c_outputs);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

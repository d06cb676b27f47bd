/* Configuration: defaults, the shipped files, --set overrides, and every kind
 * of invalid input named by file, line and key. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"

static char problems[16384];

/* Writes text to a fresh temporary .cfg file and returns its path. */
static const char *write_cfg(const char *text)
{
    static char path[64];
    strcpy(path, "/tmp/modpo-check-XXXXXX.cfg");
    int fd = mkstemps(path, 4);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

static int load_text(Config *c, const char *text)
{
    problems[0] = '\0';
    conf_defaults(c);
    const char *path = write_cfg(text);
    int n = conf_load(c, path, problems, sizeof problems);
    n += conf_validate(c, problems, sizeof problems);
    unlink(path);
    return n;
}

START_TEST(defaults_are_the_seeds)
{
    Config c;
    conf_defaults(&c);
    ck_assert_int_eq(c.lora_r, 16);
    ck_assert_double_eq(c.lora_alpha, 32);
    ck_assert_int_eq(c.sft.steps, 1000);
    ck_assert_int_eq(c.sft.grad_accum, 8);
    ck_assert_double_eq_tol(c.sft.learning_rate, 1e-4, 1e-12);
    ck_assert_double_eq_tol(c.sft.weight_decay, 0.05, 1e-12);
    ck_assert_int_eq(c.n_w, 6);
    ck_assert_double_eq_tol(c.w[2], 0.4, 1e-12);
    ck_assert_str_eq(c.prompt_template, "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n");
    ck_assert_int_eq(c.eval_size, 300);
    ck_assert_int_eq(c.max_new_tokens, 2560);
    ck_assert_int_eq(c.max_input_length, 1536);
    problems[0] = '\0';
    ck_assert_int_eq(conf_validate(&c, problems, sizeof problems), 0);
}
END_TEST

START_TEST(embedded_tiny_config_loads)
{
    Config c;
    conf_defaults(&c);
    problems[0] = '\0';
    ck_assert_int_eq(conf_load(&c, NULL, problems, sizeof problems), 0);
    ck_assert_int_eq(conf_validate(&c, problems, sizeof problems), 0);
    ck_assert_str_eq(c.run_tag, "tiny");
    ck_assert_int_eq(c.sft.steps, 40);
    ck_assert_int_eq(c.lora_r, 8);
    ck_assert_int_eq(c.n_w, 2);
    ck_assert_double_eq_tol(c.w[1], 0.8, 1e-12);
    ck_assert_str_eq(c.model_path, "models/tiny");
}
END_TEST

START_TEST(paper_config_loads_strict)
{
    Config c;
    conf_defaults(&c);
    problems[0] = '\0';
    int n = conf_load(&c, "conf/helpsteer-llama2-7b.cfg", problems, sizeof problems);
    n += conf_validate(&c, problems, sizeof problems);
    ck_assert_msg(n == 0, "problems: %s", problems);
    ck_assert(c.strict);
    ck_assert_int_eq(c.n_w, 6);
    ck_assert_double_eq_tol(c.margin_beta, -0.1, 1e-12);
    ck_assert_int_eq(c.gen_max_length, 4096);
    ck_assert_int_eq(c.max_length, 512);
    ck_assert_int_eq(c.modpo.steps, 1000);
}
END_TEST

START_TEST(unknown_key_names_file_line_and_key)
{
    Config c;
    int n = load_text(&c, "run = {\n  seed = 1;\n  colour = \"red\";\n};\n");
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(problems, ".cfg:3: unknown key 'run.colour'"));
}
END_TEST

START_TEST(unknown_section_is_reported)
{
    Config c;
    int n = load_text(&c, "trainer = { steps = 3; };\n");
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(problems, ":1: unknown key 'trainer.steps'"));
}
END_TEST

START_TEST(wrong_type_is_reported)
{
    Config c;
    int n = load_text(&c, "sft = {\n  steps = \"many\";\n};\n");
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(problems, ":2: key 'sft.steps': expected an integer, got a string"));
}
END_TEST

START_TEST(every_problem_is_listed)
{
    Config c;
    int n = load_text(&c, "sft = { steps = 0; learning_rate = -1.0; };\n"
                          "modpo = { w = [0.0, 0.5, 1.0]; };\n"
                          "generate = { max_length = 100; max_input_length = 200; };\n"
                          "lora = { targets = [\"q_proj\", \"qq_proj\"]; };\n");
    ck_assert_int_eq(n, 5);
    ck_assert_ptr_nonnull(strstr(problems, "'sft.steps': 0 is out of range; allowed: a positive integer"));
    ck_assert_ptr_nonnull(strstr(problems, "'sft.learning_rate': -1 is out of range; allowed: a number in (0, 1]"));
    ck_assert_ptr_nonnull(strstr(problems, "'modpo.w' element 0: 0 is out of range; allowed: a number in (0, 1)"));
    ck_assert_ptr_nonnull(strstr(problems, "'lora.targets': 'qq_proj' is not allowed"));
    ck_assert_ptr_nonnull(strstr(problems, "'generate.max_input_length' (200) must be <= generate.max_length (100)"));
}
END_TEST

START_TEST(w_of_one_is_rejected)
{
    Config c;
    int n = load_text(&c, "modpo = { w = [0.5, 1.0]; };\n");
    ck_assert_int_eq(n, 1);
    ck_assert_ptr_nonnull(strstr(problems, "'modpo.w' element 1: 1 is out of range"));
}
END_TEST

START_TEST(syntax_error_names_the_line)
{
    Config c;
    int n = load_text(&c, "run = {\n  seed = 1;\n  device = = \"cpu\";\n};\n");
    ck_assert_int_ge(n, 1);
    ck_assert_ptr_nonnull(strstr(problems, ".cfg:3: syntax error"));
}
END_TEST

START_TEST(missing_file_is_reported)
{
    Config c;
    conf_defaults(&c);
    problems[0] = '\0';
    ck_assert_int_ge(conf_load(&c, "/nonexistent/x.cfg", problems, sizeof problems), 1);
    ck_assert_ptr_nonnull(strstr(problems, "/nonexistent/x.cfg"));
}
END_TEST

START_TEST(strict_requires_explicit_keys)
{
    Config c;
    int n = load_text(&c, "run = { strict = true; output_root = \"out\"; };\n"
                          "modpo = { beta = 0.1; };\n");
    /* run_tag, w, max_length, gen max_length, max_input_length, eval_size, margin_beta */
    ck_assert_int_eq(n, 7);
    ck_assert_ptr_nonnull(strstr(problems, "key 'run.run_tag' must be set explicitly"));
    ck_assert_ptr_nonnull(strstr(problems, "key 'modpo.w' must be set explicitly"));
    ck_assert_ptr_nonnull(strstr(problems, "key 'modpo.margin_beta' must be set explicitly"));
    ck_assert_ptr_null(strstr(problems, "run.output_root"));
    ck_assert_ptr_null(strstr(problems, "modpo.beta' must"));
}
END_TEST

START_TEST(set_overrides_by_type)
{
    Config c;
    conf_defaults(&c);
    Error err;
    ck_assert_int_eq(conf_set(&c, "modpo.w=0.3,0.7", &err), 0);
    ck_assert_int_eq(c.n_w, 2);
    ck_assert_double_eq_tol(c.w[1], 0.7, 1e-12);
    ck_assert_int_eq(conf_set(&c, "lora.targets=[q_proj, k_proj, down_proj]", &err), 0);
    ck_assert_int_eq(c.n_lora_targets, 3);
    ck_assert_str_eq(c.lora_targets[2], "down_proj");
    ck_assert_int_eq(conf_set(&c, "sft.steps=12", &err), 0);
    ck_assert_int_eq(c.sft.steps, 12);
    ck_assert_int_eq(conf_set(&c, "data.skip_bad_rows=true", &err), 0);
    ck_assert(c.skip_bad_rows);
    ck_assert_int_eq(conf_set(&c, "run.device=cuda", &err), 0);
    ck_assert_str_eq(c.device, "cuda");
}
END_TEST

START_TEST(set_rejects_bad_values)
{
    Config c;
    conf_defaults(&c);
    Error err;
    ck_assert_int_eq(conf_set(&c, "sft.steps=1.5", &err), -1);
    ck_assert_str_eq(err.msg, "--set sft.steps: key 'sft.steps': expected an integer, got '1.5'");
    ck_assert_int_eq(conf_set(&c, "nope.key=1", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown key 'nope.key'"));
    ck_assert_int_eq(conf_set(&c, "run.device=tpu", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "'tpu' is not allowed; allowed: cpu|cuda"));
    ck_assert_int_eq(conf_set(&c, "modpo.w=0.2,x", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "element 1: 'x' is not a number"));
    ck_assert_int_eq(conf_set(&c, "novalue", &err), -1);
    ck_assert_int_eq(conf_set(&c, "data.skip_bad_rows=yes", &err), -1);
}
END_TEST

/* dist.ranks_per_w: 0 (automatic) by default, set like any integer, never
 * negative; written and read back with the rest. */
START_TEST(dist_ranks_per_w_key)
{
    Config c;
    conf_defaults(&c);
    Error err;
    ck_assert_int_eq(c.dist_ranks_per_w, 0);
    ck_assert_int_eq(conf_set(&c, "dist.ranks_per_w=4", &err), 0);
    ck_assert_int_eq(c.dist_ranks_per_w, 4);
    char problems[4096] = "";
    ck_assert_int_eq(conf_validate(&c, problems, sizeof problems), 0);
    ck_assert_int_eq(conf_set(&c, "dist.ranks_per_w=-1", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "dist.ranks_per_w"));
}
END_TEST

START_TEST(written_config_reads_back_equal)
{
    Config a, b;
    conf_defaults(&a);
    Error err;
    ck_assert_int_eq(conf_set(&a, "modpo.w=0.25,0.5", &err), 0);
    ck_assert_int_eq(conf_set(&a, "sft.learning_rate=0.000123456789", &err), 0);
    ck_assert_int_eq(conf_set(&a, "data.prompt_template=Q: \"{raw_prompt}\"\\\n", &err), 0);
    char path[] = "/tmp/modpo-check-rt-XXXXXX";
    int fd = mkstemp(path);
    FILE *f = fdopen(fd, "w");
    conf_write(&a, f);
    fclose(f);
    conf_defaults(&b);
    problems[0] = '\0';
    int n = conf_load(&b, path, problems, sizeof problems);
    ck_assert_msg(n == 0, "%s", problems);
    unlink(path);
    ck_assert_int_eq(b.n_w, 2);
    ck_assert_double_eq(b.w[0], 0.25);
    ck_assert_double_eq(b.sft.learning_rate, a.sft.learning_rate);
    ck_assert_str_eq(b.prompt_template, a.prompt_template);
    ck_assert_str_eq(b.lora_targets[1], "v_proj");
    ck_assert_int_eq(b.gen_max_length, 4096);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("config");
    tcase_add_test(tc, defaults_are_the_seeds);
    tcase_add_test(tc, embedded_tiny_config_loads);
    tcase_add_test(tc, paper_config_loads_strict);
    tcase_add_test(tc, unknown_key_names_file_line_and_key);
    tcase_add_test(tc, unknown_section_is_reported);
    tcase_add_test(tc, wrong_type_is_reported);
    tcase_add_test(tc, every_problem_is_listed);
    tcase_add_test(tc, w_of_one_is_rejected);
    tcase_add_test(tc, syntax_error_names_the_line);
    tcase_add_test(tc, missing_file_is_reported);
    tcase_add_test(tc, strict_requires_explicit_keys);
    tcase_add_test(tc, set_overrides_by_type);
    tcase_add_test(tc, set_rejects_bad_values);
    tcase_add_test(tc, written_config_reads_back_equal);
    tcase_add_test(tc, dist_ranks_per_w_key);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* The tiny pipeline end to end through the real binary (./modpo, run from
 * the repository root): artefacts, learning signals, resumption after
 * SIGKILL, corrupt checkpoints, refusal to overwrite, changed settings. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmp[256];   /* the suite's scratch directory */
static char model[300]; /* one tiny model shared by every run */

static int run_modpo(const char *args, const char *log)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "./modpo %s --set model.path=%s --quiet > %s/%s.out 2> %s/%s.err", args,
             model, tmp, log, tmp, log);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int exists(const char *fmt, const char *a)
{
    char p[1024];
    snprintf(p, sizeof p, fmt, a);
    struct stat st;
    return stat(p, &st) == 0;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    return buf;
}

static int same_file(const char *a, const char *b)
{
    char *x = slurp(a), *y = slurp(b);
    int same = x && y && strcmp(x, y) == 0;
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    if (fa && fb) {
        int ca, cb;
        do { ca = fgetc(fa); cb = fgetc(fb); } while (ca == cb && ca != EOF);
        same = ca == cb;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    free(x); free(y);
    return same;
}

/* The value of `key` in the JSONL records of `kind`, first or last one. */
static double metric(const char *path, const char *kind, const char *key, int last)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s missing", path);
    char line[8192];
    double v = NAN;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        ck_assert_msg(o != NULL, "bad JSON line in %s: %s", path, line);
        if (strcmp(json_string_value(json_object_get(o, "kind")), kind) == 0 && json_object_get(o, key)) {
            v = json_number_value(json_object_get(o, key));
            if (!last) { json_decref(o); break; }
        }
        json_decref(o);
    }
    fclose(f);
    return v;
}

/* Mean of `key` over the `kind` records with step >= from. */
static double metric_mean(const char *path, const char *kind, const char *key, long from)
{
    FILE *f = fopen(path, "r");
    ck_assert_msg(f != NULL, "%s missing", path);
    char line[8192];
    double sum = 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        ck_assert_msg(o != NULL, "bad JSON line in %s: %s", path, line);
        if (strcmp(json_string_value(json_object_get(o, "kind")), kind) == 0 &&
            json_integer_value(json_object_get(o, "step")) >= from && json_object_get(o, key)) {
            sum += json_number_value(json_object_get(o, key));
            n++;
        }
        json_decref(o);
    }
    fclose(f);
    ck_assert_int_gt(n, 0);
    return sum / n;
}

static void setup(void)
{
    strcpy(tmp, "/tmp/modpo-pipeline-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(model, sizeof model, "%s/model", tmp);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./modpo init-model --preset tiny --out %s > /dev/null", model);
    ck_assert_int_eq(system(cmd), 0);
}

static void teardown(void)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

START_TEST(pipeline_end_to_end)
{
    char args[1024], root[512];
    snprintf(root, sizeof root, "%s/full/tiny", tmp);
    snprintf(args, sizeof args, "pipeline conf/tiny.cfg --set run.output_root=%s/full --set dpo.log_steps=1", tmp);
    ck_assert_int_eq(run_modpo(args, "full"), 0);
    const char *artefacts[] = {"sft/DONE", "sft/adapter/adapter_model.safetensors", "sft-model/config.json",
                               "sft-model/model.safetensors", "sft-model/tokenizer.json",
                               "dpo/adapter/adapter_config.json", "check-margin/result.json",
                               "modpo-w0.2/adapter/adapter_model.safetensors",
                               "modpo-w0.8/adapter/adapter_model.safetensors",
                               "gen/sft/00000-of-00001.jsonl", "gen/modpo-w0.2/00000-of-00001.jsonl",
                               "gen/modpo-w0.8/00000-of-00001.jsonl", "score/summary.md",
                               "score/summary.tsv", "score/trade-off.svg", "sft/config.cfg", NULL};
    for (int i = 0; artefacts[i]; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%s", root, artefacts[i]);
        ck_assert_msg(exists("%s", p), "missing %s", p);
    }
    char p[1024];
    /* SFT learns: the best eval loss is below the first one. */
    snprintf(p, sizeof p, "%s/sft/metrics.jsonl", root);
    double first = metric(p, "eval", "eval_loss", 0), best = metric(p, "eval", "best_eval_loss", 1);
    ck_assert_msg(best < first - 1e-3, "SFT eval loss did not fall: %g -> %g", first, best);
    /* The margin adapter beats chance on its training pairs: the accuracy of
     * every logged micro-batch over the second half of DPO (60 steps of 4
     * pairs in conf/tiny.cfg), and on held-out pairs in check-margin. */
    snprintf(p, sizeof p, "%s/dpo/metrics.jsonl", root);
    double train_acc = metric_mean(p, "train", "accuracy", 31);
    ck_assert_msg(train_acc > 0.5, "DPO train accuracy %g", train_acc);
    snprintf(p, sizeof p, "%s/check-margin/result.json", root);
    json_t *res = json_load_file(p, 0, NULL);
    ck_assert_ptr_nonnull(res);
    ck_assert_double_gt(json_number_value(json_object_get(res, "accuracy")), 0.5);
    json_decref(res);
    /* Two w values give two different policies. */
    char a[1024], b[1024];
    snprintf(a, sizeof a, "%s/modpo-w0.2/adapter/adapter_model.safetensors", root);
    snprintf(b, sizeof b, "%s/modpo-w0.8/adapter/adapter_model.safetensors", root);
    ck_assert(!same_file(a, b));
    /* The generation records have the seed's schema. */
    snprintf(p, sizeof p, "%s/gen/modpo-w0.2/00000-of-00001.jsonl", root);
    FILE *f = fopen(p, "r");
    char line[65536];
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        json_t *o = json_loads(line, 0, NULL);
        ck_assert_ptr_nonnull(o);
        const char *keys[] = {"raw_prompt", "prompt", "response", "prompt_response"};
        for (int k = 0; k < 4; k++) ck_assert(json_is_string(json_object_get(o, keys[k])));
        ck_assert(json_is_boolean(json_object_get(o, "response_had_prompt_prefix_match")));
        ck_assert_int_eq(json_object_size(o), 5);
        json_decref(o);
        n++;
    }
    fclose(f);
    ck_assert_int_eq(n, 16);
    /* A rerun skips every stage and changes nothing. */
    ck_assert_int_eq(run_modpo(args, "again"), 0);
    snprintf(p, sizeof p, "%s/again.err", tmp);
    char *err = slurp(p);
    ck_assert_ptr_nonnull(strstr(err, "modpo sft: finished before; skipped"));
    ck_assert_ptr_null(strstr(err, "starting"));
    free(err);
    /* Every command left a log of its stderr under the output root. */
    char cmd0[2048];
    snprintf(cmd0, sizeof cmd0, "grep -q 'modpo sft: starting' %s/logs/pipeline-*.log", root);
    ck_assert_int_eq(system(cmd0), 0);
    /* validate-eval agrees on the run's generation dirs. */
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "./modpo validate-eval %s/gen/sft %s/gen/modpo-w0.8 > /dev/null", root, root);
    ck_assert_int_eq(system(cmd), 0);
    /* The slots of a batch are sampled on several threads, each slot from its
     * own random stream: 1 and 4 threads write the same sampled responses. */
    char gen[2][1024];
    for (int t = 0; t < 2; t++) {
        char copy[4096];
        snprintf(copy, sizeof copy, "mkdir -p %s/thr%d && cp -r %s %s/thr%d/ && rm -rf %s/thr%d/tiny/gen",
                 tmp, t, root, tmp, t, tmp, t);
        ck_assert_int_eq(system(copy), 0);
        snprintf(args, sizeof args, "generate conf/tiny.cfg --model sft --set run.output_root=%s/thr%d "
                 "--set run.threads=%d --set generate.do_sample=true --set generate.batch_size=16",
                 tmp, t, t ? 4 : 1);
        ck_assert_int_eq(run_modpo(args, t ? "gen-4-threads" : "gen-1-thread"), 0);
        snprintf(gen[t], sizeof gen[t], "%s/thr%d/tiny/gen/sft/00000-of-00001.jsonl", tmp, t);
    }
    ck_assert_msg(same_file(gen[0], gen[1]), "%s and %s differ", gen[0], gen[1]);
    snprintf(p, sizeof p, "%s/gen/sft/00000-of-00001.jsonl", root);
    ck_assert_msg(!same_file(p, gen[0]), "sampling gave the greedy responses");
}
END_TEST

/* Starts ./modpo sft in the background and SIGKILLs it once `ckpt` exists. */
static int kill_after_checkpoint(const char *out_root, const char *ckpt)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        char set_root[700], set_model[700];
        snprintf(set_root, sizeof set_root, "run.output_root=%s", out_root);
        snprintf(set_model, sizeof set_model, "model.path=%s", model);
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execl("./modpo", "modpo", "sft", "conf/tiny.cfg", "--set", set_root, "--set", set_model,
              "--quiet", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 60000 && !exists("%s", ckpt); i++) usleep(1000);
    int found = exists("%s", ckpt);
    kill(pid, SIGKILL);
    int st;
    waitpid(pid, &st, 0);
    return found && WIFSIGNALED(st);
}

START_TEST(sigkill_then_rerun_gives_identical_adapter)
{
    char args[1024], ckpt[1024], done[1024];
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/straight", tmp);
    ck_assert_int_eq(run_modpo(args, "straight"), 0);
    snprintf(ckpt, sizeof ckpt, "%s/killed/tiny/sft/checkpoints/checkpoint-00000010.h5", tmp);
    char root[600];
    snprintf(root, sizeof root, "%s/killed", tmp);
    ck_assert_msg(kill_after_checkpoint(root, ckpt), "the run finished before it could be killed");
    snprintf(done, sizeof done, "%s/killed/tiny/sft/DONE", tmp);
    ck_assert(!exists("%s", done));
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/killed", tmp);
    ck_assert_int_eq(run_modpo(args, "resumed"), 0);
    char p[1024], a[1024], b[1024];
    snprintf(p, sizeof p, "%s/resumed.err", tmp);
    char *err = slurp(p);
    ck_assert_msg(strstr(err, "resuming from step") != NULL, "no resume in: %s", err);
    free(err);
    snprintf(a, sizeof a, "%s/straight/tiny/sft/adapter/adapter_model.safetensors", tmp);
    snprintf(b, sizeof b, "%s/killed/tiny/sft/adapter/adapter_model.safetensors", tmp);
    ck_assert(same_file(a, b));
    snprintf(a, sizeof a, "%s/straight/tiny/sft-model/model.safetensors", tmp);
    snprintf(b, sizeof b, "%s/killed/tiny/sft-model/model.safetensors", tmp);
    ck_assert(same_file(a, b));
}
END_TEST

/* DPO's loss is a mean over pairs, so a step of 2 micro-batches of 2 pairs
 * is the step of one micro-batch of 4: the same logged losses and gradient
 * norms (up to the order of float additions) -- the micro-batches are queued
 * before one sync and settled afterwards, each from its own record. */
START_TEST(accumulated_micro_batches_equal_one_batch)
{
    const char *shape[2] = {"--set dpo.batch_size=4 --set dpo.grad_accum=1",
                            "--set dpo.batch_size=2 --set dpo.grad_accum=2"};
    const char *name[2] = {"whole", "accum"};
    char args[1024], log[2][600];
    for (int k = 0; k < 2; k++) {
        const char *common = "conf/tiny.cfg --set sft.steps=10 --set dpo.steps=6 --set dpo.log_steps=1 "
                             "--set dpo.eval_steps=6";
        snprintf(args, sizeof args, "sft %s --set run.output_root=%s/%s", common, tmp, name[k]);
        ck_assert_msg(run_modpo(args, name[k]) == 0, "sft run %s failed", name[k]);
        snprintf(args, sizeof args, "dpo %s --set run.output_root=%s/%s %s", common, tmp, name[k], shape[k]);
        ck_assert_msg(run_modpo(args, name[k]) == 0, "dpo run %s failed", name[k]);
        snprintf(log[k], sizeof log[k], "%s/%s/tiny/dpo/metrics.jsonl", tmp, name[k]);
    }
    const char *keys[] = {"loss", "grad_norm", "rewards/margins", "logps/chosen"};
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        double a = metric(log[0], "train", keys[i], 1), b = metric(log[1], "train", keys[i], 1);
        double ma = metric_mean(log[0], "train", keys[i], 1), mb = metric_mean(log[1], "train", keys[i], 1);
        ck_assert_msg(isfinite(a) && fabs(a - b) <= 1e-5 * fmax(1.0, fabs(a)), "last %s: %.9g vs %.9g", keys[i], a, b);
        ck_assert_msg(fabs(ma - mb) <= 1e-5 * fmax(1.0, fabs(ma)), "mean %s: %.9g vs %.9g", keys[i], ma, mb);
    }
    double ea = metric(log[0], "eval", "eval_loss", 1), eb = metric(log[1], "eval", "eval_loss", 1);
    ck_assert_msg(fabs(ea - eb) <= 1e-5 * fabs(ea), "eval loss %.9g vs %.9g", ea, eb);
}
END_TEST

/* data-stats' count of the frozen passes' work agrees with the rest of its
 * report: every kept helpfulness pair gives two sides, a row is at most one
 * distinct sequence, and a distinct sequence has one label start or more. */
START_TEST(data_stats_counts_frozen_work)
{
    char path[600], line[512], cmd[1500];
    snprintf(path, sizeof path, "%s/stats.out", tmp);
    snprintf(cmd, sizeof cmd, "./modpo data-stats conf/tiny.cfg --set model.path=%s > %s", model, path);
    ck_assert_int_eq(system(cmd), 0);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    long rows = -1, pairs = -1, ties, too_long = -1, sides = -1, distinct = -1, starts = -1, too_long_rows = -1;
    while (fgets(line, sizeof line, f) && sides < 0) { /* the train split comes first */
        sscanf(line, " rows %ld", &rows);
        sscanf(line, " helpfulness %ld %ld %ld", &pairs, &ties, &too_long);
        sscanf(line, " sequences too long %ld of", &too_long_rows);
        sscanf(line, " frozen passes compute %ld pair sides, %ld distinct sequences, %ld label starts",
               &sides, &distinct, &starts);
    }
    fclose(f);
    ck_assert_msg(rows > 0 && pairs > 0 && too_long >= 0 && too_long_rows >= 0 && sides > 0,
                  "data-stats output not as expected: see %s", path);
    ck_assert_int_eq(sides, 2 * (pairs - too_long));
    ck_assert_int_le(distinct, rows - too_long_rows);
    ck_assert_int_lt(distinct, sides); /* HelpSteer's groups share rows between pairs */
    ck_assert_int_le(distinct, starts);
    ck_assert_int_le(starts, sides);
}
END_TEST

START_TEST(corrupt_checkpoint_falls_back)
{
    char args[1024], p[1024];
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/corrupt --stop-after-step 25", tmp);
    ck_assert_int_eq(run_modpo(args, "partial"), 0);
    snprintf(p, sizeof p, "%s/corrupt/tiny/sft/checkpoints/checkpoint-00000020.h5", tmp);
    FILE *f = fopen(p, "r+b");
    ck_assert_ptr_nonnull(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size / 2, SEEK_SET);
    int c = fgetc(f);
    fseek(f, size / 2, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/corrupt", tmp);
    ck_assert_int_eq(run_modpo(args, "fallback"), 0);
    snprintf(p, sizeof p, "%s/fallback.err", tmp);
    char *err = slurp(p);
    ck_assert_msg(strstr(err, "checkpoint-00000020.h5") && strstr(err, "using checkpoint-00000010.h5"),
                  "no fallback warning in: %s", err);
    ck_assert_ptr_nonnull(strstr(err, "resuming from step 10"));
    free(err);
}
END_TEST

START_TEST(foreign_directory_is_refused)
{
    char dir[1024], file[1100], args[1024];
    snprintf(dir, sizeof dir, "%s/foreign/tiny/sft", tmp);
    char cmd[2400];
    snprintf(cmd, sizeof cmd, "mkdir -p %s && echo precious > %s/notes.txt", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/foreign", tmp);
    ck_assert_int_eq(run_modpo(args, "foreign"), 1);
    snprintf(file, sizeof file, "%s/foreign.err", tmp);
    char *err = slurp(file);
    ck_assert_ptr_nonnull(strstr(err, "refusing to overwrite"));
    free(err);
    snprintf(file, sizeof file, "%s/notes.txt", dir);
    char *kept = slurp(file);
    ck_assert_str_eq(kept, "precious\n");
    free(kept);
}
END_TEST

START_TEST(changed_setting_is_refused_unless_forced)
{
    char args[1024], p[1024];
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/changed --stop-after-step 10", tmp);
    ck_assert_int_eq(run_modpo(args, "first"), 0);
    snprintf(args, sizeof args,
             "sft conf/tiny.cfg --set run.output_root=%s/changed --set sft.learning_rate=0.001", tmp);
    ck_assert_int_eq(run_modpo(args, "changed"), 1);
    snprintf(p, sizeof p, "%s/changed.err", tmp);
    char *err = slurp(p);
    ck_assert_ptr_nonnull(strstr(err, "sft.learning_rate: was 0.01, now 0.001"));
    free(err);
}
END_TEST

START_TEST(failed_start_can_be_fixed)
{
    char args[1024], p[1024];
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/fix --set data.train=%s/missing.jsonl",
             tmp, tmp);
    ck_assert_int_eq(run_modpo(args, "missing"), 1);
    snprintf(p, sizeof p, "%s/missing.err", tmp);
    char *err = slurp(p);
    ck_assert_ptr_nonnull(strstr(err, "missing.jsonl: cannot open"));
    free(err);
    /* Nothing was trained, so the corrected data path is not "a changed setting". */
    snprintf(args, sizeof args, "sft conf/tiny.cfg --set run.output_root=%s/fix --stop-after-step 1", tmp);
    ck_assert_int_eq(run_modpo(args, "fixed"), 0);
}
END_TEST

int main(void)
{
    if (access("./modpo", X_OK) != 0) {
        fprintf(stderr, "check_pipeline: ./modpo not built (run make first)\n");
        return EXIT_FAILURE;
    }
    Suite *s = suite_create("pipeline");
    TCase *tc = tcase_create("pipeline");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, pipeline_end_to_end);
    tcase_add_test(tc, sigkill_then_rerun_gives_identical_adapter);
    tcase_add_test(tc, accumulated_micro_batches_equal_one_batch);
    tcase_add_test(tc, data_stats_counts_frozen_work);
    tcase_add_test(tc, corrupt_checkpoint_falls_back);
    tcase_add_test(tc, foreign_directory_is_refused);
    tcase_add_test(tc, changed_setting_is_refused_unless_forced);
    tcase_add_test(tc, failed_start_can_be_fixed);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

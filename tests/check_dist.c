/* Distributed runs through the real binary under mpirun (issue 5): data
 * parallelism gives the single-process adapters, checkpoints reshard across
 * rank counts, the precomputed frozen logps equal recomputing them, w groups,
 * sharded generation equals single-rank generation, a failing rank aborts
 * the job.  Plus the pure parts (group plans, shard file names).
 *
 * "Equal within 1e-6 relative" is ||a - b|| / ||a|| over all the adapter's
 * tensors: the ranks sum gradient parts in another order than one process,
 * so the runs agree to fp32 rounding, amplified a little by the optimizer
 * over the steps (at most a few 1e-7 here; docs/distributed.md). */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "checkpoint.h"
#include "checkpoint_dir.h"
#include "dist/dist_groups.h"
#include "generation_io.h"
#include "safetensors.h"

static char tmp[256];   /* the suite's scratch directory */
static char model[300]; /* one tiny model shared by every run */

/* ---- the pure parts -------------------------------------------------------- */

START_TEST(group_plans)
{
    Error err;
    int g;
    ck_assert_int_eq(dist_groups_plan(4, 2, 0, &g, &err), 0);
    ck_assert_int_eq(g, 2);
    ck_assert_int_eq(dist_groups_plan(4, 6, 0, &g, &err), 0);
    ck_assert_int_eq(g, 4);
    ck_assert_int_eq(dist_groups_plan(1, 6, 0, &g, &err), 0);
    ck_assert_int_eq(g, 1);
    ck_assert_int_eq(dist_groups_plan(8, 6, 2, &g, &err), 0);
    ck_assert_int_eq(g, 4);
    ck_assert_int_eq(dist_groups_plan(8, 2, 1, &g, &err), 0); /* capped at the grid */
    ck_assert_int_eq(g, 2);
    ck_assert_int_eq(dist_groups_plan(6, 6, 4, &g, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "dist.ranks_per_w"));
    /* contiguous blocks, sizes differing by at most one */
    int count[3] = {0, 0, 0};
    for (int r = 0; r < 8; r++) count[dist_group_of_rank(r, 8, 3)]++;
    ck_assert_int_eq(count[0] + count[1] + count[2], 8);
    for (int i = 0; i < 3; i++) ck_assert(count[i] == 2 || count[i] == 3);
    ck_assert_int_eq(dist_group_of_rank(0, 8, 3), 0);
    ck_assert_int_eq(dist_group_of_rank(7, 8, 3), 2);
    /* a single process is one group that owns every w */
    DistGroups one;
    ck_assert_int_eq(dist_groups_split(NULL, 6, 0, &one, &err), 0);
    ck_assert_int_eq(one.n_groups, 1);
    for (int i = 0; i < 6; i++) ck_assert(dist_groups_owns(&one, i));
    dist_groups_free(&one);
}
END_TEST

START_TEST(shard_names)
{
    char p[256];
    Error err;
    ck_assert_int_eq(ckdir_shard_path(p, sizeof p, "d", 200, 1, 4, &err), 0);
    ck_assert_str_eq(p, "d/checkpoint-00000200-shard-00001-of-00004.h5");
    int64_t step;
    int r, n;
    ck_assert(ckdir_parse_shard_name("checkpoint-00000200-shard-00001-of-00004.h5", &step, &r, &n));
    ck_assert(step == 200 && r == 1 && n == 4);
    ck_assert(!ckdir_parse_shard_name("checkpoint-00000200-shard-00004-of-00004.h5", &step, &r, &n));
    ck_assert(!ckdir_parse_shard_name("checkpoint-00000200-shard-1-of-4.h5", &step, &r, &n));
    ck_assert(!ckdir_parse_shard_name("checkpoint-00000200.h5", &step, &r, &n));
    /* a shard is never listed as a checkpoint */
    ck_assert(!ckdir_parse_name("checkpoint-00000200-shard-00001-of-00004.h5", &step));
    ck_assert_int_eq(ckdir_shard_path(p, sizeof p, "d", 1, 4, 4, &err), -1);
}
END_TEST

/* ---- runs ------------------------------------------------------------------ */

/* ./modpo alone for np = 0 (no launcher), else under mpirun -np np. */
static int run_np(int np, const char *root, const char *args, const char *log, const char *env)
{
    char cmd[8192], launcher[256] = "";
    if (np > 0)
        snprintf(launcher, sizeof launcher, "mpirun --oversubscribe %s -np %d ",
                 geteuid() == 0 ? "--allow-run-as-root" : "", np);
    snprintf(cmd, sizeof cmd,
             "%s timeout 300 %s./modpo %s --set run.output_root=%s --set model.path=%s --quiet "
             "> %s/%s.out 2> %s/%s.err",
             env ? env : "", launcher, args, root, model, tmp, log, tmp, log);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void run_ok(int np, const char *root, const char *args, const char *log)
{
    int rc = run_np(np, root, args, log, NULL);
    if (rc != 0) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "tail -20 %s/%s.err >&2", tmp, log);
        if (system(cmd) != 0) fprintf(stderr, "(no log)\n");
    }
    ck_assert_msg(rc == 0, "modpo %s on %d ranks failed (%d): see %s/%s.err", args, np, rc, tmp, log);
}

static void path_of(char *out, size_t size, const char *root, const char *rel)
{
    snprintf(out, size, "%s/tiny/%s", root, rel);
}

static int exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

static void copy_tree(const char *from, const char *to)
{
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf %s && cp -r %s %s", to, from, to);
    ck_assert_int_eq(system(cmd), 0);
}

/* ||a - b|| / ||a|| over every tensor of two adapters (stage dirs). */
static double adapter_rel_diff(const char *root_a, const char *root_b, const char *stage)
{
    char pa[1024], pb[1024], rel[256];
    snprintf(rel, sizeof rel, "%s/adapter/adapter_model.safetensors", stage);
    path_of(pa, sizeof pa, root_a, rel);
    path_of(pb, sizeof pb, root_b, rel);
    SafetensorsFile *a = NULL, *b = NULL;
    Error err;
    ck_assert_msg(safetensors_open(pa, &a, &err) == 0, "%s", err.msg);
    ck_assert_msg(safetensors_open(pb, &b, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(safetensors_count(a), safetensors_count(b));
    double num = 0, den = 0;
    for (size_t i = 0; i < safetensors_count(a); i++) {
        const SafetensorsTensor *ta = safetensors_tensor(a, i);
        const SafetensorsTensor *tb = safetensors_find(b, ta->name);
        ck_assert_ptr_nonnull(tb);
        ck_assert_uint_eq(ta->n_elements, tb->n_elements);
        float *x = malloc(ta->n_elements * sizeof *x), *y = malloc(ta->n_elements * sizeof *y);
        ck_assert(safetensors_tensor_to_f32(a, ta, x, &err) == 0);
        ck_assert(safetensors_tensor_to_f32(b, tb, y, &err) == 0);
        for (size_t k = 0; k < ta->n_elements; k++) {
            double d = (double)x[k] - (double)y[k];
            num += d * d;
            den += (double)x[k] * (double)x[k];
        }
        free(x);
        free(y);
    }
    safetensors_close(a);
    safetensors_close(b);
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The `key` values of the `kind` records of a stage's metrics.jsonl. */
static int metric_series(const char *root, const char *stage, const char *kind, const char *key, double *out,
                         int cap)
{
    char p[1024], rel[256];
    snprintf(rel, sizeof rel, "%s/metrics.jsonl", stage);
    path_of(p, sizeof p, root, rel);
    FILE *f = fopen(p, "r");
    ck_assert_msg(f != NULL, "%s missing", p);
    char line[8192];
    int n = 0;
    while (fgets(line, sizeof line, f) && n < cap) {
        json_t *o = json_loads(line, 0, NULL);
        ck_assert_msg(o != NULL, "bad JSON in %s", p);
        if (strcmp(json_string_value(json_object_get(o, "kind")), kind) == 0 && json_object_get(o, key))
            out[n++] = json_number_value(json_object_get(o, key));
        json_decref(o);
    }
    fclose(f);
    return n;
}

static void assert_same_series(const char *ra, const char *rb, const char *stage, const char *kind,
                               const char *key, double tol)
{
    double a[256], b[256];
    int na = metric_series(ra, stage, kind, key, a, 256), nb = metric_series(rb, stage, kind, key, b, 256);
    ck_assert_int_gt(na, 0);
    ck_assert_int_eq(na, nb);
    for (int i = 0; i < na; i++)
        ck_assert_msg(fabs(a[i] - b[i]) <= tol * fabs(a[i]) + 1e-12, "%s %s %s #%d: %.9g vs %.9g", stage, kind,
                      key, i, a[i], b[i]);
}

/* Two TSV tables with the same text cells and numbers within rel_tol
 * (a sequence's logp depends on the rounding of the batch it is in). */
static void assert_same_table(const char *pa, const char *pb, double rel_tol)
{
    FILE *fa = fopen(pa, "r"), *fb = fopen(pb, "r");
    ck_assert_msg(fa && fb, "%s or %s missing", pa, pb);
    char la[4096], lb[4096];
    int row = 0;
    while (fgets(la, sizeof la, fa)) {
        ck_assert_msg(fgets(lb, sizeof lb, fb) != NULL, "%s has fewer rows", pb);
        char *sa = NULL, *sb = NULL;
        char *ta = strtok_r(la, "\t\n", &sa), *tb = strtok_r(lb, "\t\n", &sb);
        while (ta || tb) {
            ck_assert_msg(ta && tb, "row %d: different cell counts", row);
            char *ea, *eb;
            double x = strtod(ta, &ea), y = strtod(tb, &eb);
            if (*ea == '\0' && *eb == '\0' && isfinite(x))
                ck_assert_msg(fabs(x - y) <= rel_tol * fabs(x) + 1e-12, "row %d: %s vs %s", row, ta, tb);
            else
                ck_assert_msg(strcmp(ta, tb) == 0, "row %d: %s vs %s", row, ta, tb);
            ta = strtok_r(NULL, "\t\n", &sa);
            tb = strtok_r(NULL, "\t\n", &sb);
        }
        row++;
    }
    ck_assert_msg(fgets(lb, sizeof lb, fb) == NULL, "%s has more rows", pb);
    fclose(fa);
    fclose(fb);
}

static void root_of(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", tmp, name);
}

static const char sft_args[] =
    "sft --set sft.steps=6 --set sft.batch_size=3 --set sft.grad_accum=2 --set sft.save_steps=2 "
    "--set sft.eval_steps=3 --set sft.log_steps=1";

/* The global batch (3 x 2, not divisible by 4) does not depend on the
 * ranks: N = 1, 2, 4 give the same adapter and the same logged losses. */
START_TEST(data_parallel_equals_single_process)
{
    char r1[512], r2[512], r4[512];
    root_of(r1, sizeof r1, "dp1");
    root_of(r2, sizeof r2, "dp2");
    root_of(r4, sizeof r4, "dp4");
    run_ok(0, r1, sft_args, "dp1");
    run_ok(2, r2, sft_args, "dp2");
    run_ok(4, r4, sft_args, "dp4");
    double d2 = adapter_rel_diff(r1, r2, "sft"), d4 = adapter_rel_diff(r1, r4, "sft");
    fprintf(stderr, "  data parallel SFT: adapter relative difference N=2 %.3g, N=4 %.3g\n", d2, d4);
    ck_assert_double_lt(d2, 1e-6);
    ck_assert_double_lt(d4, 1e-6);
    assert_same_series(r1, r4, "sft", "train", "loss", 1e-6);
    assert_same_series(r1, r4, "sft", "eval", "eval_loss", 1e-6);

    /* Sharded checkpoints: saved at N = 4 (one shard per rank and the
     * index), resumed at N = 2, then at N = 1: the same run. */
    char rr[512], p[1024];
    root_of(rr, sizeof rr, "reshard");
    char args[1024];
    snprintf(args, sizeof args, "%s --stop-after-step 2", sft_args);
    run_ok(4, rr, args, "reshard4");
    for (int k = 0; k < 4; k++) {
        char rel[256];
        snprintf(rel, sizeof rel, "sft/checkpoints/checkpoint-00000002-shard-%05d-of-00004.h5", k);
        path_of(p, sizeof p, rr, rel);
        ck_assert_msg(exists(p), "missing %s", p);
    }
    /* ZeRO-1: each shard holds a quarter of the moments, the index none */
    {
        char ip[1024], sp[1024];
        path_of(ip, sizeof ip, rr, "sft/checkpoints/checkpoint-00000002.h5");
        path_of(sp, sizeof sp, rr, "sft/checkpoints/checkpoint-00000002-shard-00000-of-00004.h5");
        Error err;
        Checkpoint *ci = ckpt_open(ip, &err), *cs = ckpt_open(sp, &err);
        ck_assert_msg(ci && cs, "%s", err.msg);
        CkptType t;
        size_t n_params = 0, n_slice = 0;
        ck_assert_int_eq(ckpt_info(ci, "lora/params", &t, &n_params, NULL, NULL, &err), 0);
        ck_assert_int_eq(ckpt_info(cs, "optimizer/exp_avg", &t, &n_slice, NULL, NULL, &err), 0);
        ck_assert(!ckpt_has(ci, "optimizer/exp_avg"));
        ck_assert_uint_eq(n_slice, (n_params + 3) / 4);
        fprintf(stderr, "  ZeRO-1 at 4 ranks: %zu of %zu moments per rank\n", n_slice, n_params);
        ckpt_close(ci);
        ckpt_close(cs);
    }
    path_of(p, sizeof p, rr, "sft/DONE");
    ck_assert(!exists(p));
    snprintf(args, sizeof args, "%s --stop-after-step 4", sft_args);
    run_ok(2, rr, args, "reshard2");
    path_of(p, sizeof p, rr, "sft/checkpoints/checkpoint-00000004-shard-00001-of-00002.h5");
    ck_assert_msg(exists(p), "missing %s", p);
    run_ok(0, rr, sft_args, "reshard1");
    path_of(p, sizeof p, rr, "sft/DONE");
    ck_assert(exists(p));
    double dr = adapter_rel_diff(r1, rr, "sft");
    fprintf(stderr, "  resumed 4 -> 2 -> 1 ranks: adapter relative difference %.3g\n", dr);
    ck_assert_double_lt(dr, 1e-6);
    /* the resumed run logged where it resumed from */
    char errlog[600];
    snprintf(errlog, sizeof errlog, "grep -q 'resuming from step 4' %s/reshard1.err", tmp);
    ck_assert_int_eq(system(errlog), 0);
}
END_TEST

/* run.optimizer = backend with several ranks: the gradients are summed
 * where the backend keeps them and every rank steps all the moments (the
 * CUDA backend's way, here on the CPU backend with MPI).  The same adapter
 * as the host's ZeRO-1 in one process; its checkpoints still store the
 * moments sharded, and runs resume across both ways and rank counts. */
START_TEST(optimizer_on_the_backend_across_ranks)
{
    char rh[512], rb[512], rm[512], p[1024], args[1024];
    root_of(rh, sizeof rh, "opt-host1");
    root_of(rb, sizeof rb, "opt-backend2");
    root_of(rm, sizeof rm, "opt-mixed");
    snprintf(args, sizeof args, "%s --set run.optimizer=host", sft_args);
    run_ok(0, rh, args, "opt-host1");
    snprintf(args, sizeof args, "%s --set run.optimizer=backend", sft_args);
    run_ok(2, rb, args, "opt-backend2");
    double db = adapter_rel_diff(rh, rb, "sft");
    /* backend at 2 ranks (sharded save) -> host at 1 -> backend at 2 (moments gathered) */
    snprintf(args, sizeof args, "%s --set run.optimizer=backend --stop-after-step 2", sft_args);
    run_ok(2, rm, args, "opt-mixed-a");
    path_of(p, sizeof p, rm, "sft/checkpoints/checkpoint-00000002-shard-00001-of-00002.h5");
    ck_assert_msg(exists(p), "missing %s", p);
    snprintf(args, sizeof args, "%s --set run.optimizer=host --stop-after-step 4", sft_args);
    run_ok(0, rm, args, "opt-mixed-b");
    snprintf(args, sizeof args, "%s --set run.optimizer=backend", sft_args);
    run_ok(2, rm, args, "opt-mixed-c");
    double dm = adapter_rel_diff(rh, rm, "sft");
    fprintf(stderr, "  optimizer on the backend, 2 ranks: adapter relative difference %.3g; "
            "resumed backend -> host -> backend: %.3g\n", db, dm);
    ck_assert_double_lt(db, 1e-6);
    ck_assert_double_lt(dm, 1e-6);
    char errlog[600];
    snprintf(errlog, sizeof errlog, "grep -q 'resuming from step 4' %s/opt-mixed-c.err", tmp);
    ck_assert_int_eq(system(errlog), 0);
}
END_TEST

static const char small_stages[] =
    "--set sft.steps=4 --set sft.eval_steps=4 --set sft.save_steps=4 "
    "--set dpo.steps=4 --set dpo.eval_steps=4 --set dpo.save_steps=4 "
    "--set modpo.steps=6 --set modpo.eval_steps=3 --set modpo.save_steps=3 --set modpo.log_steps=1 "
    "--set modpo.learning_rate=5e-4 "
    "--set modpo.batch_size=3 --set modpo.grad_accum=2 --set generate.eval_size=7";

/* MODPO over rank groups equals the single-process runs; the cached frozen
 * logps give the losses of recomputing them every step; sharded generation
 * and scoring equal single-rank ones; a failing rank aborts the job. */
START_TEST(modpo_groups_cache_generation)
{
    char base[512], r1[512], r4[512], r3[512], rc_[512], args[2048];
    root_of(base, sizeof base, "base");
    root_of(r1, sizeof r1, "m1");
    root_of(r4, sizeof r4, "m4");
    root_of(r3, sizeof r3, "m3");
    root_of(rc_, sizeof rc_, "mrec");
    snprintf(args, sizeof args, "sft %s", small_stages);
    run_ok(2, base, args, "base-sft");
    snprintf(args, sizeof args, "dpo %s", small_stages);
    run_ok(2, base, args, "base-dpo");
    copy_tree(base, r1);
    copy_tree(base, r4);
    copy_tree(base, r3);
    copy_tree(base, rc_);

    snprintf(args, sizeof args, "modpo %s --set modpo.w=0.2,0.8", small_stages);
    run_ok(0, r1, args, "m1");
    run_ok(4, r4, args, "m4");            /* 2 groups of 2 ranks */
    run_ok(3, r3, args, "m3");            /* 2 groups of 2 and 1 ranks */
    char grep[1024];
    snprintf(grep, sizeof grep, "grep -q '2 w values over 2 groups of the 4 ranks' %s/m4.err", tmp);
    ck_assert_int_eq(system(grep), 0);
    /* the frozen passes were computed once, over all 4 ranks, before the groups */
    snprintf(grep, sizeof grep, "grep -q 'precompute: .* computed (.*, 4 ranks)' %s/m4.err", tmp);
    ck_assert_int_eq(system(grep), 0);
    const char *stages[] = {"modpo-w0.2", "modpo-w0.8"};
    for (int i = 0; i < 2; i++) {
        double d4 = adapter_rel_diff(r1, r4, stages[i]), d3 = adapter_rel_diff(r1, r3, stages[i]);
        fprintf(stderr, "  %s over groups: adapter relative difference N=4 %.3g, N=3 %.3g\n", stages[i], d4, d3);
        ck_assert_double_lt(d4, 1e-6);
        ck_assert_double_lt(d3, 1e-6);
        assert_same_series(r1, r4, stages[i], "train", "loss", 1e-5);
    }
    char p[1024];
    path_of(p, sizeof p, r4, "precompute/helpfulness-train-margin.h5");
    ck_assert_msg(exists(p), "missing %s", p);

    /* The precompute cache changes nothing: recompute the frozen passes. */
    snprintf(args, sizeof args, "modpo %s --set modpo.w=0.2 --recompute-frozen", small_stages);
    run_ok(0, rc_, args, "mrec");
    /* Within 1e-5: a sequence's logp depends on the rounding of the batch
     * it is computed in (precompute batches of 8 pairs vs micro-batches of
     * 3 here), and the optimizer carries such differences forward. */
    assert_same_series(r1, rc_, "modpo-w0.2", "train", "loss", 1e-5);
    /* rewards/margins is a small difference of larger rewards: its relative
     * error is the logps' absolute error over a small number. */
    assert_same_series(r1, rc_, "modpo-w0.2", "train", "rewards/margins", 1e-3);
    assert_same_series(r1, rc_, "modpo-w0.2", "eval", "eval_loss", 1e-5);

    /* Generation sharded over 3 ranks equals one rank's, record for record
     * (the same trained models: a copy of the single-process run). */
    char g3[512];
    root_of(g3, sizeof g3, "g3");
    copy_tree(r1, g3);
    snprintf(args, sizeof args, "generate %s --set modpo.w=0.2,0.8", small_stages);
    run_ok(0, r1, args, "g1");
    run_ok(3, g3, args, "g3");
    for (int m = 0; m < 3; m++) {
        const char *name = m == 0 ? "sft" : stages[m - 1];
        char da[1024], db[1024], rel[128];
        snprintf(rel, sizeof rel, "gen/%s", name);
        path_of(da, sizeof da, r1, rel);
        path_of(db, sizeof db, g3, rel);
        GenRecordList a, b;
        Error err;
        ck_assert_msg(gen_read_dir(da, &a, &err) == 0, "%s", err.msg);
        ck_assert_msg(gen_read_dir(db, &b, &err) == 0, "%s", err.msg);
        ck_assert_int_eq(a.world, 1);
        ck_assert_int_eq(b.world, 3);
        ck_assert_uint_eq(a.n, 7);
        ck_assert_uint_eq(a.n, b.n);
        for (size_t i = 0; i < a.n; i++) {
            ck_assert_str_eq(a.items[i].raw_prompt, b.items[i].raw_prompt);
            ck_assert_str_eq(a.items[i].prompt_response, b.items[i].prompt_response);
        }
        gen_list_free(&a);
        gen_list_free(&b);
    }
    /* Scoring sharded over 2 ranks: the same table from the same files. */
    char s2[512];
    root_of(s2, sizeof s2, "s2");
    copy_tree(r1, s2);
    snprintf(args, sizeof args, "score %s --set modpo.w=0.2,0.8", small_stages);
    run_ok(0, r1, args, "s1");
    run_ok(2, s2, args, "s2");
    char sa[1024], sb[1024];
    path_of(sa, sizeof sa, r1, "score/summary.tsv");
    path_of(sb, sizeof sb, s2, "score/summary.tsv");
    assert_same_table(sa, sb, 0); /* whole batches per rank: bit for bit */

    /* A resumed / repeated MODPO run reads the cache. */
    snprintf(args, sizeof args, "modpo %s --set modpo.w=0.5 --set modpo.steps=2", small_stages);
    run_ok(2, r4, args, "m4-again");
    snprintf(grep, sizeof grep, "grep -q 'precompute: .* read from the cache' %s/m4-again.err", tmp);
    ck_assert_int_eq(system(grep), 0);

    /* A rank that fails aborts the job with its message, never a hang. */
    char rf[512];
    root_of(rf, sizeof rf, "fail");
    int rc = run_np(2, rf, "sft", "fail", "MODPO_TEST_FAIL_RANK=1");
    ck_assert_int_ne(rc, 0);
    ck_assert_int_ne(rc, 124); /* not the timeout */
    snprintf(grep, sizeof grep, "grep -q 'rank 1/2.*injected failure' %s/fail.err", tmp);
    ck_assert_msg(system(grep) == 0, "the failing rank's message is missing from %s/fail.err", tmp);
    /* ... rank 0 too, while the other waits in a collective */
    rc = run_np(2, rf, "sft", "fail0", "MODPO_TEST_FAIL_RANK=0");
    ck_assert_int_ne(rc, 0);
    ck_assert_int_ne(rc, 124);
    snprintf(grep, sizeof grep, "grep -q 'rank 0/2.*injected failure' %s/fail0.err", tmp);
    ck_assert_msg(system(grep) == 0, "the failing rank's message is missing from %s/fail0.err", tmp);
}
END_TEST

/* A data-parallel run killed with SIGKILL (every rank) in the middle of a
 * stage, and rerun: it resumes from the last complete checkpoint and ends
 * where an uninterrupted run on the same ranks ends (bit for bit: the same
 * operations in the same order).  A half-written save (shards without an
 * index, a temporary file) is cleaned up, never loaded. */
START_TEST(sigkill_and_rerun)
{
    static const char args[] =
        "sft --set sft.steps=60 --set sft.batch_size=3 --set sft.grad_accum=2 --set sft.save_steps=3 "
        "--set sft.eval_steps=30 --set sft.log_steps=10 --set sft.save_total_limit=2";
    char ra[512], rk[512], cmd[4096], pidfile[600], p[1024];
    root_of(ra, sizeof ra, "uninterrupted");
    root_of(rk, sizeof rk, "killed");
    run_ok(2, ra, args, "uninterrupted");

    snprintf(pidfile, sizeof pidfile, "%s/mpirun.pid", tmp);
    snprintf(cmd, sizeof cmd,
             "mpirun --oversubscribe %s -np 2 ./modpo %s --set run.output_root=%s --set model.path=%s --quiet "
             "> %s/killed.out 2> %s/killed.err & echo $! > %s",
             geteuid() == 0 ? "--allow-run-as-root" : "", args, rk, model, tmp, tmp, pidfile);
    ck_assert_int_eq(system(cmd), 0);
    path_of(p, sizeof p, rk, "sft/checkpoints/checkpoint-00000009.h5");
    int waited = 0;
    while (!exists(p) && waited < 120000) {
        usleep(20000);
        waited += 20;
    }
    ck_assert_msg(exists(p), "no checkpoint at step 9 after %d ms", waited);
    /* SIGKILL the ranks (children of mpirun, by parent pid) and mpirun */
    snprintf(cmd, sizeof cmd, "P=$(cat %s); pkill -9 -P $P; kill -9 $P; sleep 0.5", pidfile);
    ck_assert_int_eq(system(cmd), 0);
    char done[1024];
    path_of(done, sizeof done, rk, "sft/DONE");
    ck_assert_msg(!exists(done), "the run finished before it was killed");
    /* what a crash in the middle of a save leaves: shards without an index
     * and a temporary file */
    char junk[2][1024];
    path_of(junk[0], sizeof junk[0], rk, "sft/checkpoints/checkpoint-00000999-shard-00000-of-00002.h5");
    path_of(junk[1], sizeof junk[1], rk, "sft/checkpoints/checkpoint-00000999.h5.tmp-12345");
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(junk[i], "w");
        ck_assert_ptr_nonnull(f);
        fputs("half a checkpoint", f);
        fclose(f);
    }
    run_ok(2, rk, args, "killed-rerun");
    ck_assert(exists(done));
    for (int i = 0; i < 2; i++) ck_assert_msg(!exists(junk[i]), "%s was not cleaned up", junk[i]);
    snprintf(cmd, sizeof cmd, "grep -q 'resuming from step' %s/killed-rerun.err", tmp);
    ck_assert_int_eq(system(cmd), 0);
    double d = adapter_rel_diff(ra, rk, "sft");
    fprintf(stderr, "  killed with SIGKILL and rerun on 2 ranks: adapter relative difference %.3g\n", d);
    ck_assert_double_lt(d, 1e-6);
}
END_TEST

static void setup(void)
{
    strcpy(tmp, "/tmp/modpo-dist-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(tmp));
    snprintf(model, sizeof model, "%s/model", tmp);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./modpo init-model --preset tiny --out %s > /dev/null", model);
    ck_assert_int_eq(system(cmd), 0);
}

static void teardown(void)
{
    if (getenv("MODPO_KEEP_TMP")) return;
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp);
}

static int have_mpirun(void)
{
    return system("command -v mpirun > /dev/null 2>&1") == 0;
}

int main(void)
{
    Suite *s = suite_create("dist");
    TCase *unit = tcase_create("unit");
    tcase_add_test(unit, group_plans);
    tcase_add_test(unit, shard_names);
    suite_add_tcase(s, unit);
    if (have_mpirun()) {
        TCase *tc = tcase_create("mpirun");
        tcase_add_checked_fixture(tc, setup, teardown);
        tcase_set_timeout(tc, 900);
        tcase_add_test(tc, data_parallel_equals_single_process);
        tcase_add_test(tc, optimizer_on_the_backend_across_ranks);
        tcase_add_test(tc, modpo_groups_cache_generation);
        tcase_add_test(tc, sigkill_and_rerun);
        suite_add_tcase(s, tc);
    } else {
        fprintf(stderr, "mpirun not found: skipping the multi-rank runs\n");
    }
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

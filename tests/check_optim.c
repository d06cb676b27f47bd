/* AdamW, global-norm clipping and the learning-rate schedules against
 * torch.optim.AdamW + clip_grad_norm_ + transformers' schedulers
 * (tests/gen_optim_fixtures.py): every step's params within 1e-6 relative,
 * the pre-clip norm likewise, every schedule value within 1e-7. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "grad_clip.h"
#include "lr_schedule.h"

#define FIXTURE "tests/fixtures/optim/optim.json"
#define PARAM_RTOL 1e-6
#define NORM_RTOL 1e-6
#define LR_RTOL 1e-7
/* Relative error is measured against max(|torch|, this): a parameter that
 * lands within 1e-6 of zero has no meaningful relative error. */
#define PARAM_FLOOR 1e-6

static double worst_param, worst_norm, worst_lr, worst_moment;

static json_t *fixture(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(FIXTURE, 0, &jerr);
    ck_assert_msg(root != NULL, "%s:%d: %s (run from the repo root; regenerate with "
                  "tests/gen_optim_fixtures.py)", FIXTURE, jerr.line, jerr.text);
    return root;
}

static float *floats_of(json_t *obj, const char *key, size_t *n)
{
    json_t *a = json_object_get(obj, key);
    ck_assert_msg(json_is_array(a), "fixture lacks array %s", key);
    *n = json_array_size(a);
    float *out = malloc((*n ? *n : 1) * sizeof *out);
    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < *n; i++) out[i] = (float)json_number_value(json_array_get(a, i));
    return out;
}

static double num(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "fixture lacks number %s", key);
    return json_number_value(v);
}

static double rel(double got, double want, double floor)
{
    double d = fabs(got - want);
    return d == 0.0 ? 0.0 : d / fmax(fabs(want), floor);
}

static void check_vec(const char *what, const float *got, const float *want, size_t n, double rtol,
                      double *worst)
{
    for (size_t i = 0; i < n; i++) {
        double e = rel(got[i], want[i], PARAM_FLOOR);
        *worst = fmax(*worst, e);
        ck_assert_msg(e < rtol, "%s[%zu]: got %.9g, torch %.9g (rel %.3g)", what, i,
                      (double)got[i], (double)want[i], e);
    }
}

static double max_abs(const float *x, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(x[i]));
    return m;
}

static double max_abs_diff(const float *a, const float *b, size_t n)
{
    double m = 0.0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static void schedule_of(json_t *c, LrSchedule *s)
{
    int kind = lr_schedule_kind_from_name(json_string_value(json_object_get(c, "schedule") ?
                                          json_object_get(c, "schedule") : json_object_get(c, "kind")));
    ck_assert_int_ge(kind, 0);
    double base = json_object_get(c, "lr") ? num(c, "lr") : num(c, "base_lr");
    Error err;
    ck_assert_msg(lr_schedule_init(s, (LrScheduleKind)kind, base, (long)num(c, "total_steps"),
                                   (long)num(c, "warmup_steps"), num(c, "warmup_ratio"), &err) == 0,
                  "%s", err.msg);
}

/* One fixture run in Hugging Face Trainer's order: clip, AdamW at the
 * scheduler's lr for this step, next step. */
static void check_run(json_t *run, size_t idx)
{
    size_t n, m;
    float *params = floats_of(run, "params0", &n);
    LrSchedule sched;
    schedule_of(run, &sched);
    AdamWConfig cfg = { num(run, "beta1"), num(run, "beta2"), num(run, "eps"), num(run, "weight_decay") };
    AdamW opt;
    Error err;
    ck_assert_int_eq(adamw_init(&opt, n, cfg, &err), 0);
    double max_norm = num(run, "max_norm");
    json_t *steps = json_object_get(run, "steps"), *st;
    size_t k;
    char what[96];
    json_array_foreach(steps, k, st) {
        float *grads = floats_of(st, "grads", &m);
        ck_assert_uint_eq(m, n);
        double norm = grad_clip_norm(grads, n, max_norm);
        json_t *want_norm = json_object_get(st, "norm");
        if (json_is_number(want_norm)) {
            double e = rel(norm, json_number_value(want_norm), 1e-300);
            worst_norm = fmax(worst_norm, e);
            ck_assert_msg(e < NORM_RTOL, "run %zu step %zu norm %.9g vs torch %.9g", idx, k, norm,
                          json_number_value(want_norm));
        }
        double lr = lr_schedule_lr(&sched, (long)k);
        double e = rel(lr, num(st, "lr"), 1e-300);
        worst_lr = fmax(worst_lr, e);
        ck_assert_msg(e < LR_RTOL, "run %zu step %zu lr %.17g vs %.17g", idx, k, lr, num(st, "lr"));
        ck_assert_int_eq(adamw_step(&opt, params, grads, n, lr, &err), 0);
        float *want = floats_of(st, "params", &m);
        snprintf(what, sizeof what, "run %zu step %zu params", idx, k);
        check_vec(what, params, want, n, PARAM_RTOL, &worst_param);
        free(want);
        free(grads);
    }
    ck_assert_int_eq(opt.step, (int64_t)num(run, "step"));
    /* The moments are sums of clipped gradients that partly cancel, and the
     * clip factor differs from torch's in its last fp32 bit (torch reduces the
     * norm in its own order), so they are judged norm-wise: max error over max
     * magnitude. */
    float *m1 = floats_of(run, "exp_avg", &m), *m2 = floats_of(run, "exp_avg_sq", &m);
    double e1 = max_abs_diff(opt.m, m1, n) / max_abs(m1, n);
    double e2 = max_abs_diff(opt.v, m2, n) / max_abs(m2, n);
    worst_moment = fmax(worst_moment, fmax(e1, e2));
    ck_assert_msg(e1 < PARAM_RTOL && e2 < PARAM_RTOL, "run %zu moments: rel %.3g, %.3g", idx, e1, e2);
    free(m1);
    free(m2);
    free(params);
    adamw_free(&opt);
}

START_TEST(test_adamw_runs)
{
    json_t *root = fixture();
    json_t *runs = json_object_get(root, "runs"), *run;
    size_t i;
    ck_assert_uint_gt(json_array_size(runs), 0);
    json_array_foreach(runs, i, run) check_run(run, i);
    json_decref(root);
}
END_TEST

START_TEST(test_schedules)
{
    json_t *root = fixture();
    json_t *cases = json_object_get(root, "schedules"), *c;
    size_t i;
    ck_assert_uint_gt(json_array_size(cases), 0);
    json_array_foreach(cases, i, c) {
        LrSchedule s;
        schedule_of(c, &s);
        if (s.kind != LR_CONSTANT) /* "constant" ignores warmup; the fixture still resolves it */
            ck_assert_int_eq(s.warmup_steps, (long)num(c, "resolved_warmup"));
        json_t *lrs = json_object_get(c, "lrs");
        ck_assert_uint_eq(json_array_size(lrs), (size_t)s.total_steps + 1);
        for (long k = 0; k <= s.total_steps; k++) {
            double want = json_number_value(json_array_get(lrs, (size_t)k));
            double got = lr_schedule_lr(&s, k);
            double e = rel(got, want, 1e-300);
            worst_lr = fmax(worst_lr, e);
            ck_assert_msg(e < LR_RTOL, "%s total %ld warmup %ld step %ld: %.17g vs %.17g",
                          lr_schedule_kind_name(s.kind), s.total_steps, s.warmup_steps, k, got, want);
        }
    }
    json_decref(root);
}
END_TEST

START_TEST(test_warmup_resolution)
{
    ck_assert_int_eq(lr_warmup_steps(1000, 0, 0.1), 100);
    ck_assert_int_eq(lr_warmup_steps(100, 0, 0.07), 8); /* 7.000000000000001, as Python */
    ck_assert_int_eq(lr_warmup_steps(100, 5, 0.5), 5);  /* steps win over the ratio */
    ck_assert_int_eq(lr_warmup_steps(10, 0, 0.0), 0);
    LrSchedule s;
    Error err;
    ck_assert_int_eq(lr_schedule_init(&s, LR_COSINE, 1e-4, 1000, 0, 0.1, &err), 0);
    ck_assert_double_eq(lr_schedule_lr(&s, 0), 0.0);     /* the first update is at lr 0 */
    ck_assert_double_eq(lr_schedule_lr(&s, 100), 1e-4);  /* peak right after warmup */
    ck_assert_double_eq_tol(lr_schedule_lr(&s, 550), 0.5e-4, 1e-18);
    ck_assert_double_eq(lr_schedule_lr(&s, 1000), 0.0);
    ck_assert_int_eq(lr_schedule_init(&s, LR_LINEAR, 1e-4, 0, 0, 0.1, &err), -1);
    ck_assert_int_eq(lr_schedule_init(&s, LR_LINEAR, 1e-4, 10, 0, 1.5, &err), -1);
    ck_assert_int_eq(lr_schedule_kind_from_name("cosine"), LR_COSINE);
    ck_assert_int_eq(lr_schedule_kind_from_name("polynomial"), -1);
}
END_TEST

START_TEST(test_clip_by_hand)
{
    float g[2] = { 3.f, 4.f };
    ck_assert_double_eq(grad_clip_norm(g, 2, 10.0), 5.0); /* under the limit: untouched */
    ck_assert_float_eq(g[0], 3.f);
    ck_assert_double_eq(grad_clip_norm(g, 2, 1.0), 5.0);  /* returns the pre-clip norm */
    ck_assert_float_eq_tol(g[0], 0.6f, 1e-6f);
    ck_assert_float_eq_tol(g[1], 0.8f, 1e-6f);
    float h[2] = { 3.f, 4.f };
    ck_assert_double_eq(grad_clip_norm(h, 2, 0.0), 5.0);  /* max_norm 0: clipping off */
    ck_assert_float_eq(h[1], 4.f);
    float bad[2] = { INFINITY, 1.f };
    ck_assert(isinf(grad_clip_norm(bad, 2, 1.0)));
    ck_assert_float_eq(bad[1], 1.f);
}
END_TEST

/* A checkpoint in the middle (state copied out and restored into a fresh
 * optimizer) continues bit for bit like an uninterrupted run. */
/* The host optimizer runs on every core (the GPU trainer's per-step host
 * work); its results must not depend on how many: the same bits for 1, 2
 * and 3 threads, and the norm equal to a long-double sum. */
static void random_fill(float *x, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = ((float)(seed >> 8) / 16777216.0f - 0.5f) * (i % 7 == 0 ? 100.0f : 1.0f);
    }
}

START_TEST(test_threads_change_no_bit)
{
    const size_t n = 1000003; /* not a multiple of the summation block */
    float *g = malloc(n * sizeof *g);
    ck_assert_ptr_nonnull(g);
    random_fill(g, n, 7);
    long double ref = 0;
    for (size_t i = 0; i < n; i++) ref += (long double)g[i] * g[i];
    int saved = omp_get_max_threads();
    double sums[3];
    float *params[3], *m[3];
    for (int t = 1; t <= 3; t++) {
        omp_set_num_threads(t);
        sums[t - 1] = grad_sum_squares(g, n);
        AdamW opt;
        Error err;
        params[t - 1] = malloc(n * sizeof(float));
        m[t - 1] = malloc(n * sizeof(float));
        ck_assert_ptr_nonnull(params[t - 1]);
        ck_assert_ptr_nonnull(m[t - 1]);
        random_fill(params[t - 1], n, 11);
        ck_assert_int_eq(adamw_init(&opt, n, adamw_default_config(0.05), &err), 0);
        for (int step = 0; step < 3; step++)
            ck_assert_int_eq(adamw_step(&opt, params[t - 1], g, n, 1e-3, &err), 0);
        memcpy(m[t - 1], opt.m, n * sizeof(float));
        adamw_free(&opt);
    }
    omp_set_num_threads(saved);
    ck_assert_msg(fabsl(sums[0] - ref) <= 1e-12L * ref, "sum of squares %.17g vs %.17Lg",
                  sums[0], ref);
    size_t bytes = n * sizeof(float);
    for (int t = 1; t < 3; t++) {
        ck_assert_msg(sums[t] == sums[0], "%d threads: %.17g, 1 thread: %.17g", t + 1, sums[t],
                      sums[0]);
        ck_assert_msg(memcmp(params[t], params[0], bytes) == 0, "params differ at %d threads", t + 1);
        ck_assert_msg(memcmp(m[t], m[0], bytes) == 0, "moments differ at %d threads", t + 1);
    }
    for (int t = 0; t < 3; t++) {
        free(params[t]);
        free(m[t]);
    }
    free(g);
}
END_TEST

START_TEST(test_state_round_trip)
{
    enum { N = 50, STEPS = 8 };
    float pa[N], pb[N], g[N];
    for (int i = 0; i < N; i++) pa[i] = pb[i] = (float)sin(i + 1.0);
    AdamW a, b, c;
    Error err;
    AdamWConfig cfg = adamw_default_config(0.05);
    ck_assert_int_eq(adamw_init(&a, N, cfg, &err), 0);
    ck_assert_int_eq(adamw_init(&b, N, cfg, &err), 0);
    for (int k = 0; k < STEPS; k++) {
        for (int i = 0; i < N; i++) g[i] = (float)cos(3.0 * i + k);
        ck_assert_int_eq(adamw_step(&a, pa, g, N, 1e-3, &err), 0);
        ck_assert_int_eq(adamw_step(&b, pb, g, N, 1e-3, &err), 0);
        if (k == STEPS / 2) { /* "save" b and "load" it into c */
            ck_assert_int_eq(adamw_init(&c, N, cfg, &err), 0);
            ck_assert_int_eq(adamw_set_state(&c, b.step, b.m, b.v, N, &err), 0);
            adamw_free(&b);
            b = c;
        }
    }
    ck_assert_int_eq(memcmp(pa, pb, sizeof pa), 0);
    ck_assert_int_eq(adamw_step(&a, pa, g, N - 1, 1e-3, &err), -1); /* size mismatch */
    ck_assert_int_eq(adamw_set_state(&a, 1, b.m, b.v, N - 1, &err), -1);
    adamw_free(&a);
    adamw_free(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("optim");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_adamw_runs);
    tcase_add_test(tc, test_schedules);
    tcase_add_test(tc, test_warmup_resolution);
    tcase_add_test(tc, test_clip_by_hand);
    tcase_add_test(tc, test_state_round_trip);
    tcase_add_test(tc, test_threads_change_no_bit);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* keeps the worst-error tallies in this process */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("  max rel err vs torch/transformers: params %.2e, moments %.2e, grad norm %.2e, lr %.2e\n",
           worst_param, worst_moment, worst_norm, worst_lr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

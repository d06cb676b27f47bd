/* SFT, DPO and MODPO against torch autograd (tests/gen_loss_fixtures.py) and
 * a few values worked out by hand.
 *
 * Each fixture case holds fp32 inputs and the torch results in float64 and in
 * float32.  Our code computes in double, so it is held to the float64 results
 * at relative error < 1e-5 for the loss, every metric and every gradient (it
 * lands near 1e-15).  Against float32 torch the same bound holds except where
 * torch's own fp32 rounding is larger than that (a metric that is a small
 * difference of large rewards); there the check is that we are no further
 * from torch-fp32 than torch-fp32 is from the exact value, plus the 1e-5.
 * Gradients are fp32 outputs, so values below FLT_MIN (denormals, e.g.
 * sigma(-100)/B) are compared on FLT_MIN's scale. */
#include <check.h>
#include <float.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "losses.h"

#define FIXTURE "tests/fixtures/losses/losses.json"
#define RTOL 1e-5
#define MAXN 64

static json_t *fixture(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(FIXTURE, 0, &jerr);
    ck_assert_msg(root != NULL, "%s:%d: %s (run from the repo root; regenerate with "
                  "tests/gen_loss_fixtures.py)", FIXTURE, jerr.line, jerr.text);
    return root;
}

static size_t floats_of(json_t *obj, const char *key, float *out)
{
    json_t *a = json_object_get(obj, key);
    ck_assert_msg(json_is_array(a), "fixture lacks array %s", key);
    size_t n = json_array_size(a);
    ck_assert_uint_le(n, MAXN);
    for (size_t i = 0; i < n; i++) out[i] = (float)json_number_value(json_array_get(a, i));
    return n;
}

static size_t doubles_of(json_t *obj, const char *key, double *out)
{
    json_t *a = json_object_get(obj, key);
    ck_assert_msg(json_is_array(a), "fixture lacks array %s", key);
    size_t n = json_array_size(a);
    ck_assert_uint_le(n, MAXN);
    for (size_t i = 0; i < n; i++) out[i] = json_number_value(json_array_get(a, i));
    return n;
}

static double num(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    ck_assert_msg(json_is_number(v), "fixture lacks number %s", key);
    return json_number_value(v);
}

/* Worst errors seen, printed at the end of the suite. */
typedef struct {
    double f64, f32, grad64, grad32;
} Worst;
static Worst worst_sft, worst_dpo, worst_modpo;

static double rel(double got, double want, double floor)
{
    double d = fabs(got - want);
    return d == 0.0 ? 0.0 : d / fmax(fabs(want), floor);
}

/* got vs float64 torch: plain relative error (floor only against 0/0). */
static void check64(const char *what, double got, double want, double *worst)
{
    double e = rel(got, want, 1e-300);
    *worst = fmax(*worst, e);
    ck_assert_msg(e < RTOL, "%s: got %.17g, torch float64 %.17g (rel %.3g)", what, got, want, e);
}

/* got vs float32 torch, allowing for torch-fp32's own rounding (see top):
 * |got - t32| <= 1e-5 * max(|t32|, floor) + 2 * |t32 - t64|.  The tally keeps
 * the relative error where torch-fp32 itself is within 1e-6 of exact, i.e.
 * where the comparison says something about us rather than about fp32. */
static void check32f(const char *what, double got, double t32, double t64, double floor, double *worst)
{
    double scale = fmax(fabs(t32), floor);
    double e = fabs(got - t32) / scale;
    if (fabs(t32 - t64) / scale < 1e-6) *worst = fmax(*worst, e);
    ck_assert_msg(fabs(got - t32) <= RTOL * scale + 2.0 * fabs(t32 - t64),
                  "%s: got %.9g, torch float32 %.9g (float64 %.9g)", what, got, t32, t64);
}

static void check32(const char *what, double got, double t32, double t64, double *worst)
{
    check32f(what, got, t32, t64, 1e-300, worst);
}

/* fp32 gradients: relative below FLT_MIN is meaningless, so that is the floor. */
static void check_grads(const char *what, const float *got, json_t *b64, json_t *b32, const char *key,
                        size_t n, Worst *w)
{
    double g64[MAXN], g32[MAXN];
    ck_assert_uint_eq(doubles_of(b64, key, g64), n);
    ck_assert_uint_eq(doubles_of(b32, key, g32), n);
    char name[160];
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s %s[%zu]", what, key, i);
        double e = rel(got[i], g64[i], FLT_MIN);
        w->grad64 = fmax(w->grad64, e);
        ck_assert_msg(e < RTOL, "%s: got %.9g, torch float64 %.17g", name, (double)got[i], g64[i]);
        check32f(name, got[i], g32[i], g64[i], FLT_MIN, &w->grad32);
    }
}

/* ------------------------------------------------------------------ SFT */

START_TEST(test_sft_fixture)
{
    json_t *root = fixture();
    json_t *cases = json_object_get(root, "sft"), *c;
    size_t k;
    ck_assert_uint_gt(json_array_size(cases), 0);
    json_array_foreach(cases, k, c) {
        json_t *nt = json_object_get(c, "n_tokens");
        int n_tokens[MAXN];
        size_t n = json_array_size(nt);
        for (size_t i = 0; i < n; i++) n_tokens[i] = (int)json_integer_value(json_array_get(nt, i));
        double scale = num(c, "grad_scale");
        const char *blocks[] = { "f64", "f32" };
        for (int b = 0; b < 2; b++) {
            json_t *blk = json_object_get(c, blocks[b]);
            float logps[MAXN], dlogps[MAXN];
            ck_assert_uint_eq(floats_of(blk, "logps", logps), n);
            double loss;
            Error err;
            ck_assert_msg(sft_loss(logps, n_tokens, n, scale, &loss, dlogps, &err) == 0, "%s", err.msg);
            if (b == 0) {
                check64("SFT loss", loss, num(blk, "loss"), &worst_sft.f64);
                check64("SFT loss vs HF CrossEntropyLoss", loss, num(blk, "hf_loss"), &worst_sft.f64);
            } else {
                double l64 = num(json_object_get(c, "f64"), "loss");
                check32("SFT loss", loss, num(blk, "loss"), l64, &worst_sft.f32);
                check32("SFT loss vs HF", loss, num(blk, "hf_loss"), l64, &worst_sft.f32);
                check_grads("SFT", dlogps, json_object_get(c, "f64"), blk, "dlogps", n, &worst_sft);
            }
        }
    }
    json_decref(root);
}
END_TEST

/* ------------------------------------------------------------------ DPO / MODPO */

typedef struct {
    float pc[MAXN], pr[MAXN], rc[MAXN], rr[MAXN], mc[MAXN], mr[MAXN];
    PrefBatch batch;
} PrefInput;

static void pref_input(json_t *c, PrefInput *in, int modpo)
{
    size_t n = floats_of(c, "policy_chosen", in->pc);
    ck_assert_uint_eq(floats_of(c, "policy_rejected", in->pr), n);
    ck_assert_uint_eq(floats_of(c, "ref_chosen", in->rc), n);
    ck_assert_uint_eq(floats_of(c, "ref_rejected", in->rr), n);
    if (modpo) {
        ck_assert_uint_eq(floats_of(c, "margin_chosen", in->mc), n);
        ck_assert_uint_eq(floats_of(c, "margin_rejected", in->mr), n);
    }
    in->batch = (PrefBatch){ n, in->pc, in->pr, in->rc, in->rr };
}

static void check_pref_case(json_t *c, int modpo, size_t idx, Worst *w)
{
    PrefInput in;
    pref_input(c, &in, modpo);
    int type = pref_loss_type_from_name(json_string_value(json_object_get(c, "loss_type")));
    ck_assert_int_ge(type, 0);
    float dc[MAXN], dr[MAXN];
    PrefGrads g = { dc, dr };
    PrefMetrics m;
    Error err;
    double beta = num(c, "beta"), scale = num(c, "grad_scale");
    int rc = modpo ? modpo_loss(&in.batch, in.mc, in.mr, beta, num(c, "w"), type, scale, &m, &g, &err)
                   : dpo_loss(&in.batch, beta, type, scale, &m, &g, &err);
    ck_assert_msg(rc == 0, "%s", err.msg);

    json_t *b64 = json_object_get(c, "f64"), *b32 = json_object_get(c, "f32");
    json_t *m64 = json_object_get(b64, "metrics"), *m32 = json_object_get(b32, "metrics");
    char what[128];
    snprintf(what, sizeof what, "%s case %zu loss", modpo ? "MODPO" : "DPO", idx);
    check64(what, m.loss, num(b64, "loss"), &w->f64);
    check32(what, m.loss, num(b32, "loss"), num(b64, "loss"), &w->f32);

    Metric list[PREF_METRICS_MAX];
    size_t nm = pref_metrics_list(&m, modpo, list);
    ck_assert_uint_eq(nm, json_object_size(m64)); /* every torch metric has a C twin and back */
    for (size_t i = 0; i < nm; i++) {
        snprintf(what, sizeof what, "%s case %zu %s", modpo ? "MODPO" : "DPO", idx, list[i].name);
        double t64 = num(m64, list[i].name), t32 = num(m32, list[i].name);
        check64(what, list[i].value, t64, &w->f64);
        check32(what, list[i].value, t32, t64, &w->f32);
    }
    snprintf(what, sizeof what, "%s case %zu", modpo ? "MODPO" : "DPO", idx);
    check_grads(what, dc, b64, b32, "d_chosen", in.batch.n_pairs, w);
    check_grads(what, dr, b64, b32, "d_rejected", in.batch.n_pairs, w);
}

static void check_pref_fixture(const char *key, int modpo, Worst *w)
{
    json_t *root = fixture();
    json_t *cases = json_object_get(root, key), *c;
    size_t k;
    ck_assert_uint_gt(json_array_size(cases), 0);
    json_array_foreach(cases, k, c) check_pref_case(c, modpo, k, w);
    json_decref(root);
}

START_TEST(test_dpo_fixture) { check_pref_fixture("dpo", 0, &worst_dpo); }
END_TEST

START_TEST(test_modpo_fixture) { check_pref_fixture("modpo", 1, &worst_modpo); }
END_TEST

/* ------------------------------------------------------------------ by hand */

START_TEST(test_zero_logit_is_log2)
{
    /* Equal log-ratios: z = 0, loss log 2, dL/dpi_c = -beta*sigma(0)/B = -beta/(2B). */
    float pc[2] = { -10.f, -3.f }, pr[2] = { -20.f, -4.f }, rc[2] = { -11.f, -5.f }, rr[2] = { -21.f, -6.f };
    PrefBatch b = { 2, pc, pr, rc, rr };
    float dc[2], dr[2];
    PrefGrads g = { dc, dr };
    PrefMetrics m;
    ck_assert_int_eq(dpo_loss(&b, 0.5, PREF_LOSS_SIGMOID, 1.0, &m, &g, NULL), 0);
    ck_assert_double_eq_tol(m.loss, log(2.0), 1e-15);
    ck_assert_float_eq_tol(dc[0], -0.125f, 1e-9f);
    ck_assert_float_eq_tol(dr[1], 0.125f, 1e-9f);
    ck_assert_double_eq_tol(m.rewards_chosen, 0.5 * (1.0 + 2.0) / 2, 1e-15);
    ck_assert_double_eq_tol(m.rewards_margins, 0.0, 1e-15);
    ck_assert_double_eq(m.accuracy, 0.0); /* ties are not "correct", as in the seed (>) */
    ck_assert_double_eq_tol(m.logps_margins, (10.0 + 1.0) / 2, 1e-15);
    /* Hinge at z = 0: loss 1, gradient -beta/B. */
    ck_assert_int_eq(dpo_loss(&b, 0.5, PREF_LOSS_HINGE, 1.0, &m, &g, NULL), 0);
    ck_assert_double_eq_tol(m.loss, 1.0, 1e-15);
    ck_assert_float_eq_tol(dc[0], -0.25f, 1e-9f);
}
END_TEST

START_TEST(test_one_pair_by_hand)
{
    /* beta 0.1, pi-ref: chosen +2, rejected -3 -> z = 0.5.
     * loss = log(1 + e^-0.5); dL/dpi_c = -0.1 * sigma(-0.5); grad_scale 1/8 on top. */
    float pc[1] = { -40.f }, pr[1] = { -60.f }, rc[1] = { -42.f }, rr[1] = { -57.f };
    PrefBatch b = { 1, pc, pr, rc, rr };
    float dc[1], dr[1];
    PrefGrads g = { dc, dr };
    PrefMetrics m;
    ck_assert_int_eq(dpo_loss(&b, 0.1, PREF_LOSS_SIGMOID, 0.125, &m, &g, NULL), 0);
    double sig = 1.0 / (1.0 + exp(0.5));
    ck_assert_double_eq_tol(m.loss, log1p(exp(-0.5)), 1e-15);
    ck_assert_float_eq_tol(dc[0], (float)(-0.1 * sig * 0.125), 1e-10f);
    ck_assert_float_eq_tol(dr[0], (float)(0.1 * sig * 0.125), 1e-10f);
    ck_assert_double_eq(m.accuracy, 1.0);
    /* Hinge exactly at z = 1 passes no gradient (torch's relu backward). */
    rc[0] = -41.f; /* beta 0.5, pi - ref: chosen +1, rejected -1 -> z = 1 exactly */
    rr[0] = -59.f;
    ck_assert_int_eq(dpo_loss(&b, 0.5, PREF_LOSS_HINGE, 1.0, &m, &g, NULL), 0);
    ck_assert_double_eq(m.loss, 0.0);
    ck_assert_float_eq(dc[0], 0.0f);
}
END_TEST

START_TEST(test_extreme_logits_stay_finite)
{
    /* z = +-1e4: a naive log(sigmoid(z)) gives -inf / NaN. */
    float pc[2] = { 0.f, -1e5f }, pr[2] = { -1e5f, 0.f }, rc[2] = { 0.f, 0.f }, rr[2] = { 0.f, 0.f };
    PrefBatch b = { 2, pc, pr, rc, rr };
    float dc[2], dr[2];
    PrefGrads g = { dc, dr };
    PrefMetrics m;
    ck_assert_int_eq(dpo_loss(&b, 0.1, PREF_LOSS_SIGMOID, 1.0, &m, &g, NULL), 0);
    ck_assert_double_eq_tol(m.loss, (0.0 + 1e4) / 2, 1e-9);
    ck_assert_float_eq(dc[0], -0.0f);
    ck_assert_float_eq_tol(dc[1], -0.05f, 1e-9f);
}
END_TEST

START_TEST(test_modpo_by_hand)
{
    /* w = 0.25, beta 0.1: R(y) = 4 * (0.1*(pi - ref) - 0.75*r_margin).
     * chosen: 0.1*5 - 0.75*2 = -1 -> R_c = -4; rejected: 0.1*(-5) - 0.75*(-2) = 1 -> R_r = 4. */
    float pc[1] = { -5.f }, pr[1] = { -15.f }, rc[1] = { -10.f }, rr[1] = { -10.f };
    float mc[1] = { 2.f }, mr[1] = { -2.f };
    PrefBatch b = { 1, pc, pr, rc, rr };
    float dc[1], dr[1];
    PrefGrads g = { dc, dr };
    PrefMetrics m;
    ck_assert_int_eq(modpo_loss(&b, mc, mr, 0.1, 0.25, PREF_LOSS_SIGMOID, 1.0, &m, &g, NULL), 0);
    ck_assert_double_eq_tol(m.rewards_chosen, -4.0, 1e-12);
    ck_assert_double_eq_tol(m.rewards_rejected, 4.0, 1e-12);
    ck_assert_double_eq_tol(m.loss, log1p(exp(8.0)), 1e-12);
    ck_assert_double_eq(m.accuracy, 0.0);
    double sig = 1.0 / (1.0 + exp(-8.0)); /* sigma(-z) with z = -8 */
    ck_assert_float_eq_tol(dc[0], (float)(-0.4 * sig), 1e-7f);
    ck_assert_double_eq_tol(m.implicit_chosen, 0.5, 1e-12);
    ck_assert_double_eq_tol(m.margin_raw_mean, 0.0, 1e-15);
    ck_assert_double_eq_tol(m.margin_raw_std, 2.0 * sqrt(2.0), 1e-12); /* unbiased over {2, -2} */
    /* w = 1 is plain DPO. */
    PrefMetrics d;
    float dc2[1], dr2[1];
    PrefGrads g2 = { dc2, dr2 };
    ck_assert_int_eq(modpo_loss(&b, mc, mr, 0.1, 1.0, PREF_LOSS_SIGMOID, 1.0, &m, &g, NULL), 0);
    ck_assert_int_eq(dpo_loss(&b, 0.1, PREF_LOSS_SIGMOID, 1.0, &d, &g2, NULL), 0);
    ck_assert_double_eq(m.loss, d.loss);
    ck_assert_float_eq(dc[0], dc2[0]);
    /* The margin reward helper. */
    float ad[2] = { -3.f, -7.f }, sft[2] = { -4.f, -5.f }, r[2];
    modpo_margin_rewards(-0.5, ad, sft, 2, r);
    ck_assert_float_eq(r[0], -0.5f);
    ck_assert_float_eq(r[1], 1.0f);
}
END_TEST

START_TEST(test_sft_by_hand)
{
    float logps[3] = { -6.f, -2.f, -4.f }, d[3];
    int toks[3] = { 3, 1, 2 };
    double loss;
    ck_assert_int_eq(sft_loss(logps, toks, 3, 0.5, &loss, d, NULL), 0);
    ck_assert_double_eq_tol(loss, 2.0, 1e-15);
    ck_assert_float_eq_tol(d[2], -0.5f / 6.f, 1e-9f);
}
END_TEST

START_TEST(test_errors)
{
    Error err;
    float x[2] = { -1.f, NAN }, y[2] = { -1.f, -2.f }, d[2];
    int toks[2] = { 1, 1 }, zero[2] = { 0, 0 };
    double loss;
    ck_assert_int_eq(sft_loss(x, toks, 2, 1.0, &loss, d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "logps[1]"));
    ck_assert_int_eq(sft_loss(y, zero, 2, 1.0, &loss, d, &err), -1);
    ck_assert_int_eq(sft_loss(y, toks, 0, 1.0, &loss, d, &err), -1);
    PrefBatch b = { 2, y, y, y, x };
    PrefGrads g = { d, d };
    PrefMetrics m;
    ck_assert_int_eq(dpo_loss(&b, 0.1, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "reference rejected"));
    b.ref_rejected = y;
    ck_assert_int_eq(modpo_loss(&b, y, y, 0.1, 0.0, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), -1);
    ck_assert_int_eq(modpo_loss(&b, y, y, 0.1, 1.5, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), -1);
    ck_assert_int_eq(modpo_loss(&b, y, x, 0.1, 0.5, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), -1);
    b.n_pairs = 0;
    ck_assert_int_eq(dpo_loss(&b, 0.1, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), -1);
    ck_assert_int_eq(pref_loss_type_from_name("ipo"), -1);
    ck_assert_int_eq(pref_loss_type_from_name("hinge"), PREF_LOSS_HINGE);
}
END_TEST

static void print_worst(const char *name, const Worst *w)
{
    printf("  %-5s max rel err: loss+metrics vs torch f64 %.2e, vs f32 %.2e (where f32 is exact to 1e-6); "
           "grads vs f64 %.2e, vs f32 %.2e\n", name, w->f64, w->f32, w->grad64, w->grad32);
}

int main(void)
{
    Suite *s = suite_create("losses");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_sft_fixture);
    tcase_add_test(tc, test_dpo_fixture);
    tcase_add_test(tc, test_modpo_fixture);
    tcase_add_test(tc, test_zero_logit_is_log2);
    tcase_add_test(tc, test_one_pair_by_hand);
    tcase_add_test(tc, test_extreme_logits_stay_finite);
    tcase_add_test(tc, test_modpo_by_hand);
    tcase_add_test(tc, test_sft_by_hand);
    tcase_add_test(tc, test_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* keeps the worst-error tallies in this process */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    print_worst("SFT", &worst_sft);
    print_worst("DPO", &worst_dpo);
    print_worst("MODPO", &worst_modpo);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

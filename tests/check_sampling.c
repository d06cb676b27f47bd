/* Next-token choice: parity with transformers' own logits processors
 * (tests/fixtures/sampling/processors.json, written by
 * tests/gen_sampling_fixtures.py), hand-computed processor results, greedy
 * tie-breaking, and the multinomial draw's distribution. */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sampling.h"

#define FIXTURE "tests/fixtures/sampling/processors.json"
#define MAX_V 256
#define MAX_CTX 256

typedef struct {
    char name[64];
    SamplingParams p;
    int vocab;
    float logits[MAX_V];
    float expected[MAX_V]; /* -INFINITY where transformers removed the token */
    int32_t context[MAX_CTX];
    size_t n_context;
} Case;

static json_t *load_cases(void)
{
    json_error_t jerr;
    json_t *root = json_load_file(FIXTURE, 0, &jerr);
    ck_assert_msg(root != NULL, "%s:%d: %s", FIXTURE, jerr.line, jerr.text);
    json_t *cases = json_object_get(root, "cases");
    ck_assert(json_is_array(cases));
    ck_assert_int_ge(json_array_size(cases), 40);
    json_incref(cases);
    json_decref(root);
    return cases;
}

static void parse_case(json_t *c, Case *out)
{
    snprintf(out->name, sizeof out->name, "%s", json_string_value(json_object_get(c, "name")));
    json_t *p = json_object_get(c, "params");
    out->p.do_sample = json_is_true(json_object_get(p, "do_sample"));
    out->p.temperature = json_number_value(json_object_get(p, "temperature"));
    out->p.top_k = (int)json_integer_value(json_object_get(p, "top_k"));
    out->p.top_p = json_number_value(json_object_get(p, "top_p"));
    out->p.repetition_penalty = json_number_value(json_object_get(p, "repetition_penalty"));
    out->p.no_repeat_ngram_size = (int)json_integer_value(json_object_get(p, "no_repeat_ngram_size"));
    json_t *logits = json_object_get(c, "logits"), *expected = json_object_get(c, "expected");
    json_t *context = json_object_get(c, "context");
    out->vocab = (int)json_array_size(logits);
    ck_assert_int_le(out->vocab, MAX_V);
    ck_assert_int_eq(json_array_size(expected), out->vocab);
    for (int i = 0; i < out->vocab; i++) {
        out->logits[i] = (float)json_number_value(json_array_get(logits, (size_t)i));
        json_t *e = json_array_get(expected, (size_t)i);
        out->expected[i] = json_is_null(e) ? -INFINITY : (float)json_number_value(e);
    }
    out->n_context = json_array_size(context);
    ck_assert_uint_le(out->n_context, MAX_CTX);
    for (size_t i = 0; i < out->n_context; i++)
        out->context[i] = (int32_t)json_integer_value(json_array_get(context, i));
}

START_TEST(matches_transformers_processors)
{
    json_t *cases = load_cases();
    SamplingScratch s;
    Error err;
    ck_assert_int_eq(sampling_scratch_init(&s, MAX_V, &err), 0);
    for (size_t k = 0; k < json_array_size(cases); k++) {
        Case c;
        parse_case(json_array_get(cases, k), &c);
        ck_assert_int_eq(sampling_params_check(&c.p, &err), 0);
        sampling_process(&c.p, c.logits, c.vocab, c.context, c.n_context, &s);
        for (int i = 0; i < c.vocab; i++) {
            float got = c.logits[i], want = c.expected[i];
            if (isinf(want)) {
                ck_assert_msg(isinf(got) && got < 0, "%s[%d]: got %.9g, transformers removed it",
                              c.name, i, got);
            } else {
                ck_assert_msg(isfinite(got), "%s[%d]: removed, transformers kept %.9g", c.name, i, want);
                ck_assert_msg(fabsf(got - want) <= 1e-6f, "%s[%d]: got %.9g, want %.9g", c.name, i,
                              got, want);
            }
        }
        for (int i = 0; i < MAX_V; i++) ck_assert_msg(s.seen[i] == 0, "seen[%d] left set", i);
    }
    sampling_scratch_free(&s);
    json_decref(cases);
}
END_TEST

START_TEST(sampled_tokens_are_kept_ones)
{
    json_t *cases = load_cases();
    SamplingScratch s;
    Error err;
    ck_assert_int_eq(sampling_scratch_init(&s, MAX_V, &err), 0);
    Rng rng;
    rng_seed(&rng, 7);
    int n_sampling = 0;
    for (size_t k = 0; k < json_array_size(cases); k++) {
        Case c;
        parse_case(json_array_get(cases, k), &c);
        float work[MAX_V];
        for (int draw = 0; draw < 200; draw++) {
            memcpy(work, c.logits, sizeof work);
            int32_t t = sampling_next_token(&c.p, work, c.vocab, c.context, c.n_context, &rng, &s);
            ck_assert_msg(t >= 0 && t < c.vocab, "%s: token %d", c.name, t);
            if (!c.p.do_sample) { /* greedy: torch.argmax of generate's scores */
                ck_assert_int_eq(t, sampling_argmax(c.expected, c.vocab));
                break;
            }
            ck_assert_msg(isfinite(c.expected[t]), "%s: drew removed token %d", c.name, t);
        }
        n_sampling += c.p.do_sample;
    }
    ck_assert_int_ge(n_sampling, 20);
    sampling_scratch_free(&s);
    json_decref(cases);
}
END_TEST

START_TEST(greedy_takes_the_first_maximum)
{
    float a[] = {1, 3, 3, 2};
    ck_assert_int_eq(sampling_argmax(a, 4), 1);
    float b[] = {-INFINITY, -INFINITY, -INFINITY};
    ck_assert_int_eq(sampling_argmax(b, 3), 0); /* torch.argmax of all -inf */
    float c[] = {-5, -1, -1, -INFINITY};
    ck_assert_int_eq(sampling_argmax(c, 4), 1);

    /* Through the full path: the penalty turns 3 into 1.5 so the 2 wins. */
    SamplingParams p;
    sampling_params_default(&p);
    p.repetition_penalty = 2.0;
    SamplingScratch s;
    Error err;
    ck_assert_int_eq(sampling_scratch_init(&s, 4, &err), 0);
    float d[] = {0, 3, 2, 2};
    int32_t ctx[] = {1};
    ck_assert_int_eq(sampling_next_token(&p, d, 4, ctx, 1, NULL, &s), 2);
    sampling_scratch_free(&s);
}
END_TEST

/* Vocabularies longer than the vectorised passes' lanes, the maximum tied
 * in the middle, in the tail and at both: the first one wins each time. */
START_TEST(greedy_first_maximum_past_the_lanes)
{
    enum { N = 37 };
    static const int ties[][2] = {{20, 33}, {35, 36}, {0, 36}, {17, 17}, {33, 34}};
    for (size_t c = 0; c < sizeof ties / sizeof ties[0]; c++)
        for (int n = ties[c][1] + 1; n <= N; n++) {
            float x[N];
            for (int i = 0; i < N; i++) x[i] = (float)((i * 7919) % 101) / 101.0f - 2.0f;
            x[ties[c][0]] = x[ties[c][1]] = 5.0f;
            ck_assert_int_eq(sampling_argmax(x, n), ties[c][0]);
        }
    float flat[N];
    for (int i = 0; i < N; i++) flat[i] = -INFINITY;
    flat[N - 1] = -1e30f;
    ck_assert_int_eq(sampling_argmax(flat, N), N - 1);
    ck_assert_int_eq(sampling_argmax(flat, N - 1), 0); /* all -inf */
}
END_TEST

START_TEST(repetition_penalty_by_hand)
{
    unsigned char seen[4] = {0};
    float x[] = {2, -2, 1, 0.5f};
    int32_t ctx[] = {0, 1, 0, 0, 99, -3}; /* repeats count once; ids outside the vocab ignored */
    logits_repetition_penalty(x, 4, ctx, 6, 2.0f, seen);
    ck_assert_float_eq(x[0], 1.0f);
    ck_assert_float_eq(x[1], -4.0f);
    ck_assert_float_eq(x[2], 1.0f);
    ck_assert_float_eq(x[3], 0.5f);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(seen[i], 0);
}
END_TEST

static int n_banned(const float *x, int n)
{
    int k = 0;
    for (int i = 0; i < n; i++) k += isinf(x[i]) && x[i] < 0;
    return k;
}

START_TEST(no_repeat_ngram_by_hand)
{
    float x[6];
    /* [1 2 3 1 2], n 3: suffix (1 2) was followed by 3 -> ban 3 only. */
    int32_t a[] = {1, 2, 3, 1, 2};
    for (int i = 0; i < 6; i++) x[i] = 0;
    logits_no_repeat_ngram(x, 6, a, 5, 3);
    ck_assert(isinf(x[3]));
    ck_assert_int_eq(n_banned(x, 6), 1);
    /* Shorter than n: nothing to ban. */
    for (int i = 0; i < 6; i++) x[i] = 0;
    logits_no_repeat_ngram(x, 6, a, 2, 3);
    ck_assert_int_eq(n_banned(x, 6), 0);
    /* Exactly n tokens, suffix (2 3) never seen before: nothing banned. */
    logits_no_repeat_ngram(x, 6, a, 3, 3);
    ck_assert_int_eq(n_banned(x, 6), 0);
    /* n 1 bans every token present. */
    logits_no_repeat_ngram(x, 6, a, 5, 1);
    ck_assert_int_eq(n_banned(x, 6), 3);
    ck_assert(isinf(x[1]) && isinf(x[2]) && isinf(x[3]));
    /* Several continuations of one prefix: (5 1) (5 2), suffix 5 -> ban 1 and 2. */
    int32_t b[] = {5, 1, 5, 2, 5};
    for (int i = 0; i < 6; i++) x[i] = 0;
    logits_no_repeat_ngram(x, 6, b, 5, 2);
    ck_assert_int_eq(n_banned(x, 6), 2);
    ck_assert(isinf(x[1]) && isinf(x[2]));
}
END_TEST

START_TEST(top_k_and_top_p_by_hand)
{
    float heap[8];
    float x[] = {1, 5, 3, 3, 2};
    logits_top_k(x, 5, 2, heap); /* 2nd largest is 3: both 3s stay */
    ck_assert(isinf(x[0]) && isinf(x[4]));
    ck_assert_float_eq(x[1], 5);
    ck_assert_float_eq(x[2], 3);
    ck_assert_float_eq(x[3], 3);

    /* Probabilities .1 .2 .3 .4, top_p .6: ascending cumulative .1 .3 .6 1;
     * .1 and .3 are <= .4 so ids 0 and 1 go. */
    SamplingPair *pairs = NULL;
    SamplingScratch s;
    Error err;
    ck_assert_int_eq(sampling_scratch_init(&s, 4, &err), 0);
    pairs = s.pairs;
    float y[] = {logf(0.1f), logf(0.2f), logf(0.3f), logf(0.4f)};
    logits_top_p(y, 4, 0.6, pairs);
    ck_assert(isinf(y[0]) && isinf(y[1]));
    ck_assert(isfinite(y[2]) && isfinite(y[3]));
    /* top_p 0 still keeps the most likely token. */
    float z[] = {0.5f, 0.1f, 0.2f, 0.9f};
    logits_top_p(z, 4, 0.0, pairs);
    ck_assert_int_eq(n_banned(z, 4), 3);
    ck_assert_float_eq(z[3], 0.9f);
    sampling_scratch_free(&s);
}
END_TEST

START_TEST(multinomial_follows_softmax)
{
    /* Chi-square over 5 categories (4 degrees of freedom) with a fixed seed;
     * 25 is beyond the 0.9999 quantile (23.5), so only a biased sampler fails. */
    const float logits[] = {0.0f, 1.0f, -1.0f, 2.0f, -INFINITY};
    double w[5], sum = 0;
    for (int i = 0; i < 5; i++) sum += (w[i] = exp(logits[i]));
    Rng rng;
    rng_seed(&rng, 12345);
    const int n = 200000;
    int count[5] = {0};
    for (int d = 0; d < n; d++) {
        int32_t t = sampling_multinomial(logits, 5, &rng);
        ck_assert(t >= 0 && t < 4);
        count[t]++;
    }
    ck_assert_int_eq(count[4], 0);
    double chi2 = 0;
    for (int i = 0; i < 4; i++) {
        double e = n * w[i] / sum;
        chi2 += (count[i] - e) * (count[i] - e) / e;
    }
    ck_assert_msg(chi2 < 25, "chi-square %.2f", chi2);
}
END_TEST

START_TEST(multinomial_edge_cases)
{
    Rng a, b;
    rng_seed(&a, 3);
    rng_seed(&b, 3);
    const float x[] = {0.3f, -0.2f, 1.1f, 0.0f, 0.7f};
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(sampling_multinomial(x, 5, &a), sampling_multinomial(x, 5, &b));
    const float none[] = {-INFINITY, -INFINITY};
    ck_assert_int_eq(sampling_multinomial(none, 2, &a), -1);
    const float one[] = {-INFINITY, 4.0f, -INFINITY};
    for (int i = 0; i < 50; i++) ck_assert_int_eq(sampling_multinomial(one, 3, &a), 1);
}
END_TEST

START_TEST(params_defaults_and_checks)
{
    SamplingParams p;
    Error err;
    sampling_params_default(&p);
    ck_assert(!p.do_sample);
    ck_assert_int_eq(p.top_k, 50); /* generate()'s default */
    ck_assert_int_eq(sampling_params_check(&p, &err), 0);
    p.temperature = 0;
    ck_assert_int_eq(sampling_params_check(&p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "temperature"));
    sampling_params_default(&p);
    p.top_p = 1.5;
    ck_assert_int_eq(sampling_params_check(&p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "top_p"));
    sampling_params_default(&p);
    p.repetition_penalty = 0;
    ck_assert_int_eq(sampling_params_check(&p, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "repetition_penalty"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sampling");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, matches_transformers_processors);
    tcase_add_test(tc, sampled_tokens_are_kept_ones);
    tcase_add_test(tc, greedy_takes_the_first_maximum);
    tcase_add_test(tc, greedy_first_maximum_past_the_lanes);
    tcase_add_test(tc, repetition_penalty_by_hand);
    tcase_add_test(tc, no_repeat_ngram_by_hand);
    tcase_add_test(tc, top_k_and_top_p_by_hand);
    tcase_add_test(tc, multinomial_follows_softmax);
    tcase_add_test(tc, multinomial_edge_cases);
    tcase_add_test(tc, params_defaults_and_checks);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

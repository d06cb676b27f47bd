/* Preference pairs and SFT examples against hand-made groups with known pairs
 * (tests/fixtures/data/groups.jsonl), and the seed's counts on the sample. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pairs.h"

/* groups.jsonl (h c co cx v; overall):
 *   0 P1 a 3 2 4 1 0 ;10     group P1 = rows 0-2
 *   1 P1 b 1 2 4 2 1 ;10
 *   2 P1 c 3 4 0 0 2 ; 9
 *   3 P2 d 2 2 2 2 2 ;10     single-row group: no pairs
 *   4 P3 e 0 1 3 4 4 ;12     group P3 = rows 4-5
 *   5 P3 f 4 1 2 0 3 ;10
 *   6 P1 g 2 3 4 1 1 ;11     P1 again, not adjacent: its own group (rows 6-7)
 *   7 P1 h 2 0 3 3 2 ;10
 * j<k combinations: (0,1) (0,2) (1,2) (4,5) (6,7). */
typedef struct {
    const char *name;
    const char *pairs; /* "chosen>rejected" in the seed's order, space-separated */
    size_t n_ties;
} Expected;

static const Expected EXPECTED[DIM_N] = {
    [DIM_HELPFULNESS] = { "helpfulness", "a>b c>b f>e", 2 },
    [DIM_CORRECTNESS] = { "correctness", "c>a c>b g>h", 2 },
    [DIM_COHERENCE] = { "coherence", "a>c b>c e>f g>h", 1 },
    [DIM_COMPLEXITY] = { "complexity", "b>a a>c b>c e>f h>g", 0 },
    [DIM_VERBOSITY] = { "verbosity", "b>a c>a c>b e>f h>g", 0 },
    [DIM_OVERALL] = { "overall", "a>c b>c e>f g>h", 1 },
};

static void load_groups(HelpSteerData *d)
{
    Error err = { "" };
    ck_assert_msg(helpsteer_load("tests/fixtures/data/groups.jsonl", false, d, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d->n_rows, 8);
}

static void describe(const PairSet *set, char *out, size_t size)
{
    out[0] = '\0';
    for (size_t i = 0; i < set->n; i++) {
        char one[16];
        snprintf(one, sizeof one, "%s%s>%s", i ? " " : "", set->pairs[i].chosen, set->pairs[i].rejected);
        strncat(out, one, size - strlen(out) - 1);
    }
}

START_TEST(test_pairs_per_dimension)
{
    HelpSteerData d;
    load_groups(&d);
    const Expected *e = &EXPECTED[_i];
    Dimension dim;
    Error err = { "" };
    ck_assert_int_eq(dimension_parse(e->name, &dim, &err), 0);
    ck_assert_int_eq(dim, _i);
    ck_assert_str_eq(dimension_name(dim), e->name);
    PairSet set;
    ck_assert_int_eq(pairs_build(&d, dim, &set, &err), 0);
    char got[256];
    describe(&set, got, sizeof got);
    ck_assert_str_eq(got, e->pairs);
    ck_assert_uint_eq(set.n_ties, e->n_ties);
    ck_assert_uint_eq(set.n_groups, 4);
    ck_assert_uint_eq(set.n + set.n_ties, 5);
    pairs_free(&set);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_pair_fields)
{
    HelpSteerData d;
    load_groups(&d);
    PairSet set;
    Error err = { "" };
    ck_assert_int_eq(pairs_build(&d, DIM_HELPFULNESS, &set, &err), 0);
    ck_assert_uint_eq(set.n, 3);
    /* c>b: chosen is the later row of the combination (1,2). */
    ck_assert_str_eq(set.pairs[1].prompt, "P1");
    ck_assert_uint_eq(set.pairs[1].row_chosen, 2);
    ck_assert_uint_eq(set.pairs[1].row_rejected, 1);
    ck_assert_str_eq(set.pairs[2].prompt, "P3");
    ck_assert_uint_eq(set.pairs[2].row_chosen, 5);
    ck_assert_uint_eq(set.pairs[2].row_rejected, 4);
    pairs_free(&set);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_scores_and_groups)
{
    HelpSteerData d;
    load_groups(&d);
    ck_assert_int_eq(dimension_score(&d.rows[4], DIM_OVERALL), 12);
    ck_assert_int_eq(dimension_score(&d.rows[4], DIM_COMPLEXITY), 4);
    ck_assert_uint_eq(helpsteer_count_groups(&d), 4);
    ck_assert_uint_eq(helpsteer_group_end(&d, 0), 3);
    ck_assert_uint_eq(helpsteer_group_end(&d, 3), 4);
    ck_assert_uint_eq(helpsteer_group_end(&d, 4), 6);
    ck_assert_uint_eq(helpsteer_group_end(&d, 6), 8);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_dimension_parse_error)
{
    Dimension dim;
    Error err = { "" };
    ck_assert_int_eq(dimension_parse("helpful", &dim, &err), -1);
    ck_assert_str_eq(err.msg, "unknown dimension \"helpful\" (allowed: helpfulness, correctness, coherence, "
                              "complexity, verbosity, overall)");
}
END_TEST

START_TEST(test_sft_examples)
{
    HelpSteerData d;
    load_groups(&d);
    SftSet all, chosen;
    Error err = { "" };
    ck_assert_int_eq(sft_build(&d, "all", &all, &err), 0);
    ck_assert_uint_eq(all.n, 8);
    ck_assert_str_eq(all.ex[3].prompt, "P2");
    ck_assert_str_eq(all.ex[3].response, "d");
    ck_assert_uint_eq(all.ex[7].row, 7);

    /* The seed's SFT on helpfulness pairs: one example per pair, chosen side. */
    ck_assert_int_eq(sft_build(&d, "helpfulness", &chosen, &err), 0);
    ck_assert_uint_eq(chosen.n, 3);
    ck_assert_str_eq(chosen.ex[0].response, "a");
    ck_assert_str_eq(chosen.ex[1].response, "c");
    ck_assert_str_eq(chosen.ex[2].response, "f");
    ck_assert_str_eq(chosen.ex[2].prompt, "P3");
    ck_assert_uint_eq(chosen.ex[2].row, 5);
    sft_free(&chosen);

    /* verbosity: c wins twice, so it is an SFT example twice. */
    ck_assert_int_eq(sft_build(&d, "verbosity", &chosen, &err), 0);
    ck_assert_uint_eq(chosen.n, 5);
    ck_assert_str_eq(chosen.ex[1].response, "c");
    ck_assert_str_eq(chosen.ex[2].response, "c");
    sft_free(&chosen);

    ck_assert_int_eq(sft_build(&d, "rows", &chosen, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "unknown SFT source \"rows\" (allowed: all, helpfulness,"));
    sft_free(&all);
    helpsteer_free(&d);
}
END_TEST

/* Expected counts come from the seed's helpsteer_transform_to_preference
 * (re-implemented in Python) over data/helpsteer-sample; regenerate them if
 * tests/make_sample_data.py changes. */
START_TEST(test_sample_counts)
{
    static const size_t train_pairs[DIM_N] = { 280, 245, 194, 242, 274, 336 };
    static const size_t train_ties[DIM_N] = { 86, 121, 172, 124, 92, 30 };
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load("data/helpsteer-sample/train.jsonl.gz", false, &d, &err), 0);
    ck_assert_uint_eq(d.n_rows, 314);
    ck_assert_uint_eq(helpsteer_count_groups(&d), 100);
    for (int dim = 0; dim < DIM_N; dim++) {
        PairSet set;
        ck_assert_int_eq(pairs_build(&d, (Dimension)dim, &set, &err), 0);
        ck_assert_uint_eq(set.n, train_pairs[dim]);
        ck_assert_uint_eq(set.n_ties, train_ties[dim]);
        if (dim == DIM_HELPFULNESS)
            ck_assert_ptr_nonnull(strstr(set.pairs[0].chosen, "It is Paris. The city sits on the river"));
        pairs_free(&set);
    }
    helpsteer_free(&d);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("pairs");
    TCase *tc = tcase_create("pairs");
    tcase_add_loop_test(tc, test_pairs_per_dimension, 0, DIM_N);
    tcase_add_test(tc, test_pair_fields);
    tcase_add_test(tc, test_scores_and_groups);
    tcase_add_test(tc, test_dimension_parse_error);
    tcase_add_test(tc, test_sft_examples);
    tcase_add_test(tc, test_sample_counts);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

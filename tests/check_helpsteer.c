/* The HelpSteer JSONL reader: gzip and plain files, each bad-input case (the
 * message names file, line and field), skip_bad_rows counting, long lines. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#include "helpsteer.h"

#define FIX "tests/fixtures/data/"

static void assert_good_rows(const HelpSteerData *d)
{
    ck_assert_uint_eq(d->n_rows, 3);
    ck_assert_uint_eq(d->n_bad, 0);
    ck_assert_str_eq(d->rows[0].prompt, "What is 2+2?");
    ck_assert_str_eq(d->rows[0].response, "4.");
    const int r0[HS_N_RATINGS] = { 4, 4, 4, 0, 0 };
    const int r1[HS_N_RATINGS] = { 3, 4, 4, 1, 1 };
    const int r2[HS_N_RATINGS] = { 2, 4, 3, 0, 0 };
    for (int i = 0; i < HS_N_RATINGS; i++) {
        ck_assert_int_eq(d->rows[0].rating[i], r0[i]);
        ck_assert_int_eq(d->rows[1].rating[i], r1[i]);
        ck_assert_int_eq(d->rows[2].rating[i], r2[i]);
    }
    /* Non-ASCII text survives byte for byte (UTF-8 of ï, em dash, emoji). */
    ck_assert_str_eq(d->rows[1].response, "It is four, na\xc3\xafvely speaking \xe2\x80\x94 \xf0\x9f\x98\x80.");
    ck_assert_str_eq(d->rows[2].prompt, "Name a colour.");
    /* Equal consecutive prompts share one allocation. */
    ck_assert_ptr_eq(d->rows[0].prompt, d->rows[1].prompt);
    ck_assert_uint_eq(d->rows[2].line, 3);
}

START_TEST(test_plain_with_crlf_and_trailing_blanks)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "good.jsonl", false, &d, &err), 0);
    assert_good_rows(&d);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_gzip)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "good.jsonl.gz", false, &d, &err), 0);
    assert_good_rows(&d);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_no_final_newline)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "no_final_newline.jsonl", false, &d, &err), 0);
    assert_good_rows(&d);
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_sample_data)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_msg(helpsteer_load("data/helpsteer-sample/train.jsonl.gz", false, &d, &err) == 0, "%s", err.msg);
    ck_assert_uint_ge(d.n_rows, 250);
    ck_assert_uint_le(d.n_rows, 400);
    size_t groups = helpsteer_count_groups(&d);
    ck_assert_uint_ge(groups, 80);
    ck_assert_uint_lt(groups, d.n_rows);
    helpsteer_free(&d);
    ck_assert_int_eq(helpsteer_load("data/helpsteer-sample/validation.jsonl.gz", false, &d, &err), 0);
    ck_assert_uint_ge(d.n_rows, 40);
    helpsteer_free(&d);
}
END_TEST

/* Each bad file has its bad row on line 2; the error must say FILE:2: and
 * name the field. */
typedef struct {
    const char *file;
    const char *needle; /* a part of the message naming the field / problem */
    HelpSteerBadReason reason;
} BadCase;

static const BadCase BAD_CASES[] = {
    { "bad_json.jsonl", "malformed JSON", HS_BAD_JSON },
    { "not_object.jsonl", "expected a JSON object, got an array", HS_BAD_JSON },
    { "missing_field.jsonl", "missing field \"coherence\"", HS_BAD_MISSING },
    { "wrong_type.jsonl", "field \"helpfulness\" must be an integer 0-4, got a string", HS_BAD_TYPE },
    { "non_integer.jsonl", "field \"correctness\" must be an integer 0-4, got a real number", HS_BAD_TYPE },
    { "null_prompt.jsonl", "field \"prompt\" must be a string, got null", HS_BAD_TYPE },
    { "out_of_range.jsonl", "field \"verbosity\" is 5, outside 0-4", HS_BAD_RANGE },
    { "negative.jsonl", "field \"complexity\" is -1, outside 0-4", HS_BAD_RANGE },
    { "bad_utf8.jsonl", "invalid UTF-8 in field \"response\" (byte 0xc3 at column 34)", HS_BAD_UTF8 },
    { "empty_prompt.jsonl", "field \"prompt\" is empty", HS_BAD_EMPTY },
    { "empty_response.jsonl", "field \"response\" is empty", HS_BAD_EMPTY },
    { "blank_middle.jsonl", "blank line inside the file", HS_BAD_JSON },
};

START_TEST(test_bad_case_fails)
{
    const BadCase *c = &BAD_CASES[_i];
    char path[256], where[300];
    snprintf(path, sizeof path, FIX "%s", c->file);
    snprintf(where, sizeof where, "%s:2: ", path);
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(path, false, &d, &err), -1);
    ck_assert_msg(strstr(err.msg, where) == err.msg, "message '%s' should start with '%s'", err.msg, where);
    ck_assert_msg(strstr(err.msg, c->needle), "message '%s' should contain '%s'", err.msg, c->needle);
    ck_assert_ptr_null(d.rows);
}
END_TEST

START_TEST(test_bad_case_skipped)
{
    const BadCase *c = &BAD_CASES[_i];
    char path[256];
    snprintf(path, sizeof path, FIX "%s", c->file);
    HelpSteerData d;
    Error err = { "" };
    ck_assert_msg(helpsteer_load(path, true, &d, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_rows, 2);
    ck_assert_uint_eq(d.n_bad, 1);
    ck_assert_uint_eq(d.bad[c->reason], 1);
    ck_assert_uint_eq(d.rows[1].line, 3);
    ck_assert_ptr_nonnull(strstr(d.first_bad[c->reason], ":2: "));
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_skip_counts_per_reason)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "mixed_bad.jsonl", false, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "mixed_bad.jsonl:2: malformed JSON"));

    ck_assert_msg(helpsteer_load(FIX "mixed_bad.jsonl", true, &d, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_rows, 3);
    ck_assert_str_eq(d.rows[0].prompt, "Q?");
    ck_assert_str_eq(d.rows[1].prompt, "Q2?");
    ck_assert_str_eq(d.rows[2].prompt, "Q3?");
    ck_assert_uint_eq(d.rows[2].line, 10);
    ck_assert_uint_eq(d.n_bad, 7);
    ck_assert_uint_eq(d.bad[HS_BAD_JSON], 1);
    ck_assert_uint_eq(d.bad[HS_BAD_MISSING], 1);
    ck_assert_uint_eq(d.bad[HS_BAD_TYPE], 1);
    ck_assert_uint_eq(d.bad[HS_BAD_RANGE], 2);
    ck_assert_uint_eq(d.bad[HS_BAD_UTF8], 1);
    ck_assert_uint_eq(d.bad[HS_BAD_EMPTY], 1);
    /* The first of the two range errors is the one remembered. */
    ck_assert_ptr_nonnull(strstr(d.first_bad[HS_BAD_RANGE], ":6: field \"coherence\" is 9"));
    ck_assert_ptr_nonnull(strstr(d.first_bad[HS_BAD_UTF8], ":7: invalid UTF-8 in field \"prompt\""));
    ck_assert_str_eq(helpsteer_bad_reason_name(HS_BAD_RANGE), "rating outside 0-4");
    helpsteer_free(&d);
}
END_TEST

START_TEST(test_missing_file)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "does-not-exist.jsonl.gz", false, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "does-not-exist.jsonl.gz: cannot open"));
}
END_TEST

START_TEST(test_truncated_gzip)
{
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(FIX "truncated.jsonl.gz", true, &d, &err), -1);
    ck_assert_msg(strstr(err.msg, "truncated.jsonl.gz: truncated gzip file"), "%s", err.msg);
}
END_TEST

START_TEST(test_empty_file)
{
    char path[] = "/tmp/modpo-empty-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "\n\n", 2), 2);
    close(fd);
    HelpSteerData d;
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load(path, false, &d, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, ": no rows"));
    unlink(path);
}
END_TEST

/* Lines far longer than any buffer: 300 KB responses, gzip'd, crossing the
 * reader's 64 KB chunks at arbitrary offsets. */
START_TEST(test_long_lines)
{
    char path[] = "/tmp/modpo-long-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    const size_t big = 300000;
    char *text = malloc(big + 1);
    for (size_t i = 0; i < big; i++) text[i] = (char)('a' + i % 26);
    text[big] = '\0';
    gzFile gz = gzopen(path, "wb");
    ck_assert_ptr_nonnull(gz);
    for (int r = 0; r < 3; r++) {
        /* gzprintf is limited to its buffer size, so write the parts. */
        char head[64], tail[160];
        snprintf(head, sizeof head, "{\"prompt\": \"long %d\", \"response\": \"", r);
        snprintf(tail, sizeof tail, "\", \"helpfulness\": %d, \"correctness\": 1, \"coherence\": 2, "
                                    "\"complexity\": 3, \"verbosity\": 4}\n", r);
        gzwrite(gz, head, (unsigned)strlen(head));
        gzwrite(gz, text + r, (unsigned)(big - (size_t)r));
        gzwrite(gz, tail, (unsigned)strlen(tail));
    }
    gzclose(gz);
    HelpSteerData d;
    Error err = { "" };
    ck_assert_msg(helpsteer_load(path, false, &d, &err) == 0, "%s", err.msg);
    ck_assert_uint_eq(d.n_rows, 3);
    for (int r = 0; r < 3; r++) {
        ck_assert_uint_eq(strlen(d.rows[r].response), big - (size_t)r);
        ck_assert_int_eq(memcmp(d.rows[r].response, text + r, big - (size_t)r), 0);
        ck_assert_int_eq(d.rows[r].rating[0], r);
        ck_assert_int_eq(d.rows[r].rating[4], 4);
    }
    ck_assert_uint_eq(helpsteer_count_groups(&d), 3);
    helpsteer_free(&d);
    free(text);
    unlink(path);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("helpsteer");
    TCase *tc = tcase_create("reader");
    tcase_add_test(tc, test_plain_with_crlf_and_trailing_blanks);
    tcase_add_test(tc, test_gzip);
    tcase_add_test(tc, test_no_final_newline);
    tcase_add_test(tc, test_sample_data);
    int n_bad = (int)(sizeof BAD_CASES / sizeof BAD_CASES[0]);
    tcase_add_loop_test(tc, test_bad_case_fails, 0, n_bad);
    tcase_add_loop_test(tc, test_bad_case_skipped, 0, n_bad);
    tcase_add_test(tc, test_skip_counts_per_reason);
    tcase_add_test(tc, test_missing_file);
    tcase_add_test(tc, test_truncated_gzip);
    tcase_add_test(tc, test_empty_file);
    tcase_add_test(tc, test_long_lines);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

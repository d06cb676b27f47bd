/* The closing report: numpy-style mean/std, Python-style word counts, the
 * exact summary tables, and the trade-off SVG's structure, including the
 * degenerate ranges (one point, equal values, nothing plottable). */
#include <check.h>
#include <dirent.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report.h"

static char dir[64];

static void make_dir(void)
{
    strcpy(dir, "/tmp/modpo-report-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static int count_entries(void)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void remove_dir(void)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[512];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

static char *slurp(const char *name)
{
    static char buf[65536];
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "%s", path);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
    return n;
}

START_TEST(mean_and_population_std)
{
    const double x[] = {1, 2, 3, 4};
    ck_assert_double_eq_tol(stats_mean(x, 4), 2.5, 1e-15);
    /* np.std([1,2,3,4]) = sqrt(1.25), ddof 0 (ddof 1 would be 1.2910). */
    ck_assert_double_eq_tol(stats_std(x, 4), 1.118033988749895, 1e-15);
    const double one[] = {7.5};
    ck_assert_double_eq(stats_mean(one, 1), 7.5);
    ck_assert_double_eq(stats_std(one, 1), 0.0);
    ck_assert(isnan(stats_mean(x, 0)) && isnan(stats_std(x, 0)));
    /* Large offset: the two-pass std stays exact where E[x^2]-E[x]^2 would not. */
    const double big[] = {1e9 + 1, 1e9 + 2, 1e9 + 3};
    ck_assert_double_eq_tol(stats_std(big, 3), 0.816496580927726, 1e-9);
}
END_TEST

START_TEST(words_as_python_split)
{
    ck_assert_uint_eq(word_count(""), 0);
    ck_assert_uint_eq(word_count("   \n\t "), 0);
    ck_assert_uint_eq(word_count("hello"), 1);
    ck_assert_uint_eq(word_count("  hello   world \n"), 2);
    ck_assert_uint_eq(word_count("a\tb\nc\rd\ve\ff"), 6);
    ck_assert_uint_eq(word_count("x\x1cy\x1fz"), 3);         /* str.isspace separators */
    ck_assert_uint_eq(word_count("a\xc2\xa0" "b"), 2);       /* U+00A0 no-break space */
    ck_assert_uint_eq(word_count("a\xe3\x80\x80" "b"), 2);   /* U+3000 ideographic space */
    ck_assert_uint_eq(word_count("a\xe2\x80\x89" "b"), 2);   /* U+2009 thin space */
    ck_assert_uint_eq(word_count("a\xe2\x80\x8b" "b"), 1);   /* U+200B is not a space */
    ck_assert_uint_eq(word_count("日本語 text, more."), 3);
    ck_assert_uint_eq(word_count("bad \xff byte"), 3);       /* invalid UTF-8 is a letter */
}
END_TEST

static void fill_rows(SummaryRow rows[4])
{
    const double r0[] = {0.5, 1.5}, w0[] = {10, 20}, t0[] = {12, 30};
    const double r1[] = {-1, 1}, w1[] = {5, 5}, t1[] = {100, 300};
    const double r2[] = {2, 2}, w2[] = {1, 3}, t2[] = {200, 200};
    const double r3[] = {3}, w3[] = {4}, t3[] = {100};
    summary_row_compute(&rows[0], "sft", NAN, r0, w0, t0, 2);
    summary_row_compute(&rows[1], "modpo-w0.8", 0.8, r1, w1, t1, 2);
    summary_row_compute(&rows[2], "modpo-w0.2", 0.2, r2, w2, t2, 2);
    summary_row_compute(&rows[3], "modpo-w0.4", 0.4, r3, w3, t3, 1);
}

START_TEST(summary_rows)
{
    SummaryRow rows[4];
    fill_rows(rows);
    ck_assert_str_eq(rows[0].name, "sft");
    ck_assert(isnan(rows[0].w));
    ck_assert_uint_eq(rows[0].n, 2);
    ck_assert_double_eq(rows[0].reward_mean, 1.0);
    ck_assert_double_eq(rows[0].reward_std, 0.5);
    ck_assert_double_eq(rows[0].words_mean, 15.0);
    ck_assert_double_eq(rows[0].words_std, 5.0);
    ck_assert_double_eq(rows[0].tokens_mean, 21.0);
    ck_assert_double_eq(rows[0].tokens_std, 9.0);
    ck_assert_double_eq(rows[1].w, 0.8);
    ck_assert_double_eq(rows[1].reward_std, 1.0);
    ck_assert_double_eq(rows[1].tokens_mean, 200.0);
    char long_name[300];
    memset(long_name, 'n', sizeof long_name - 1);
    long_name[sizeof long_name - 1] = '\0';
    SummaryRow r;
    summary_row_compute(&r, long_name, 0.1, NULL, NULL, NULL, 0);
    ck_assert_uint_eq(strlen(r.name), SUMMARY_NAME_MAX - 1);
    ck_assert(isnan(r.reward_mean));
}
END_TEST

START_TEST(tables_exact_text)
{
    make_dir();
    SummaryRow rows[4];
    fill_rows(rows);
    Error err;
    char path[256];
    snprintf(path, sizeof path, "%s/summary.md", dir);
    ck_assert_int_eq(report_write_markdown(path, rows, 2, &err), 0);
    ck_assert_str_eq(slurp("summary.md"),
                     "| model | w | n | reward mean | reward std | words mean | words std "
                     "| tokens mean | tokens std |\n"
                     "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n"
                     "| sft | - | 2 | 1.0000 | 0.5000 | 15.0 | 5.0 | 21.0 | 9.0 |\n"
                     "| modpo-w0.8 | 0.8 | 2 | 0.0000 | 1.0000 | 5.0 | 0.0 | 200.0 | 100.0 |\n");
    snprintf(path, sizeof path, "%s/summary.tsv", dir);
    ck_assert_int_eq(report_write_tsv(path, rows, 2, &err), 0);
    ck_assert_str_eq(slurp("summary.tsv"),
                     "model\tw\tn\treward_mean\treward_std\twords_mean\twords_std\ttokens_mean\t"
                     "tokens_std\n"
                     "sft\tNaN\t2\t1\t0.5\t15\t5\t21\t9\n"
                     "modpo-w0.8\t0.8\t2\t0\t1\t5\t0\t200\t100\n");
    ck_assert_int_eq(count_entries(), 2);

    /* Separators inside a name cannot break a row. */
    snprintf(rows[0].name, sizeof rows[0].name, "a|b\tc");
    snprintf(path, sizeof path, "%s/summary.md", dir);
    ck_assert_int_eq(report_write_markdown(path, rows, 1, &err), 0);
    ck_assert_ptr_nonnull(strstr(slurp("summary.md"), "| a\\|b c | - |"));
    snprintf(path, sizeof path, "%s/summary.tsv", dir);
    ck_assert_int_eq(report_write_tsv(path, rows, 1, &err), 0);
    ck_assert_ptr_nonnull(strstr(slurp("summary.tsv"), "\na|b c\tNaN\t"));

    ck_assert_int_eq(report_write_tsv("/nonexistent/x/summary.tsv", rows, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/x/summary.tsv"));
    remove_dir();
}
END_TEST

START_TEST(tsv_numbers_as_python_repr)
{
    make_dir();
    SummaryRow r = {.name = "m", .w = 0.1 + 0.2, .n = 3, .reward_mean = 1.0 / 3, .reward_std = 2.5e-05,
                    .words_mean = 1e20, .words_std = 123456.789, .tokens_mean = -7, .tokens_std = 0};
    Error err;
    char path[256];
    snprintf(path, sizeof path, "%s/summary.tsv", dir);
    ck_assert_int_eq(report_write_tsv(path, &r, 1, &err), 0);
    /* Python: repr(0.1+0.2), repr(1/3), repr(2.5e-05), repr(1e20), ... */
    ck_assert_str_eq(strchr(slurp("summary.tsv"), '\n') + 1,
                     "m\t0.30000000000000004\t3\t0.3333333333333333\t2.5e-05\t1e+20\t"
                     "123456.789\t-7\t0\n");
    remove_dir();
}
END_TEST

/* A label like "-0" or "-0.00": rounding noise shown as a negative zero. */
static bool has_negative_zero_label(const char *s)
{
    for (const char *p = s; (p = strstr(p, ">-0")) != NULL; p++) {
        const char *q = p + 3;
        while (*q == '0' || *q == '.') q++;
        if (*q == '<') return true;
    }
    return false;
}

/* Structure every output must have: one XML declaration, one svg root that
 * closes last, balanced elements, no nan/inf leaked into numbers. */
static void assert_valid_svg(const char *s)
{
    const char *head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                       "<svg xmlns=\"http://www.w3.org/2000/svg\" ";
    ck_assert_msg(strncmp(s, head, strlen(head)) == 0, "%.120s", s);
    size_t len = strlen(s);
    ck_assert(len > 7 && strcmp(s + len - 7, "</svg>\n") == 0);
    ck_assert_int_eq(count(s, "<svg"), 1);
    ck_assert_int_eq(count(s, "<text"), count(s, "</text>"));
    ck_assert_int_eq(count(s, "<"), count(s, ">"));
    ck_assert_int_eq(count(s, "<") - count(s, "</") - count(s, "<?"),
                     count(s, "/>") + count(s, "</")); /* every element closed */
    ck_assert_int_eq(count(s, "nan"), 0);
    ck_assert_int_eq(count(s, "inf"), 0);
    ck_assert(!has_negative_zero_label(s));
}

/* The x coordinates of the polyline's points, in order. */
static int polyline_xs(const char *s, double *xs, int max)
{
    const char *p = strstr(s, "<polyline");
    if (!p) return 0;
    p = strstr(p, "points=\"");
    ck_assert_ptr_nonnull(p);
    p += 8;
    int n = 0, used;
    double x, y;
    while (n < max && sscanf(p, "%lf,%lf%n", &x, &y, &used) == 2) {
        xs[n++] = x;
        p += used;
    }
    return n;
}

START_TEST(svg_plot_structure)
{
    make_dir();
    SummaryRow rows[4];
    fill_rows(rows);
    Error err;
    char path[256];
    snprintf(path, sizeof path, "%s/trade-off.svg", dir);
    ck_assert_int_eq(report_write_svg(path, rows, 4, "MODPO <helpfulness> & verbosity", &err), 0);
    const char *s = slurp("trade-off.svg");
    assert_valid_svg(s);
    ck_assert_ptr_nonnull(strstr(s, ">MODPO &lt;helpfulness&gt; &amp; verbosity</text>"));
    ck_assert_int_eq(count(s, "<circle class=\"modpo\""), 3);
    ck_assert_int_eq(count(s, "<rect class=\"sft\""), 1);
    ck_assert_int_eq(count(s, ">SFT</text>"), 2); /* the point and the legend */
    ck_assert_int_eq(count(s, ">MODPO (by w)</text>"), 1);
    ck_assert_int_eq(count(s, ">w=0.2</text>"), 1);
    ck_assert_int_eq(count(s, ">w=0.4</text>"), 1);
    ck_assert_int_eq(count(s, ">w=0.8</text>"), 1);
    ck_assert_ptr_nonnull(strstr(s, ">mean response tokens</text>"));
    ck_assert_ptr_nonnull(strstr(s, "mean implicit reward"));
    ck_assert_int_ge(count(s, "class=\"tick\""), 6);
    /* Joined in w order: w 0.2 (200 tokens), 0.4 (100), 0.8 (200). */
    double xs[8];
    ck_assert_int_eq(polyline_xs(s, xs, 8), 3);
    ck_assert(xs[0] > xs[1] && xs[2] > xs[1]);
    ck_assert_double_eq_tol(xs[0], xs[2], 1e-9);
    /* Every point inside the plot frame (80..610 x, 50..420 y). */
    for (int i = 0; i < 3; i++) ck_assert(xs[i] >= 80 && xs[i] <= 610);
    remove_dir();
}
END_TEST

START_TEST(svg_degenerate_ranges)
{
    make_dir();
    Error err;
    char path[256];
    snprintf(path, sizeof path, "%s/trade-off.svg", dir);
    SummaryRow rows[3];
    const double r[] = {0.25}, w[] = {3}, t[] = {42};
    /* A single point. */
    summary_row_compute(&rows[0], "sft", NAN, r, w, t, 1);
    ck_assert_int_eq(report_write_svg(path, rows, 1, "one", &err), 0);
    const char *s = slurp("trade-off.svg");
    assert_valid_svg(s);
    ck_assert_int_eq(count(s, ">SFT</text>"), 2);
    ck_assert_int_eq(count(s, "MODPO (by w)"), 0);
    ck_assert_int_eq(count(s, "<polyline"), 0);
    /* Equal values everywhere, zero included. */
    const double z[] = {0};
    summary_row_compute(&rows[0], "a", 0.1, z, z, z, 1);
    summary_row_compute(&rows[1], "b", 0.9, z, z, z, 1);
    summary_row_compute(&rows[2], "sft", NAN, z, z, z, 1);
    ck_assert_int_eq(report_write_svg(path, rows, 3, "flat", &err), 0);
    s = slurp("trade-off.svg");
    assert_valid_svg(s);
    ck_assert_int_eq(count(s, "<circle class=\"modpo\""), 2);
    /* Nothing plottable (no generations): an empty but valid frame. */
    summary_row_compute(&rows[0], "empty", 0.5, NULL, NULL, NULL, 0);
    ck_assert_int_eq(report_write_svg(path, rows, 1, "", &err), 0);
    s = slurp("trade-off.svg");
    assert_valid_svg(s);
    ck_assert_int_eq(count(s, "<circle"), 0);
    ck_assert_int_eq(count(s, "SFT"), 0);
    ck_assert_int_eq(report_write_svg(path, NULL, 0, NULL, &err), 0);
    assert_valid_svg(slurp("trade-off.svg"));
    ck_assert_int_eq(count_entries(), 1);
    remove_dir();
}
END_TEST

START_TEST(write_all_three)
{
    make_dir();
    SummaryRow rows[4];
    fill_rows(rows);
    Error err;
    ck_assert_msg(report_write_all(dir, rows, 4, "trade-off", &err) == 0, "%s", err.msg);
    ck_assert_int_eq(count_entries(), 3);
    ck_assert_int_eq(count(slurp("summary.md"), "\n"), 6);
    ck_assert_int_eq(count(slurp("summary.tsv"), "\n"), 5);
    assert_valid_svg(slurp("trade-off.svg"));
    remove_dir();
    ck_assert_int_eq(report_write_all("/nonexistent/report", rows, 4, "t", &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/report/summary.md"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("report");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, mean_and_population_std);
    tcase_add_test(tc, words_as_python_split);
    tcase_add_test(tc, summary_rows);
    tcase_add_test(tc, tables_exact_text);
    tcase_add_test(tc, tsv_numbers_as_python_repr);
    tcase_add_test(tc, svg_plot_structure);
    tcase_add_test(tc, svg_degenerate_ranges);
    tcase_add_test(tc, write_all_three);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

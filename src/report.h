/* The pipeline's closing report: per-model statistics of the scored
 * generations, the summary table (summary.md, summary.tsv) and the
 * trade-off plot (trade-off.svg).
 *
 * Statistics are numpy's defaults, as the seed prints them: the mean, and the
 * POPULATION standard deviation (ddof = 0, np.std's default), both computed
 * in double with two passes.  An empty array gives NaN for both (numpy warns
 * and returns nan).  Word counts are len(text.split()) in Python: runs of
 * Unicode whitespace (str.isspace, which includes U+00A0, U+2000..U+200A,
 * U+3000 and the ASCII separators 0x1C..0x1F) separate words. */
#ifndef MODPO_REPORT_H
#define MODPO_REPORT_H

#include <stddef.h>

#include "error.h"

double stats_mean(const double *x, size_t n);
double stats_std(const double *x, size_t n); /* population (ddof 0) */
size_t word_count(const char *utf8);

#define SUMMARY_NAME_MAX 128

/* One model's line of the summary.  w is the MODPO weight, NaN for the SFT
 * model (which the plot marks separately). */
typedef struct {
    char name[SUMMARY_NAME_MAX];
    double w;
    size_t n;
    double reward_mean, reward_std;
    double words_mean, words_std;
    double tokens_mean, tokens_std;
} SummaryRow;

/* Fills row from per-generation values (each array n long): implicit reward,
 * response words, response tokens.  name is truncated to fit. */
void summary_row_compute(SummaryRow *row, const char *name, double w, const double *reward,
                         const double *words, const double *tokens, size_t n);

/* Each written atomically (temporary file, fsync, rename) in row order:
 * Markdown with rounded numbers for reading, TSV with full precision
 * ("NaN" for the SFT row's w) for tools. */
int report_write_markdown(const char *path, const SummaryRow *rows, size_t n, Error *err);
int report_write_tsv(const char *path, const SummaryRow *rows, size_t n, Error *err);

/* The trade-off plot as a standalone SVG: x = mean response tokens, y = mean
 * implicit reward; MODPO rows (finite w) as circles joined in increasing w,
 * each labelled "w=<w>"; a row with NaN w (the SFT model) as a square
 * labelled "SFT".  Rows with a non-finite mean are left out.  One point
 * or equal values still give a proper axis range. */
int report_write_svg(const char *path, const SummaryRow *rows, size_t n, const char *title,
                     Error *err);

/* summary.md, summary.tsv and trade-off.svg under dir. */
int report_write_all(const char *dir, const SummaryRow *rows, size_t n, const char *title,
                     Error *err);

#endif

#include "report.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"

/* ---- statistics ---------------------------------------------------------- */

double stats_mean(const double *x, size_t n)
{
    if (n == 0) return NAN;
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i];
    return s / (double)n;
}

double stats_std(const double *x, size_t n)
{
    /* Two passes, as numpy: sqrt(mean((x - mean)^2)); no cancellation. */
    if (n == 0) return NAN;
    double m = stats_mean(x, n), s = 0;
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return sqrt(s / (double)n);
}

/* Decodes one UTF-8 character at s (advancing *len bytes); an invalid byte
 * decodes as itself, one byte long, so counting never stalls. */
static uint32_t utf8_next(const unsigned char *s, size_t *len)
{
    int extra = s[0] >= 0xF0 ? 3 : s[0] >= 0xE0 ? 2 : s[0] >= 0xC0 ? 1 : 0;
    uint32_t c = extra ? s[0] & (0x3F >> extra) : s[0];
    for (int i = 1; i <= extra; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *len = 1;
            return s[0];
        }
        c = (c << 6) | (s[i] & 0x3F);
    }
    *len = (size_t)extra + 1;
    return c;
}

/* Python's str.isspace(). */
static bool is_py_space(uint32_t c)
{
    if (c == ' ' || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return true;
    if (c < 0x80) return false;
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

size_t word_count(const char *utf8)
{
    size_t words = 0, len;
    bool in_word = false;
    for (const unsigned char *p = (const unsigned char *)utf8; *p; p += len) {
        bool space = is_py_space(utf8_next(p, &len));
        if (!space && !in_word) words++;
        in_word = !space;
    }
    return words;
}

void summary_row_compute(SummaryRow *row, const char *name, double w, const double *reward,
                         const double *words, const double *tokens, size_t n)
{
    snprintf(row->name, sizeof row->name, "%s", name);
    row->w = w;
    row->n = n;
    row->reward_mean = stats_mean(reward, n);
    row->reward_std = stats_std(reward, n);
    row->words_mean = stats_mean(words, n);
    row->words_std = stats_std(words, n);
    row->tokens_mean = stats_mean(tokens, n);
    row->tokens_std = stats_std(tokens, n);
}

/* ---- text buffer ---------------------------------------------------------- */

typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} Buf;

static void buf_printf(Buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void buf_printf(Buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (b->len + (size_t)n + 1 > b->cap) {
        size_t cap = (b->len + (size_t)n + 1) * 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p, b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Hands the text to fs_write_atomic (a reader never sees half a table) and
 * frees it. */
static int buf_write(Buf *b, const char *path, Error *err)
{
    int rc = b->oom ? error_set(err, "out of memory formatting %s", path)
                    : fs_write_atomic(path, b->p ? b->p : "", b->len, err);
    free(b->p);
    return rc;
}

/* ---- tables -------------------------------------------------------------- */

/* A name safe in one table cell: "|" escaped for Markdown, tabs and
 * newlines flattened for TSV. */
static void buf_cell(Buf *b, const char *s, bool markdown)
{
    for (; *s; s++) {
        if (*s == '\t' || *s == '\n' || *s == '\r') buf_printf(b, " ");
        else if (markdown && *s == '|') buf_printf(b, "\\|");
        else buf_printf(b, "%c", *s);
    }
}

int report_write_markdown(const char *path, const SummaryRow *rows, size_t n, Error *err)
{
    Buf b = {0};
    buf_printf(&b, "| model | w | n | reward mean | reward std | words mean | words std "
                   "| tokens mean | tokens std |\n"
                   "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (size_t i = 0; i < n; i++) {
        const SummaryRow *r = &rows[i];
        buf_printf(&b, "| ");
        buf_cell(&b, r->name, true);
        if (isnan(r->w)) buf_printf(&b, " | - ");
        else buf_printf(&b, " | %g ", r->w);
        buf_printf(&b, "| %zu | %.4f | %.4f | %.1f | %.1f | %.1f | %.1f |\n", r->n, r->reward_mean,
                   r->reward_std, r->words_mean, r->words_std, r->tokens_mean, r->tokens_std);
    }
    return buf_write(&b, path, err);
}

/* The shortest text that reads back as the same double (Python's repr,
 * less its ".0" on whole numbers); "NaN" for NaN, as pandas reads it. */
static void buf_number(Buf *b, double v)
{
    if (isnan(v)) {
        buf_printf(b, "NaN");
        return;
    }
    char text[40];
    int prec = 1;
    for (; prec < 17; prec++) {
        snprintf(text, sizeof text, "%.*g", prec, v);
        if (strtod(text, NULL) == v) break;
    }
    /* Enough digits for the integer part, so 200 is "200" and not "2e+02"
     * (Python switches to exponents only from 1e16). */
    double a = fabs(v);
    if (a >= 1 && a < 1e16) {
        int int_digits = (int)floor(log10(a)) + 1;
        if (int_digits > prec) prec = int_digits;
    }
    snprintf(text, sizeof text, "%.*g", prec, v);
    buf_printf(b, "%s", text);
}

int report_write_tsv(const char *path, const SummaryRow *rows, size_t n, Error *err)
{
    Buf b = {0};
    buf_printf(&b, "model\tw\tn\treward_mean\treward_std\twords_mean\twords_std\ttokens_mean\t"
                   "tokens_std\n");
    for (size_t i = 0; i < n; i++) {
        const SummaryRow *r = &rows[i];
        const double v[6] = {r->reward_mean, r->reward_std, r->words_mean,
                             r->words_std,   r->tokens_mean, r->tokens_std};
        buf_cell(&b, r->name, false);
        buf_printf(&b, "\t");
        buf_number(&b, r->w);
        buf_printf(&b, "\t%zu", r->n);
        for (int k = 0; k < 6; k++) {
            buf_printf(&b, "\t");
            buf_number(&b, v[k]);
        }
        buf_printf(&b, "\n");
    }
    return buf_write(&b, path, err);
}

/* ---- plot ---------------------------------------------------------------- */

enum { SVG_W = 640, SVG_H = 480, PAD_L = 80, PAD_R = 30, PAD_T = 50, PAD_B = 60 };

typedef struct {
    double lo, hi, step;
    int decimals; /* for tick labels */
} Axis;

/* A range from lo..hi with round ticks (1, 2 or 5 times a power of ten,
 * about five of them).  A single value gets a range around it, so the
 * scale never divides by zero. */
static Axis axis_for(double lo, double hi)
{
    Axis a;
    if (!(hi > lo)) {
        double pad = fabs(lo) > 1e-12 ? fabs(lo) * 0.1 : 1.0;
        lo -= pad, hi += pad;
    } else {
        double pad = (hi - lo) * 0.05; /* keep points off the frame */
        lo -= pad, hi += pad;
    }
    double raw = (hi - lo) / 5, mag = pow(10, floor(log10(raw))), f = raw / mag;
    a.step = (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * mag;
    a.lo = floor(lo / a.step) * a.step;
    a.hi = ceil(hi / a.step) * a.step;
    int d = -(int)floor(log10(a.step) + 1e-9);
    a.decimals = d > 0 ? d : 0;
    return a;
}

/* The i-th tick value; snaps rounding noise at zero so no "-0.0" label. */
static double tick(const Axis *a, int i)
{
    double v = a->lo + i * a->step;
    return fabs(v) < a->step * 1e-6 ? 0.0 : v;
}

static double scale(const Axis *a, double v, double from, double to)
{
    return from + (v - a->lo) / (a->hi - a->lo) * (to - from);
}

static void buf_xml_text(Buf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': buf_printf(b, "&amp;"); break;
        case '<': buf_printf(b, "&lt;"); break;
        case '>': buf_printf(b, "&gt;"); break;
        case '"': buf_printf(b, "&quot;"); break;
        default: buf_printf(b, "%c", *s);
        }
    }
}

static bool plottable(const SummaryRow *r)
{
    return isfinite(r->tokens_mean) && isfinite(r->reward_mean);
}

static void svg_axes(Buf *b, const Axis *x, const Axis *y)
{
    const int x0 = PAD_L, x1 = SVG_W - PAD_R, y0 = SVG_H - PAD_B, y1 = PAD_T;
    buf_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"none\" "
                  "stroke=\"#444\"/>\n", x0, y1, x1 - x0, y0 - y1);
    for (int i = 0; i <= 40; i++) {
        double v = tick(x, i);
        if (v > x->hi + x->step * 1e-6) break;
        double px = scale(x, v, x0, x1);
        buf_printf(b, "<line class=\"tick\" x1=\"%.2f\" y1=\"%d\" x2=\"%.2f\" y2=\"%d\" stroke=\"#444\"/>"
                      "<text x=\"%.2f\" y=\"%d\" text-anchor=\"middle\">%.*f</text>\n",
                   px, y0, px, y0 + 5, px, y0 + 20, x->decimals, v);
    }
    for (int i = 0; i <= 40; i++) {
        double v = tick(y, i);
        if (v > y->hi + y->step * 1e-6) break;
        double py = scale(y, v, y0, y1);
        buf_printf(b, "<line class=\"tick\" x1=\"%d\" y1=\"%.2f\" x2=\"%d\" y2=\"%.2f\" stroke=\"#444\"/>"
                      "<text x=\"%d\" y=\"%.2f\" text-anchor=\"end\">%.*f</text>\n",
                   x0 - 5, py, x0, py, x0 - 8, py + 4, y->decimals, v);
    }
    buf_printf(b, "<text x=\"%d\" y=\"%d\" text-anchor=\"middle\">mean response tokens</text>\n",
               (x0 + x1) / 2, SVG_H - 15);
    buf_printf(b, "<text x=\"20\" y=\"%d\" text-anchor=\"middle\" transform=\"rotate(-90 20 %d)\">"
                  "mean implicit reward (margin adapter)</text>\n",
               (y0 + y1) / 2, (y0 + y1) / 2);
}

/* A key for the marker kinds present. */
static void svg_legend(Buf *b, bool modpo, bool sft)
{
    const int lx = SVG_W - PAD_R - 150, ly = PAD_T + 15;
    if (modpo)
        buf_printf(b, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"#1f77b4\"/>"
                      "<text x=\"%d\" y=\"%d\">MODPO (by w)</text>\n",
                   lx, ly, lx + 10, ly + 4);
    if (sft)
        buf_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"9\" height=\"9\" fill=\"#d62728\"/>"
                      "<text x=\"%d\" y=\"%d\">SFT</text>\n",
                   lx + 100 - 4.5, ly - 4.5, lx + 110, ly + 4);
}

static int by_w(const void *a, const void *b)
{
    const SummaryRow *x = *(const SummaryRow *const *)a, *y = *(const SummaryRow *const *)b;
    return (x->w > y->w) - (x->w < y->w);
}

/* MODPO rows joined in increasing w, then every point with its label. */
static void svg_points(Buf *b, const SummaryRow **modpo, size_t n_modpo, const SummaryRow **sft,
                       size_t n_sft, const Axis *x, const Axis *y)
{
    const int x0 = PAD_L, x1 = SVG_W - PAD_R, y0 = SVG_H - PAD_B, y1 = PAD_T;
    if (n_modpo > 1) {
        buf_printf(b, "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"");
        for (size_t i = 0; i < n_modpo; i++)
            buf_printf(b, "%s%.2f,%.2f", i ? " " : "", scale(x, modpo[i]->tokens_mean, x0, x1),
                       scale(y, modpo[i]->reward_mean, y0, y1));
        buf_printf(b, "\"/>\n");
    }
    for (size_t i = 0; i < n_modpo; i++) {
        double px = scale(x, modpo[i]->tokens_mean, x0, x1);
        double py = scale(y, modpo[i]->reward_mean, y0, y1);
        buf_printf(b, "<circle class=\"modpo\" cx=\"%.2f\" cy=\"%.2f\" r=\"4\" fill=\"#1f77b4\"/>"
                      "<text x=\"%.2f\" y=\"%.2f\">w=%g</text>\n",
                   px, py, px + 7, py - 7, modpo[i]->w);
    }
    for (size_t i = 0; i < n_sft; i++) {
        double px = scale(x, sft[i]->tokens_mean, x0, x1);
        double py = scale(y, sft[i]->reward_mean, y0, y1);
        buf_printf(b, "<rect class=\"sft\" x=\"%.2f\" y=\"%.2f\" width=\"9\" height=\"9\" "
                      "fill=\"#d62728\"/><text x=\"%.2f\" y=\"%.2f\">SFT</text>\n",
                   px - 4.5, py - 4.5, px + 8, py - 8);
    }
}

int report_write_svg(const char *path, const SummaryRow *rows, size_t n, const char *title,
                     Error *err)
{
    const SummaryRow **modpo = malloc((n ? n : 1) * sizeof *modpo);
    const SummaryRow **sft = malloc((n ? n : 1) * sizeof *sft);
    if (!modpo || !sft) {
        free(modpo), free(sft);
        return error_set(err, "out of memory for the plot");
    }
    size_t n_modpo = 0, n_sft = 0;
    double xlo = INFINITY, xhi = -INFINITY, ylo = INFINITY, yhi = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (!plottable(&rows[i])) continue;
        if (isnan(rows[i].w)) sft[n_sft++] = &rows[i];
        else modpo[n_modpo++] = &rows[i];
        xlo = fmin(xlo, rows[i].tokens_mean), xhi = fmax(xhi, rows[i].tokens_mean);
        ylo = fmin(ylo, rows[i].reward_mean), yhi = fmax(yhi, rows[i].reward_mean);
    }
    if (n_modpo + n_sft == 0) xlo = ylo = 0, xhi = yhi = 1; /* empty frame, still valid */
    qsort(modpo, n_modpo, sizeof *modpo, by_w);
    Axis x = axis_for(xlo, xhi), y = axis_for(ylo, yhi);

    Buf b = {0};
    buf_printf(&b, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                   "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                   "viewBox=\"0 0 %d %d\" font-family=\"sans-serif\" font-size=\"12\">\n"
                   "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
               SVG_W, SVG_H, SVG_W, SVG_H);
    buf_printf(&b, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">",
               SVG_W / 2);
    buf_xml_text(&b, title ? title : "");
    buf_printf(&b, "</text>\n");
    svg_axes(&b, &x, &y);
    svg_legend(&b, n_modpo > 0, n_sft > 0);
    svg_points(&b, modpo, n_modpo, sft, n_sft, &x, &y);
    buf_printf(&b, "</svg>\n");
    free(modpo);
    free(sft);
    return buf_write(&b, path, err);
}

int report_write_all(const char *dir, const SummaryRow *rows, size_t n, const char *title,
                     Error *err)
{
    static const char *const names[3] = {"summary.md", "summary.tsv", "trade-off.svg"};
    for (int k = 0; k < 3; k++) {
        char path[PATH_MAX];
        int len = snprintf(path, sizeof path, "%s/%s", dir, names[k]);
        if (len < 0 || (size_t)len >= sizeof path) return error_set(err, "path under %s too long", dir);
        int rc = k == 0   ? report_write_markdown(path, rows, n, err)
                 : k == 1 ? report_write_tsv(path, rows, n, err)
                          : report_write_svg(path, rows, n, title, err);
        if (rc) return error_prefix(err, "writing %s: ", path);
    }
    return 0;
}

#include "helpsteer.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "utf8.h"

static const char *const RATING_NAMES[HS_N_RATINGS] = {
    "helpfulness", "correctness", "coherence", "complexity", "verbosity",
};

static const char *const BAD_NAMES[HS_BAD_N] = {
    "malformed JSON", "missing field", "wrong type", "rating outside 0-4",
    "invalid UTF-8", "empty prompt or response",
};

const char *helpsteer_rating_name(int i)
{
    return (i >= 0 && i < HS_N_RATINGS) ? RATING_NAMES[i] : "?";
}

const char *helpsteer_bad_reason_name(HelpSteerBadReason reason)
{
    return ((int)reason >= 0 && reason < HS_BAD_N) ? BAD_NAMES[reason] : "?";
}

/* Which field holds byte `bad` of a JSON object line?  jansson refuses
 * invalid UTF-8 outright, so to name the field we scan the raw bytes: track
 * string literals and remember the last one followed by ':' (a key). */
static void field_at_offset(const char *line, size_t len, size_t bad, char *field, size_t size)
{
    size_t key_b = 0, key_e = 0;
    bool have_key = false;
    size_t i = 0;
    while (i < len) {
        if (line[i] != '"') { i++; continue; }
        size_t b = ++i;
        while (i < len && line[i] != '"') i += (line[i] == '\\') ? 2 : 1;
        size_t e = i < len ? i : len;
        i = e + 1;
        size_t j = i;
        while (j < len && (line[j] == ' ' || line[j] == '\t')) j++;
        bool is_key = j < len && line[j] == ':';
        if (bad >= b && bad < e) {
            if (is_key) snprintf(field, size, "a field name");
            else if (have_key) snprintf(field, size, "field \"%.*s\"", (int)(key_e - key_b), line + key_b);
            else snprintf(field, size, "a string");
            return;
        }
        if (is_key) { key_b = b; key_e = e; have_key = true; }
    }
    snprintf(field, size, "the line");
}

/* ---- lines from a gzip or plain file ---------------------------------- */

enum { CHUNK = 1 << 16 };

typedef struct {
    gzFile f;
    const char *path;
    char *chunk;
    size_t chunk_len, chunk_pos;
    bool eof;
    char *line; /* the current line, NUL-terminated, without "\n" or "\r\n" */
    size_t len, cap;
} LineReader;

static int reader_append(LineReader *lr, const char *p, size_t n, Error *err)
{
    if (lr->len + n + 1 > lr->cap) {
        size_t cap = lr->cap ? lr->cap : 4096;
        while (cap < lr->len + n + 1) cap *= 2;
        char *grown = realloc(lr->line, cap);
        if (!grown) return error_set(err, "%s: out of memory for a %zu-byte line", lr->path, lr->len + n);
        lr->line = grown;
        lr->cap = cap;
    }
    memcpy(lr->line + lr->len, p, n);
    lr->len += n;
    lr->line[lr->len] = '\0';
    return 0;
}

/* gzread (not gzgets) so that a NUL byte cannot silently cut a line short. */
static int reader_fill(LineReader *lr, Error *err)
{
    int n = gzread(lr->f, lr->chunk, CHUNK);
    int code = Z_OK;
    const char *msg = gzerror(lr->f, &code);
    if (n < 0 || (code != Z_OK && code != Z_BUF_ERROR))
        return error_set(err, "%s: read error: %s", lr->path, msg);
    if (n == 0) {
        /* Z_BUF_ERROR at the end means the gzip stream stopped early. */
        if (code == Z_BUF_ERROR)
            return error_set(err, "%s: truncated gzip file: %s", lr->path, msg);
        lr->eof = true;
    }
    lr->chunk_len = (size_t)n;
    lr->chunk_pos = 0;
    return 0;
}

/* Returns 1 with the next line in lr->line, 0 at end of file, -1 on error. */
static int reader_next(LineReader *lr, Error *err)
{
    lr->len = 0;
    bool any = false;
    for (;;) {
        if (lr->chunk_pos == lr->chunk_len) {
            if (lr->eof) break;
            if (reader_fill(lr, err)) return -1;
            continue;
        }
        const char *p = lr->chunk + lr->chunk_pos;
        size_t left = lr->chunk_len - lr->chunk_pos;
        const char *nl = memchr(p, '\n', left);
        size_t take = nl ? (size_t)(nl - p) : left;
        if (reader_append(lr, p, take, err)) return -1;
        any = true;
        lr->chunk_pos += take + (nl ? 1 : 0);
        if (nl) break;
    }
    if (!any) return 0;
    if (lr->len > 0 && lr->line[lr->len - 1] == '\r') lr->line[--lr->len] = '\0';
    return 1;
}

static int reader_open(LineReader *lr, const char *path, Error *err)
{
    memset(lr, 0, sizeof *lr);
    lr->path = path;
    errno = 0;
    lr->f = gzopen(path, "rb");
    if (!lr->f) {
        if (errno) return error_set_errno(err, "%s: cannot open", path);
        return error_set(err, "%s: cannot open (out of memory)", path);
    }
    gzbuffer(lr->f, CHUNK);
    lr->chunk = malloc(CHUNK);
    if (!lr->chunk) {
        gzclose(lr->f);
        return error_set(err, "%s: out of memory", path);
    }
    return 0;
}

static void reader_close(LineReader *lr)
{
    if (lr->f) gzclose(lr->f);
    free(lr->chunk);
    free(lr->line);
}

/* ---- one row ------------------------------------------------------------ */

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE: case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "?";
}

/* A row problem: its reason plus a message without the FILE:LINE prefix. */
typedef struct {
    HelpSteerBadReason reason;
    char msg[512];
} RowProblem;

static int problem(RowProblem *p, HelpSteerBadReason reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int problem(RowProblem *p, HelpSteerBadReason reason, const char *fmt, ...)
{
    p->reason = reason;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->msg, sizeof p->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int get_text(json_t *obj, const char *key, const char **text, RowProblem *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return problem(p, HS_BAD_MISSING, "missing field \"%s\"", key);
    if (!json_is_string(v))
        return problem(p, HS_BAD_TYPE, "field \"%s\" must be a string, got %s", key, json_type_name(v));
    if (json_string_length(v) == 0) return problem(p, HS_BAD_EMPTY, "field \"%s\" is empty", key);
    *text = json_string_value(v);
    return 0;
}

static int get_rating(json_t *obj, const char *key, int *rating, RowProblem *p)
{
    json_t *v = json_object_get(obj, key);
    if (!v) return problem(p, HS_BAD_MISSING, "missing field \"%s\"", key);
    if (!json_is_integer(v))
        return problem(p, HS_BAD_TYPE, "field \"%s\" must be an integer %d-%d, got %s", key,
                       HS_RATING_MIN, HS_RATING_MAX, json_type_name(v));
    json_int_t r = json_integer_value(v);
    if (r < HS_RATING_MIN || r > HS_RATING_MAX)
        return problem(p, HS_BAD_RANGE, "field \"%s\" is %lld, outside %d-%d", key, (long long)r,
                       HS_RATING_MIN, HS_RATING_MAX);
    *rating = (int)r;
    return 0;
}

static int check_utf8(const char *line, size_t len, RowProblem *p)
{
    size_t bad = 0;
    if (utf8_validate(line, len, &bad) == 0) return 0;
    char field[160];
    field_at_offset(line, len, bad, field, sizeof field);
    return problem(p, HS_BAD_UTF8, "invalid UTF-8 in %s (byte 0x%02x at column %zu)", field,
                   (unsigned char)line[bad], bad + 1);
}

/* Parses one line into *row (the prompt/response texts are copied; the
 * prompt is shared with `prev` when equal). */
static int parse_row(const char *line, size_t len, const HelpSteerRow *prev, HelpSteerRow *row,
                     RowProblem *p)
{
    if (check_utf8(line, len, p)) return -1;
    json_error_t jerr;
    json_t *obj = json_loadb(line, len, 0, &jerr);
    if (!obj) return problem(p, HS_BAD_JSON, "malformed JSON at column %d: %s", jerr.column, jerr.text);
    int rc = -1;
    const char *prompt = NULL, *response = NULL;
    if (!json_is_object(obj)) {
        problem(p, HS_BAD_JSON, "malformed row: expected a JSON object, got %s", json_type_name(obj));
        goto done;
    }
    if (get_text(obj, "prompt", &prompt, p) || get_text(obj, "response", &response, p)) goto done;
    for (int i = 0; i < HS_N_RATINGS; i++)
        if (get_rating(obj, RATING_NAMES[i], &row->rating[i], p)) goto done;
    row->prompt = (prev && strcmp(prev->prompt, prompt) == 0) ? prev->prompt : strdup(prompt);
    row->response = strdup(response);
    if (!row->prompt || !row->response) {
        if (row->prompt && row->prompt != (prev ? prev->prompt : NULL)) free(row->prompt);
        free(row->response);
        problem(p, HS_BAD_N, "out of memory");
        goto done;
    }
    rc = 0;
done:
    json_decref(obj);
    return rc;
}

/* ---- the file ---------------------------------------------------------- */

static bool is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r') return false;
    return true;
}

static int push_row(HelpSteerData *d, size_t *cap, const HelpSteerRow *row, const char *path, Error *err)
{
    if (d->n_rows == *cap) {
        size_t n = *cap ? *cap * 2 : 1024;
        HelpSteerRow *grown = realloc(d->rows, n * sizeof *grown);
        if (!grown) return error_set(err, "%s: out of memory after %zu rows", path, d->n_rows);
        d->rows = grown;
        *cap = n;
    }
    d->rows[d->n_rows++] = *row;
    return 0;
}

/* A bad row: fail, or count it and remember the first message per reason. */
static int bad_row(HelpSteerData *d, bool skip, const char *path, size_t line, const RowProblem *p,
                   Error *err)
{
    /* HS_BAD_N marks a failure that is not the row's fault (memory). */
    if (!skip || p->reason == HS_BAD_N) return error_set(err, "%s:%zu: %s", path, line, p->msg);
    if (d->bad[p->reason]++ == 0) {
        /* Kept short on purpose: it is a hint for the report, not the error. */
        Error full;
        error_set(&full, "%s:%zu: %s", path, line, p->msg);
        char *dst = d->first_bad[p->reason];
        size_t n = strlen(full.msg), cap = sizeof d->first_bad[p->reason] - 1;
        memcpy(dst, full.msg, n < cap ? n : cap);
        dst[n < cap ? n : cap] = '\0';
    }
    d->n_bad++;
    return 0;
}

static int load_lines(LineReader *lr, bool skip, HelpSteerData *d, Error *err)
{
    size_t cap = 0, line_no = 0, pending_blank = 0;
    int got;
    while ((got = reader_next(lr, err)) == 1) {
        line_no++;
        if (is_blank(lr->line, lr->len)) {
            if (!pending_blank) pending_blank = line_no;
            continue;
        }
        /* Blank lines are only fine at the end of the file. */
        for (; pending_blank && pending_blank < line_no; pending_blank++) {
            RowProblem p;
            problem(&p, HS_BAD_JSON, "malformed line: blank line inside the file");
            if (bad_row(d, skip, lr->path, pending_blank, &p, err)) return -1;
        }
        pending_blank = 0;
        HelpSteerRow row = { .line = line_no };
        RowProblem p;
        const HelpSteerRow *prev = d->n_rows ? &d->rows[d->n_rows - 1] : NULL;
        if (parse_row(lr->line, lr->len, prev, &row, &p)) {
            if (bad_row(d, skip, lr->path, line_no, &p, err)) return -1;
            continue;
        }
        if (push_row(d, &cap, &row, lr->path, err)) {
            if (!prev || row.prompt != prev->prompt) free(row.prompt);
            free(row.response);
            return -1;
        }
    }
    return got;
}

int helpsteer_load(const char *path, bool skip_bad_rows, HelpSteerData *out, Error *err)
{
    memset(out, 0, sizeof *out);
    LineReader lr;
    if (reader_open(&lr, path, err)) return -1;
    HelpSteerData d;
    memset(&d, 0, sizeof d);
    int rc = load_lines(&lr, skip_bad_rows, &d, err);
    reader_close(&lr);
    if (rc == 0 && d.n_rows == 0) {
        rc = d.n_bad ? error_set(err, "%s: no valid rows (%zu bad rows skipped)", path, d.n_bad)
                     : error_set(err, "%s: no rows", path);
    }
    if (rc) {
        helpsteer_free(&d);
        return -1;
    }
    *out = d;
    return 0;
}

void helpsteer_free(HelpSteerData *data)
{
    for (size_t i = 0; i < data->n_rows; i++) {
        if (i == 0 || data->rows[i].prompt != data->rows[i - 1].prompt) free(data->rows[i].prompt);
        free(data->rows[i].response);
    }
    free(data->rows);
    memset(data, 0, sizeof *data);
}

/* ---- groups ------------------------------------------------------------- */

size_t helpsteer_group_end(const HelpSteerData *data, size_t start)
{
    const HelpSteerRow *r = data->rows;
    size_t end = start + 1;
    while (end < data->n_rows &&
           (r[end].prompt == r[start].prompt || strcmp(r[end].prompt, r[start].prompt) == 0))
        end++;
    return end;
}

size_t helpsteer_count_groups(const HelpSteerData *data)
{
    size_t n = 0;
    for (size_t i = 0; i < data->n_rows; i = helpsteer_group_end(data, i)) n++;
    return n;
}

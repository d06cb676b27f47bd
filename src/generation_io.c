#include "generation_io.h"

#include <ctype.h>
#include <dirent.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_util.h"

#define MAX_WORLD 99999

/* The four text fields, in the order the seed writes them. */
static const char *const FIELDS[4] = {"raw_prompt", "prompt", "response", "prompt_response"};

/* ---- records ------------------------------------------------------------- */

const char *gen_pick_response(const char *decoded_prompt, const char *decoded_full,
                              const char *decoded_response_only, bool *had_prefix_match)
{
    size_t n = strlen(decoded_prompt);
    *had_prefix_match = strncmp(decoded_full, decoded_prompt, n) == 0;
    return *had_prefix_match ? decoded_full + n : decoded_response_only;
}

/* Copies the four texts (in FIELDS order) into r. */
static int record_fill(GenRecord *r, const char *const text[4], bool flag, Error *err)
{
    char **dst[4] = {&r->raw_prompt, &r->prompt, &r->response, &r->prompt_response};
    memset(r, 0, sizeof *r);
    for (int k = 0; k < 4; k++) {
        size_t n = strlen(text[k]) + 1;
        *dst[k] = malloc(n);
        if (!*dst[k]) {
            gen_record_free(r);
            return error_set(err, "out of memory for a generation record");
        }
        memcpy(*dst[k], text[k], n);
    }
    r->response_had_prompt_prefix_match = flag;
    return 0;
}

int gen_record_init(GenRecord *r, const char *raw_prompt, const char *prompt,
                    const char *response, bool had_prefix_match, Error *err)
{
    size_t lp = strlen(prompt), lr = strlen(response);
    char *joined = malloc(lp + lr + 1);
    if (!joined) {
        memset(r, 0, sizeof *r);
        return error_set(err, "out of memory for a generation record");
    }
    memcpy(joined, prompt, lp);
    memcpy(joined + lp, response, lr + 1);
    const char *text[4] = {raw_prompt, prompt, response, joined};
    int rc = record_fill(r, text, had_prefix_match, err);
    free(joined);
    return rc;
}

void gen_record_free(GenRecord *r)
{
    free(r->raw_prompt);
    free(r->prompt);
    free(r->response);
    free(r->prompt_response);
    memset(r, 0, sizeof *r);
}

/* ---- writing ------------------------------------------------------------- */

int gen_shard_path(char *buf, size_t size, const char *dir, int rank, int world, Error *err)
{
    if (world < 1 || world > MAX_WORLD || rank < 0 || rank >= world)
        return error_set(err, "no shard file for rank %d of %d (world must be 1..%d)", rank, world,
                         MAX_WORLD);
    int n = snprintf(buf, size, "%s/%05d-of-%05d.jsonl", dir, rank, world);
    if (n < 0 || (size_t)n >= size) return error_set(err, "shard path under %s too long", dir);
    return 0;
}

static const char *field_text(const GenRecord *r, int k)
{
    const char *v[4] = {r->raw_prompt, r->prompt, r->response, r->prompt_response};
    return v[k];
}

static json_t *record_to_json(const GenRecord *r, size_t index, Error *err)
{
    json_t *o = json_object();
    if (!o) {
        error_set(err, "out of memory");
        return NULL;
    }
    for (int k = 0; k < 4; k++) {
        const char *s = field_text(r, k);
        json_t *v = s ? json_string(s) : NULL;
        if (!v) {
            json_decref(o);
            error_set(err, "record %zu: %s is %s", index, FIELDS[k],
                      s ? "not valid UTF-8" : "missing");
            return NULL;
        }
        json_object_set_new(o, FIELDS[k], v);
    }
    json_object_set_new(o, "response_had_prompt_prefix_match",
                        json_boolean(r->response_had_prompt_prefix_match));
    return o;
}

static int write_records(FILE *f, const GenRecord *records, size_t n, Error *err)
{
    for (size_t i = 0; i < n; i++) {
        json_t *o = record_to_json(&records[i], i, err);
        if (!o) return -1;
        /* Insertion order and json.dumps' ", " / ": " separators. */
        int rc = json_dumpf(o, f, JSON_PRESERVE_ORDER);
        json_decref(o);
        if (rc != 0 || fputc('\n', f) == EOF) return error_set_errno(err, "writing record %zu", i);
    }
    return 0;
}

int gen_write_shard(const char *dir, int rank, int world, const GenRecord *records, size_t n,
                    Error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (gen_shard_path(path, sizeof path, dir, rank, world, err) ||
        fs_tmp_name(tmp, sizeof tmp, path, err))
        return -1;
    /* Streamed to the temporary name (a shard can be megabytes), then
     * published by fs_publish: fsync, rename, fsync of the directory. */
    FILE *f = fopen(tmp, "wb");
    if (!f) return error_set_errno(err, "creating %s", tmp);
    int rc = write_records(f, records, n, err);
    if (rc == 0 && fflush(f) != 0) rc = error_set_errno(err, "writing %s", tmp);
    if (fclose(f) != 0 && rc == 0) rc = error_set_errno(err, "closing %s", tmp);
    if (rc != 0) unlink(tmp);
    if (rc == 0) rc = fs_publish(tmp, path, err);
    return rc ? error_prefix(err, "writing %s: ", path) : 0;
}

/* ---- reading ------------------------------------------------------------- */

/* Parses "NNNNN-of-MMMMM.jsonl"; 0 when name is not a shard file. */
static int parse_shard_name(const char *name, int *rank, int *world)
{
    if (strlen(name) != 20 || strcmp(name + 14, ".jsonl") != 0 || strncmp(name + 5, "-of-", 4) != 0)
        return 0;
    for (int i = 0; i < 5; i++)
        if (!isdigit((unsigned char)name[i]) || !isdigit((unsigned char)name[9 + i])) return 0;
    *rank = atoi(name);
    *world = atoi(name + 9);
    return 1;
}

/* The M of dir's shards, and which ranks are present (present[rank] = 1;
 * malloc'd, M entries). */
static int scan_shards(const char *dir, int *world, unsigned char **present, Error *err)
{
    DIR *d = opendir(dir);
    if (!d) return error_set_errno(err, "opening generation directory %s", dir);
    *world = 0;
    *present = NULL;
    char first[32] = "";
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        int r, m;
        if (!parse_shard_name(e->d_name, &r, &m)) continue;
        if (m < 1 || r >= m) {
            rc = error_set(err, "%s/%s: rank %d is not below the world size %d", dir, e->d_name, r, m);
        } else if (*world == 0) {
            *world = m;
            snprintf(first, sizeof first, "%s", e->d_name);
            *present = calloc((size_t)m, 1);
            if (!*present) rc = error_set(err, "out of memory");
        } else if (m != *world) {
            rc = error_set(err, "%s mixes shard sets: %s and %s", dir, first, e->d_name);
        }
        if (rc == 0) (*present)[r] = 1;
    }
    closedir(d);
    if (rc == 0 && *world == 0) rc = error_set(err, "%s holds no NNNNN-of-NNNNN.jsonl files", dir);
    for (int r = 0; rc == 0 && r < *world; r++)
        if (!(*present)[r])
            rc = error_set(err, "%s/%05d-of-%05d.jsonl is missing (%d shards expected)", dir, r,
                           *world, *world);
    if (rc != 0) free(*present), *present = NULL;
    return rc;
}

static int push_record(GenRecordList *list, size_t *cap, GenRecord *r, Error *err)
{
    if (list->n == *cap) {
        size_t nc = *cap ? 2 * *cap : 64;
        GenRecord *p = realloc(list->items, nc * sizeof *p);
        if (!p) return error_set(err, "out of memory for %zu records", nc);
        list->items = p;
        *cap = nc;
    }
    list->items[list->n++] = *r;
    return 0;
}

static int record_from_json(json_t *o, GenRecord *r, Error *err)
{
    if (!json_is_object(o)) return error_set(err, "not a JSON object");
    const char *text[4];
    for (int k = 0; k < 4; k++) {
        json_t *v = json_object_get(o, FIELDS[k]);
        if (!json_is_string(v))
            return error_set(err, "\"%s\" is %s", FIELDS[k], v ? "not a string" : "missing");
        text[k] = json_string_value(v);
    }
    json_t *flag = json_object_get(o, "response_had_prompt_prefix_match");
    if (!json_is_boolean(flag))
        return error_set(err, "\"response_had_prompt_prefix_match\" is %s",
                         flag ? "not a boolean" : "missing");
    return record_fill(r, text, json_is_true(flag), err);
}

static int read_shard(const char *path, GenRecordList *list, size_t *cap, Error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return error_set_errno(err, "opening %s", path);
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    int rc = 0;
    for (size_t lineno = 1; rc == 0 && (len = getline(&line, &size, f)) != -1; lineno++) {
        json_error_t jerr;
        json_t *o = json_loadb(line, (size_t)len, 0, &jerr);
        GenRecord r;
        if (!o) rc = error_set(err, "%s:%zu: malformed JSON: %s", path, lineno, jerr.text);
        else if (record_from_json(o, &r, err)) rc = error_prefix(err, "%s:%zu: ", path, lineno);
        else if (push_record(list, cap, &r, err)) gen_record_free(&r), rc = -1;
        json_decref(o);
    }
    if (rc == 0 && ferror(f)) rc = error_set_errno(err, "reading %s", path);
    free(line);
    fclose(f);
    return rc;
}

int gen_read_dir(const char *dir, GenRecordList *out, Error *err)
{
    memset(out, 0, sizeof *out);
    unsigned char *present = NULL;
    if (scan_shards(dir, &out->world, &present, err)) return -1;
    free(present);
    size_t cap = 0;
    for (int r = 0; r < out->world; r++) {
        char path[PATH_MAX];
        if (gen_shard_path(path, sizeof path, dir, r, out->world, err) ||
            read_shard(path, out, &cap, err)) {
            gen_list_free(out);
            return -1;
        }
    }
    return 0;
}

void gen_list_free(GenRecordList *list)
{
    for (size_t i = 0; i < list->n; i++) gen_record_free(&list->items[i]);
    free(list->items);
    memset(list, 0, sizeof *list);
}

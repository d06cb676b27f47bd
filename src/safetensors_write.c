/* The safetensors writer: tensors are declared, then streamed in chunks
 * into a temporary file that is published atomically (fs_util.h). */
#include "safetensors.h"

#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_util.h"

typedef struct {
    char *name;
    SafetensorsDtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t n_elements;
    const float *data;       /* borrowed, or NULL when fill is used */
    SafetensorsFillFn fill;
    void *ctx;
} WriterEntry;

struct SafetensorsWriter {
    WriterEntry *entries;
    size_t n, cap;
    json_t *meta;
};

SafetensorsWriter *safetensors_writer_new(void)
{
    SafetensorsWriter *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->meta = json_object();
    if (!w->meta || json_object_set_new(w->meta, "format", json_string("pt"))) {
        json_decref(w->meta);
        free(w);
        return NULL;
    }
    return w;
}

void safetensors_writer_free(SafetensorsWriter *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n; i++) free(w->entries[i].name);
    free(w->entries);
    json_decref(w->meta);
    free(w);
}

int safetensors_writer_set_metadata(SafetensorsWriter *w, const char *key, const char *value,
                                    Error *err)
{
    if (json_object_set_new(w->meta, key, json_string(value)))
        return error_set(err, "safetensors metadata '%s': invalid UTF-8 or out of memory", key);
    return 0;
}

static int add_entry(SafetensorsWriter *w, const char *name, SafetensorsDtype dtype, int ndim,
                     const int64_t *shape, Error *err)
{
    if (dtype != ST_F32 && dtype != ST_BF16)
        return error_set(err, "safetensors writer: tensor '%s': only F32 and BF16 output is "
                         "supported, not %s", name, safetensors_dtype_name(dtype));
    if (ndim < 0 || ndim > SAFETENSORS_MAX_DIMS)
        return error_set(err, "safetensors writer: tensor '%s': %d dimensions", name, ndim);
    if (strcmp(name, "__metadata__") == 0)
        return error_set(err, "safetensors writer: '__metadata__' is not a tensor name");
    for (size_t i = 0; i < w->n; i++)
        if (strcmp(w->entries[i].name, name) == 0)
            return error_set(err, "safetensors writer: tensor '%s' added twice", name);
    if (w->n == w->cap) {
        size_t cap = w->cap ? 2 * w->cap : 16;
        WriterEntry *e = realloc(w->entries, cap * sizeof *e);
        if (!e) return error_set(err, "safetensors writer: out of memory");
        w->entries = e;
        w->cap = cap;
    }
    WriterEntry *e = &w->entries[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name))) return error_set(err, "safetensors writer: out of memory");
    e->dtype = dtype;
    e->ndim = ndim;
    e->n_elements = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0) {
            free(e->name);
            return error_set(err, "safetensors writer: tensor '%s': negative dimension", name);
        }
        e->shape[i] = shape[i];
        e->n_elements *= (size_t)shape[i];
    }
    w->n++;
    return 0;
}

int safetensors_writer_add(SafetensorsWriter *w, const char *name, SafetensorsDtype dtype,
                           int ndim, const int64_t *shape, const float *data, Error *err)
{
    if (add_entry(w, name, dtype, ndim, shape, err)) return -1;
    w->entries[w->n - 1].data = data;
    return 0;
}

int safetensors_writer_add_fill(SafetensorsWriter *w, const char *name, SafetensorsDtype dtype,
                                int ndim, const int64_t *shape, SafetensorsFillFn fill,
                                void *ctx, Error *err)
{
    if (add_entry(w, name, dtype, ndim, shape, err)) return -1;
    w->entries[w->n - 1].fill = fill;
    w->entries[w->n - 1].ctx = ctx;
    return 0;
}

size_t safetensors_writer_data_bytes(const SafetensorsWriter *w)
{
    size_t total = 0;
    for (size_t i = 0; i < w->n; i++)
        total += w->entries[i].n_elements * safetensors_dtype_size(w->entries[i].dtype);
    return total;
}

/* The header as the reference writer lays it out: JSON padded with spaces so
 * the data starts 8-byte aligned. */
static char *build_header(const SafetensorsWriter *w, size_t *len, Error *err)
{
    json_t *root = json_object();
    json_object_set(root, "__metadata__", w->meta);
    size_t off = 0;
    for (size_t i = 0; i < w->n; i++) {
        const WriterEntry *e = &w->entries[i];
        size_t nb = e->n_elements * safetensors_dtype_size(e->dtype);
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *desc = json_pack("{s:s, s:o, s:[I, I]}", "dtype", safetensors_dtype_name(e->dtype),
                                 "shape", shape, "data_offsets", (json_int_t)off,
                                 (json_int_t)(off + nb));
        if (!desc || json_object_set_new(root, e->name, desc)) {
            json_decref(root);
            error_set(err, "safetensors writer: cannot build header for '%s'", e->name);
            return NULL;
        }
        off += nb;
    }
    char *text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(root);
    if (!text) {
        error_set(err, "safetensors writer: cannot serialise the header");
        return NULL;
    }
    size_t n = strlen(text), padded = (n + 7) & ~(size_t)7;
    char *buf = malloc(padded + 8);
    if (!buf) {
        free(text);
        error_set(err, "safetensors writer: out of memory");
        return NULL;
    }
    uint64_t hlen = padded;
    memcpy(buf, &hlen, 8);
    memcpy(buf + 8, text, n);
    memset(buf + 8 + n, ' ', padded - n);
    free(text);
    *len = padded + 8;
    return buf;
}

enum { CHUNK_ELEMS = 1 << 20 };

/* Streams one tensor's values in chunks, converting to the output dtype. */
static int write_entry(FILE *fp, const WriterEntry *e, float *fbuf, uint16_t *hbuf,
                       const char *path, Error *err)
{
    for (size_t start = 0; start < e->n_elements; start += CHUNK_ELEMS) {
        size_t count = e->n_elements - start < CHUNK_ELEMS ? e->n_elements - start : CHUNK_ELEMS;
        const float *src = e->data ? e->data + start : fbuf;
        if (!e->data && e->fill(e->ctx, start, count, fbuf, err))
            return error_prefix(err, "%s: tensor '%s': ", path, e->name);
        const void *out = src;
        size_t nb = count * 4;
        if (e->dtype == ST_BF16) {
            for (size_t i = 0; i < count; i++) hbuf[i] = safetensors_f32_to_bf16(src[i]);
            out = hbuf;
            nb = count * 2;
        }
        if (fwrite(out, 1, nb, fp) != nb)
            return error_set_errno(err, "%s: writing tensor '%s'", path, e->name);
    }
    return 0;
}

/* Closes the temporary and publishes it as `path` (fsync, rename, fsync of
 * the directory: fs_util's protocol), or removes it when anything failed. */
static int finish_temp(FILE *fp, const char *tmp, const char *path, int ok, Error *err)
{
    if (fclose(fp) != 0 && ok) ok = error_set_errno(err, "writing %s", tmp) == 0;
    if (!ok) {
        unlink(tmp);
        return -1;
    }
    return fs_publish(tmp, path, err);
}

int safetensors_writer_write(SafetensorsWriter *w, const char *path, Error *err)
{
    char tmp[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, path, err)) return -1;
    size_t hlen;
    char *header = build_header(w, &hlen, err);
    if (!header) return error_prefix(err, "%s: ", path);
    float *fbuf = malloc(CHUNK_ELEMS * sizeof *fbuf);
    uint16_t *hbuf = malloc(CHUNK_ELEMS * sizeof *hbuf);
    FILE *fp = NULL;
    if (!fbuf || !hbuf) error_set(err, "%s: out of memory", path);
    else if (!(fp = fopen(tmp, "wb"))) error_set_errno(err, "cannot create %s", tmp);
    int ok = fp != NULL && fwrite(header, 1, hlen, fp) == hlen;
    if (fp && !ok) error_set_errno(err, "writing %s", tmp);
    for (size_t i = 0; ok && i < w->n; i++)
        ok = write_entry(fp, &w->entries[i], fbuf, hbuf, path, err) == 0;
    free(header);
    free(fbuf);
    free(hbuf);
    return fp ? finish_temp(fp, tmp, path, ok, err) : -1;
}

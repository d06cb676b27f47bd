#include "safetensors.h"

#include "fs_util.h"

#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- dtypes */

static const struct {
    const char *name;
    size_t size;
} dtype_table[ST_N_DTYPES] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

int safetensors_dtype_from_name(const char *name)
{
    for (int d = 0; d < ST_N_DTYPES; d++)
        if (strcmp(name, dtype_table[d].name) == 0) return d;
    return -1;
}

const char *safetensors_dtype_name(SafetensorsDtype d) { return dtype_table[d].name; }
size_t safetensors_dtype_size(SafetensorsDtype d) { return dtype_table[d].size; }

float safetensors_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t safetensors_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN, as torch */
    /* Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into
     * the exponent is the correct rounding up (to infinity at the top). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float safetensors_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);           /* inf / NaN */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);   /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign;                                       /* zero */
    } else {
        float f = ldexpf((float)man, -24);              /* subnormal: man * 2^-24 */
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

const char *safetensors_shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}

/* ---------------------------------------------------------------- reader */

struct SafetensorsFile {
    char *path;
    void *map;
    size_t map_size;
    const uint8_t *data;     /* start of the data section */
    size_t data_size;
    SafetensorsTensor *tensors;
    size_t n_tensors;
    char **meta;             /* key, value, key, value ... */
    size_t n_meta;
};

const char *safetensors_path(const SafetensorsFile *f) { return f->path; }
size_t safetensors_count(const SafetensorsFile *f) { return f->n_tensors; }

const SafetensorsTensor *safetensors_tensor(const SafetensorsFile *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const SafetensorsTensor *safetensors_find(const SafetensorsFile *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *safetensors_metadata(const SafetensorsFile *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

void safetensors_close(SafetensorsFile *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}

static int parse_metadata(SafetensorsFile *f, json_t *meta, Error *err)
{
    if (!json_is_object(meta))
        return error_set(err, "%s: \"__metadata__\" is not an object", f->path);
    f->meta = calloc(2 * json_object_size(meta) + 1, sizeof *f->meta);
    if (!f->meta) return error_set(err, "%s: out of memory", f->path);
    const char *key;
    json_t *val;
    json_object_foreach(meta, key, val) {
        if (!json_is_string(val))
            return error_set(err, "%s: __metadata__ value of \"%s\" is not a string", f->path, key);
        f->meta[2 * f->n_meta] = strdup(key);
        f->meta[2 * f->n_meta + 1] = strdup(json_string_value(val));
        f->n_meta++;
        if (!f->meta[2 * f->n_meta - 2] || !f->meta[2 * f->n_meta - 1])
            return error_set(err, "%s: out of memory", f->path);
    }
    return 0;
}

static int parse_shape(const char *path, const char *name, json_t *shape,
                       SafetensorsTensor *t, Error *err)
{
    if (!json_is_array(shape))
        return error_set(err, "%s: tensor '%s': \"shape\" is not an array", path, name);
    if (json_array_size(shape) > SAFETENSORS_MAX_DIMS)
        return error_set(err, "%s: tensor '%s': %zu dimensions (at most %d supported)", path,
                         name, json_array_size(shape), SAFETENSORS_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    size_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        json_t *d = json_array_get(shape, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return error_set(err, "%s: tensor '%s': shape entry %d is not a non-negative integer",
                             path, name, i);
        t->shape[i] = json_integer_value(d);
        size_t dim = (size_t)t->shape[i];
        if (dim != 0 && n > SIZE_MAX / 16 / dim)
            return error_set(err, "%s: tensor '%s': shape overflows", path, name);
        n *= dim;
    }
    t->n_elements = n;
    return 0;
}

static int parse_offsets(const SafetensorsFile *f, const char *name, json_t *offs,
                         size_t *begin, size_t *end, Error *err)
{
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(b) ||
        !json_is_integer(e) || json_integer_value(b) < 0 || json_integer_value(e) < 0)
        return error_set(err, "%s: tensor '%s': \"data_offsets\" must be two non-negative integers",
                         f->path, name);
    *begin = (size_t)json_integer_value(b);
    *end = (size_t)json_integer_value(e);
    if (*begin > *end)
        return error_set(err, "%s: tensor '%s': data_offsets [%zu, %zu] end before begin",
                         f->path, name, *begin, *end);
    if (*end > f->data_size)
        return error_set(err, "%s: tensor '%s': data_offsets [%zu, %zu] beyond the %zu bytes of "
                         "data (file truncated?)", f->path, name, *begin, *end, f->data_size);
    return 0;
}

static int parse_tensor(SafetensorsFile *f, const char *name, json_t *desc,
                        SafetensorsTensor *t, size_t *begin, Error *err)
{
    if (!json_is_object(desc))
        return error_set(err, "%s: tensor '%s': description is not an object", f->path, name);
    json_t *dt = json_object_get(desc, "dtype");
    if (!json_is_string(dt))
        return error_set(err, "%s: tensor '%s': missing \"dtype\"", f->path, name);
    int d = safetensors_dtype_from_name(json_string_value(dt));
    if (d < 0)
        return error_set(err, "%s: tensor '%s': unknown dtype \"%s\"", f->path, name,
                         json_string_value(dt));
    t->dtype = (SafetensorsDtype)d;
    if (parse_shape(f->path, name, json_object_get(desc, "shape"), t, err)) return -1;
    size_t end = 0;
    if (parse_offsets(f, name, json_object_get(desc, "data_offsets"), begin, &end, err))
        return -1;
    t->nbytes = t->n_elements * dtype_table[d].size;
    if (end - *begin != t->nbytes) {
        char sh[128];
        return error_set(err, "%s: tensor '%s': data_offsets [%zu, %zu] hold %zu bytes but %s "
                         "shape %s needs %zu", f->path, name, *begin, end, end - *begin,
                         dtype_table[d].name, safetensors_shape_str(t->ndim, t->shape, sh,
                         sizeof sh), t->nbytes);
    }
    t->data = f->data + *begin;
    return 0;
}

/* Order by (begin, size) so empty tensors sort before a neighbour at the same offset. */
static int tensor_after(const SafetensorsTensor *a, const SafetensorsTensor *b)
{
    const uint8_t *pa = a->data, *pb = b->data;
    return pa != pb ? pa > pb : a->nbytes > b->nbytes;
}

/* The tensors must tile the data section with no gap or overlap (what the
 * reference reader enforces): a hole or overlap means a corrupt header. */
static int check_tiling(const SafetensorsFile *f, size_t *order, Error *err)
{
    /* insertion sort of indices by begin offset: headers are small */
    for (size_t i = 1; i < f->n_tensors; i++) {
        size_t k = order[i], j = i;
        for (; j > 0 && tensor_after(&f->tensors[order[j - 1]], &f->tensors[k]); j--)
            order[j] = order[j - 1];
        order[j] = k;
    }
    size_t pos = 0;
    for (size_t i = 0; i < f->n_tensors; i++) {
        const SafetensorsTensor *t = &f->tensors[order[i]];
        size_t begin = (size_t)((const uint8_t *)t->data - f->data);
        if (begin != pos)
            return error_set(err, "%s: tensor '%s': data starts at %zu, expected %zu (%s)", f->path,
                             t->name, begin, pos, begin < pos ? "overlaps another tensor"
                                                              : "gap in the data");
        pos += t->nbytes;
    }
    if (pos != f->data_size)
        return error_set(err, "%s: tensors cover %zu bytes of data but the file has %zu", f->path,
                         pos, f->data_size);
    return 0;
}

static int parse_header(SafetensorsFile *f, const char *text, size_t len, Error *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return error_set(err, "%s: malformed JSON header (line %d column %d: %s)", f->path,
                         jerr.line, jerr.column, jerr.text);
    int rc = -1;
    size_t *order = NULL;
    if (!json_is_object(root)) {
        error_set(err, "%s: JSON header is not an object", f->path);
        goto out;
    }
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    order = calloc(json_object_size(root) + 1, sizeof *order);
    if (!f->tensors || !order) {
        error_set(err, "%s: out of memory", f->path);
        goto out;
    }
    const char *name;
    json_t *desc;
    json_object_foreach(root, name, desc) {
        if (strcmp(name, "__metadata__") == 0) {
            if (parse_metadata(f, desc, err)) goto out;
            continue;
        }
        SafetensorsTensor *t = &f->tensors[f->n_tensors];
        size_t begin = 0;
        if (parse_tensor(f, name, desc, t, &begin, err)) goto out;
        if (!(t->name = strdup(name))) {
            error_set(err, "%s: out of memory", f->path);
            goto out;
        }
        order[f->n_tensors] = f->n_tensors;
        f->n_tensors++;
    }
    rc = check_tiling(f, order, err);
out:
    free(order);
    json_decref(root);
    return rc;
}

static int map_file(SafetensorsFile *f, Error *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return error_set_errno(err, "cannot open %s", f->path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return error_set_errno(err, "cannot stat %s", f->path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return error_set(err, "%s: not a regular file", f->path);
    }
    f->map_size = (size_t)st.st_size;
    if (f->map_size < 8) {
        close(fd);
        return error_set(err, "%s: file is %zu bytes, shorter than the 8-byte header length "
                         "(truncated?)", f->path, f->map_size);
    }
    void *p = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd); /* the mapping keeps the file alive */
    if (p == MAP_FAILED) return error_set_errno(err, "cannot mmap %s", f->path);
    f->map = p;
    return 0;
}

int safetensors_open(const char *path, SafetensorsFile **out, Error *err)
{
    *out = NULL;
    SafetensorsFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return error_set(err, "%s: out of memory", path);
    }
    if (map_file(f, err)) goto fail;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > SAFETENSORS_MAX_HEADER) {
        error_set(err, "%s: header length %llu is absurd (limit %u bytes): not a safetensors "
                  "file or corrupt", path, (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (hlen > f->map_size - 8) {
        error_set(err, "%s: header length %llu but only %zu bytes follow (truncated?)", path,
                  (unsigned long long)hlen, f->map_size - 8);
        goto fail;
    }
    const char *text = (const char *)f->map + 8;
    f->data = (const uint8_t *)f->map + 8 + hlen;
    f->data_size = f->map_size - 8 - (size_t)hlen;
    if (parse_header(f, text, (size_t)hlen, err)) goto fail;
    *out = f;
    return 0;
fail:
    safetensors_close(f);
    return -1;
}

/* ------------------------------------------------------------- conversion */

int safetensors_tensor_to_f32(const SafetensorsFile *f, const SafetensorsTensor *t,
                              float *dst, Error *err)
{
    const uint8_t *src = t->data;
    size_t n = t->n_elements;
    long long nn = (long long)n;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case ST_BF16:
#pragma omp parallel for if (nn > 65536) schedule(static)
        for (long long i = 0; i < nn; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = safetensors_bf16_to_f32(h);
        }
        return 0;
    case ST_F16:
#pragma omp parallel for if (nn > 65536) schedule(static)
        for (long long i = 0; i < nn; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = safetensors_f16_to_f32(h);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    case ST_I32: case ST_I64: case ST_I16: case ST_I8: case ST_U8: case ST_BOOL: {
        for (size_t i = 0; i < n; i++) {
            int64_t v = 0;
            switch (t->dtype) {
            case ST_I64: memcpy(&v, src + 8 * i, 8); break;
            case ST_I32: { int32_t x; memcpy(&x, src + 4 * i, 4); v = x; break; }
            case ST_I16: { int16_t x; memcpy(&x, src + 2 * i, 2); v = x; break; }
            case ST_I8: v = (int8_t)src[i]; break;
            default: v = src[i]; break;
            }
            dst[i] = (float)v;
        }
        return 0;
    }
    case ST_N_DTYPES:
        break;
    }
    return error_set(err, "%s: tensor '%s': cannot convert its dtype to F32", f->path, t->name);
}

int safetensors_tensor_to_i64(const SafetensorsFile *f, const SafetensorsTensor *t,
                              int64_t *dst, Error *err)
{
    const uint8_t *src = t->data;
    if (t->dtype == ST_I64) {
        memcpy(dst, src, t->n_elements * 8);
        return 0;
    }
    if (t->dtype == ST_I32) {
        for (size_t i = 0; i < t->n_elements; i++) {
            int32_t x;
            memcpy(&x, src + 4 * i, 4);
            dst[i] = x;
        }
        return 0;
    }
    return error_set(err, "%s: tensor '%s' is %s, expected I32 or I64", f->path, t->name,
                     dtype_table[t->dtype].name);
}

int safetensors_read_f32(const SafetensorsFile *f, const char *name, float *dst,
                         int ndim, const int64_t *shape, Error *err)
{
    const SafetensorsTensor *t = safetensors_find(f, name);
    if (!t) return error_set(err, "%s: missing tensor '%s'", f->path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        return error_set(err, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                         safetensors_shape_str(t->ndim, t->shape, got, sizeof got),
                         safetensors_shape_str(ndim, shape, want, sizeof want));
    }
    return safetensors_tensor_to_f32(f, t, dst, err);
}

/* ---------------------------------------------------------------- writer */

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
                         "supported, not %s", name, dtype_table[dtype].name);
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
        total += w->entries[i].n_elements * dtype_table[w->entries[i].dtype].size;
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
        size_t nb = e->n_elements * dtype_table[e->dtype].size;
        json_t *shape = json_array();
        for (int d = 0; d < e->ndim; d++) json_array_append_new(shape, json_integer(e->shape[d]));
        json_t *desc = json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtype_table[e->dtype].name,
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

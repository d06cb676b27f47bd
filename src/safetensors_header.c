/* Parsing and validating a safetensors JSON header: each tensor's dtype,
 * shape and data offsets, the "__metadata__" object, and the check that the
 * tensors tile the data section exactly. */
#include "safetensors_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

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
    t->nbytes = t->n_elements * safetensors_dtype_size(t->dtype);
    if (end - *begin != t->nbytes) {
        char sh[128];
        return error_set(err, "%s: tensor '%s': data_offsets [%zu, %zu] hold %zu bytes but %s "
                         "shape %s needs %zu", f->path, name, *begin, end, end - *begin,
                         safetensors_dtype_name(t->dtype),
                         safetensors_shape_str(t->ndim, t->shape, sh, sizeof sh), t->nbytes);
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

int st_parse_header(SafetensorsFile *f, const char *text, size_t len, Error *err)
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

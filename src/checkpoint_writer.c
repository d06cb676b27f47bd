/* The checkpoint writer: collects copies of arrays and attributes, checking
 * names as they are put and remembering the first bad put for ckpt_write. */
#include "checkpoint_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Records the first failure only: later ones are usually its consequences. */
__attribute__((format(printf, 2, 3))) static int writer_fail(CheckpointWriter *w, const char *fmt,
                                                             ...)
{
    if (w->failed) return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->first.msg, sizeof w->first.msg, fmt, ap);
    va_end(ap);
    w->failed = true;
    return -1;
}

static int put_format_attrs(CheckpointWriter *w)
{
    CkptAttr f = {.name = strdup("format"), .kind = CKPT_ATTR_STR, .s = strdup(CKPT_FORMAT_NAME)};
    CkptAttr v = {
        .name = strdup("format_version"), .kind = CKPT_ATTR_I64, .i = CKPT_FORMAT_VERSION};
    if (!f.name || !f.s || !v.name) {
        free(f.name);
        free(f.s);
        free(v.name);
        return -1;
    }
    if (ckpt_content_add_attr(&w->content, &f)) {
        free(v.name);
        return -1;
    }
    return ckpt_content_add_attr(&w->content, &v);
}

CheckpointWriter *ckpt_writer_new(void)
{
    CheckpointWriter *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    if (put_format_attrs(w)) {
        ckpt_writer_free(w);
        return NULL;
    }
    return w;
}

void ckpt_writer_free(CheckpointWriter *w)
{
    if (!w) return;
    ckpt_content_free(&w->content);
    free(w);
}

static int check_array_name(CheckpointWriter *w, const char *name)
{
    if (!name || !ckpt_name_ok(name, true))
        return writer_fail(w,
                           "invalid array name '%s' (components of [A-Za-z0-9_.-] joined by '/', "
                           "at most %d characters)",
                           name ? name : "(null)", CKPT_NAME_MAX);
    for (size_t i = 0; i < w->content.n_arrays; i++) {
        const char *old = w->content.arrays[i].name;
        if (strcmp(old, name) == 0) return writer_fail(w, "array '%s' put twice", name);
        if (ckpt_name_covers(old, name) || ckpt_name_covers(name, old))
            return writer_fail(
                w, "array names '%s' and '%s' conflict: one would be a group of the other", old,
                name);
    }
    return 0;
}

int ckpt_put(CheckpointWriter *w, const char *name, CkptType t, const void *data, int ndims,
             const uint64_t *dims)
{
    if (!w) return -1;
    if (check_array_name(w, name)) return -1;
    if ((unsigned)t > CKPT_U8) return writer_fail(w, "array '%s': unknown type %d", name, (int)t);
    if (ndims < 1 || ndims > CKPT_MAX_DIMS)
        return writer_fail(w, "array '%s': %d dimensions (1..%d supported)", name, ndims,
                           CKPT_MAX_DIMS);
    CkptArray a = {.type = t, .ndims = ndims, .n = 1};
    for (int d = 0; d < ndims; d++) {
        a.dims[d] = dims[d];
        if (dims[d] != 0 && a.n > SIZE_MAX / ckpt_type_size(t) / dims[d])
            return writer_fail(w, "array '%s' is too large", name);
        a.n *= (size_t)dims[d];
    }
    size_t bytes = a.n * ckpt_type_size(t);
    if (bytes > 0 && !data) return writer_fail(w, "array '%s': no data", name);
    a.name = strdup(name);
    a.data = malloc(bytes ? bytes : 1);
    if (!a.name || !a.data) {
        free(a.name);
        free(a.data);
        return writer_fail(w, "array '%s': out of memory", name);
    }
    if (bytes) memcpy(a.data, data, bytes);
    if (ckpt_content_add_array(&w->content, &a))
        return writer_fail(w, "array '%s': out of memory", name);
    return 0;
}

static int put_1d(CheckpointWriter *w, const char *name, CkptType t, const void *x, size_t n)
{
    uint64_t dim = n;
    return ckpt_put(w, name, t, x, 1, &dim);
}

int ckpt_put_f32(CheckpointWriter *w, const char *name, const float *x, size_t n)
{
    return put_1d(w, name, CKPT_F32, x, n);
}
int ckpt_put_f64(CheckpointWriter *w, const char *name, const double *x, size_t n)
{
    return put_1d(w, name, CKPT_F64, x, n);
}
int ckpt_put_i64(CheckpointWriter *w, const char *name, const int64_t *x, size_t n)
{
    return put_1d(w, name, CKPT_I64, x, n);
}
int ckpt_put_u64(CheckpointWriter *w, const char *name, const uint64_t *x, size_t n)
{
    return put_1d(w, name, CKPT_U64, x, n);
}
int ckpt_put_u8(CheckpointWriter *w, const char *name, const uint8_t *x, size_t n)
{
    return put_1d(w, name, CKPT_U8, x, n);
}

/* Takes ownership of a->s. */
static int put_attr(CheckpointWriter *w, const char *name, CkptAttr *a)
{
    if (!name || !ckpt_name_ok(name, false)) {
        free(a->s);
        return writer_fail(
            w,
            "invalid attribute name '%s' (one component of [A-Za-z0-9_.-], at most %d characters)",
            name ? name : "(null)", CKPT_NAME_MAX);
    }
    if (ckpt_reserved_attr(name) || ckpt_find_attr(&w->content, name)) {
        free(a->s);
        return writer_fail(w, "attribute '%s' %s", name,
                           ckpt_reserved_attr(name) ? "is reserved" : "set twice");
    }
    a->name = strdup(name);
    if (!a->name) {
        free(a->s);
        return writer_fail(w, "attribute '%s': out of memory", name);
    }
    if (ckpt_content_add_attr(&w->content, a))
        return writer_fail(w, "attribute '%s': out of memory", name);
    return 0;
}

int ckpt_attr_i64(CheckpointWriter *w, const char *name, int64_t v)
{
    if (!w) return -1;
    CkptAttr a = {.kind = CKPT_ATTR_I64, .i = v};
    return put_attr(w, name, &a);
}

int ckpt_attr_f64(CheckpointWriter *w, const char *name, double v)
{
    if (!w) return -1;
    CkptAttr a = {.kind = CKPT_ATTR_F64, .f = v};
    return put_attr(w, name, &a);
}

int ckpt_attr_str(CheckpointWriter *w, const char *name, const char *s)
{
    if (!w) return -1;
    if (!s) return writer_fail(w, "attribute '%s': NULL string", name ? name : "(null)");
    CkptAttr a = {.kind = CKPT_ATTR_STR, .s = strdup(s)};
    if (!a.s) return writer_fail(w, "attribute '%s': out of memory", name ? name : "(null)");
    return put_attr(w, name, &a);
}

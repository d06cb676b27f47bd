/* An opened checkpoint: ckpt_open reads and verifies the whole file (format,
 * version, checksum), then the accessors hand out copies of its content. */
#include "checkpoint_internal.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "checkpoint_hdf5.h"

struct Checkpoint {
    char *path;
    CkptContent content;
    uint32_t checksum;
};

static int check_format(const CkptContent *c, Error *err)
{
    const CkptAttr *f = ckpt_find_attr(c, "format");
    if (!f) return error_set(err, "not a modpo checkpoint (attribute 'format' missing)");
    if (f->kind != CKPT_ATTR_STR || strcmp(f->s, CKPT_FORMAT_NAME) != 0)
        return error_set(err, "not a modpo checkpoint (attribute 'format' is not \"%s\")",
                         CKPT_FORMAT_NAME);
    const CkptAttr *v = ckpt_find_attr(c, "format_version");
    if (!v || v->kind != CKPT_ATTR_I64)
        return error_set(err, "attribute 'format_version' missing or not an integer");
    if (v->i != CKPT_FORMAT_VERSION)
        return error_set(err, "unsupported format version %lld (this build reads version %d)",
                         (long long)v->i, CKPT_FORMAT_VERSION);
    return 0;
}

Checkpoint *ckpt_open(const char *path, Error *err)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        error_set_errno(err, "%s", path);
        return NULL;
    }
    Checkpoint *c = calloc(1, sizeof *c);
    if (!c || !(c->path = strdup(path))) {
        free(c);
        error_set(err, "%s: out of memory", path);
        return NULL;
    }
    Error local;
    Error *e = err ? err : &local;
    CkptH5Quiet q;
    ckpt_h5_quiet_begin(&q);
    bool have_checksum = false;
    int rc = ckpt_read_file(path, &c->content, &have_checksum, &c->checksum, e);
    ckpt_h5_quiet_end(&q);
    if (rc == 0) rc = check_format(&c->content, e);
    if (rc == 0 && !have_checksum) rc = error_set(e, "attribute 'checksum' missing");
    if (rc == 0) {
        ckpt_content_sort(&c->content);
        uint32_t computed = ckpt_content_checksum(&c->content);
        if (computed != c->checksum)
            rc = error_set(e, "checksum mismatch: stored %08x, computed %08x", c->checksum,
                           computed);
    }
    if (rc) {
        error_prefix(e, "%s: ", path);
        ckpt_close(c);
        return NULL;
    }
    return c;
}

void ckpt_close(Checkpoint *c)
{
    if (!c) return;
    ckpt_content_free(&c->content);
    free(c->path);
    free(c);
}

int ckpt_verify(const char *path, Error *err)
{
    Checkpoint *c = ckpt_open(path, err);
    if (!c) return -1;
    ckpt_close(c);
    return 0;
}

const char *ckpt_path(const Checkpoint *c) { return c->path; }
uint32_t ckpt_checksum(const Checkpoint *c) { return c->checksum; }
size_t ckpt_n_arrays(const Checkpoint *c) { return c->content.n_arrays; }

const char *ckpt_array_name(const Checkpoint *c, size_t i)
{
    return i < c->content.n_arrays ? c->content.arrays[i].name : NULL;
}

int ckpt_has(const Checkpoint *c, const char *name)
{
    return ckpt_find_array(&c->content, name) != NULL;
}

static const CkptArray *need_array(const Checkpoint *c, const char *name, Error *err)
{
    const CkptArray *a = ckpt_find_array(&c->content, name);
    if (!a) error_set(err, "%s: array '%s' missing", c->path, name);
    return a;
}

int ckpt_info(const Checkpoint *c, const char *name, CkptType *t, size_t *n, int *ndims,
              uint64_t dims[CKPT_MAX_DIMS], Error *err)
{
    const CkptArray *a = need_array(c, name, err);
    if (!a) return -1;
    if (t) *t = a->type;
    if (n) *n = a->n;
    if (ndims) *ndims = a->ndims;
    if (dims) memcpy(dims, a->dims, (size_t)a->ndims * sizeof *dims);
    return 0;
}

int ckpt_get(const Checkpoint *c, const char *name, CkptType t, void *dst, size_t n_expected,
             Error *err)
{
    const CkptArray *a = need_array(c, name, err);
    if (!a) return -1;
    if (a->type != t)
        return error_set(err, "%s: array '%s' is %s, expected %s", c->path, name,
                         ckpt_type_name(a->type), ckpt_type_name(t));
    if (a->n != n_expected)
        return error_set(err, "%s: array '%s' has %zu elements, expected %zu", c->path, name, a->n,
                         n_expected);
    if (a->n) memcpy(dst, a->data, a->n * ckpt_type_size(t));
    return 0;
}

int ckpt_get_f32(const Checkpoint *c, const char *name, float *dst, size_t n, Error *err)
{
    return ckpt_get(c, name, CKPT_F32, dst, n, err);
}
int ckpt_get_f64(const Checkpoint *c, const char *name, double *dst, size_t n, Error *err)
{
    return ckpt_get(c, name, CKPT_F64, dst, n, err);
}
int ckpt_get_i64(const Checkpoint *c, const char *name, int64_t *dst, size_t n, Error *err)
{
    return ckpt_get(c, name, CKPT_I64, dst, n, err);
}
int ckpt_get_u64(const Checkpoint *c, const char *name, uint64_t *dst, size_t n, Error *err)
{
    return ckpt_get(c, name, CKPT_U64, dst, n, err);
}
int ckpt_get_u8(const Checkpoint *c, const char *name, uint8_t *dst, size_t n, Error *err)
{
    return ckpt_get(c, name, CKPT_U8, dst, n, err);
}

int ckpt_has_attr(const Checkpoint *c, const char *name)
{
    return ckpt_find_attr(&c->content, name) != NULL;
}

static const CkptAttr *need_attr(const Checkpoint *c, const char *name, CkptAttrKind kind,
                                 Error *err)
{
    const CkptAttr *a = ckpt_find_attr(&c->content, name);
    if (!a) {
        error_set(err, "%s: attribute '%s' missing", c->path, name);
        return NULL;
    }
    if (a->kind != kind) {
        error_set(err, "%s: attribute '%s' is %s, expected %s", c->path, name,
                  ckpt_attr_kind_name(a->kind), ckpt_attr_kind_name(kind));
        return NULL;
    }
    return a;
}

int ckpt_get_attr_i64(const Checkpoint *c, const char *name, int64_t *v, Error *err)
{
    const CkptAttr *a = need_attr(c, name, CKPT_ATTR_I64, err);
    if (!a) return -1;
    *v = a->i;
    return 0;
}

int ckpt_get_attr_f64(const Checkpoint *c, const char *name, double *v, Error *err)
{
    const CkptAttr *a = need_attr(c, name, CKPT_ATTR_F64, err);
    if (!a) return -1;
    *v = a->f;
    return 0;
}

int ckpt_get_attr_str(const Checkpoint *c, const char *name, const char **s, Error *err)
{
    const CkptAttr *a = need_attr(c, name, CKPT_ATTR_STR, err);
    if (!a) return -1;
    *s = a->s;
    return 0;
}

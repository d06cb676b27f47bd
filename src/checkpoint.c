/* The checkpoint file: an in-memory content model (arrays + attributes), its
 * checksum, and its HDF5 encoding.  Both the writer and the reader hold the
 * same Content, so the checksum is computed by one function on both sides. */
#include "checkpoint.h"

#include <hdf5.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "fs_util.h"

/* The checksum is defined over little-endian bytes and arrays are hashed
 * straight from memory. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "checkpoint.c assumes a little-endian host");

/* ------------------------------------------------------------------ types */

static const struct {
    const char *name;
    size_t size;
} TYPES[] = {
    [CKPT_F32] = {"f32", 4}, [CKPT_F64] = {"f64", 8}, [CKPT_I64] = {"i64", 8},
    [CKPT_U64] = {"u64", 8}, [CKPT_U8] = {"u8", 1},
};

const char *ckpt_type_name(CkptType t) { return TYPES[t].name; }
size_t ckpt_type_size(CkptType t) { return TYPES[t].size; }

/* The file type is fixed little-endian so files are the same on any host. */
static hid_t file_type(CkptType t)
{
    switch (t) {
    case CKPT_F32: return H5T_IEEE_F32LE;
    case CKPT_F64: return H5T_IEEE_F64LE;
    case CKPT_I64: return H5T_STD_I64LE;
    case CKPT_U64: return H5T_STD_U64LE;
    case CKPT_U8: return H5T_STD_U8LE;
    }
    return -1;
}

static hid_t mem_type(CkptType t)
{
    switch (t) {
    case CKPT_F32: return H5T_NATIVE_FLOAT;
    case CKPT_F64: return H5T_NATIVE_DOUBLE;
    case CKPT_I64: return H5T_NATIVE_INT64;
    case CKPT_U64: return H5T_NATIVE_UINT64;
    case CKPT_U8: return H5T_NATIVE_UINT8;
    }
    return -1;
}

/* ---------------------------------------------------------- content model */

typedef struct {
    char *name;
    CkptType type;
    int ndims;
    uint64_t dims[CKPT_MAX_DIMS];
    size_t n;
    void *data;
} Array;

typedef enum { ATTR_I64, ATTR_F64, ATTR_STR } AttrKind;
static const char *const ATTR_KIND_NAME[] = {"i64", "f64", "str"};

typedef struct {
    char *name;
    AttrKind kind;
    int64_t i;
    double f;
    char *s;
} Attr;

typedef struct {
    Array *arrays;
    size_t n_arrays, cap_arrays;
    Attr *attrs;
    size_t n_attrs, cap_attrs;
} Content;

static void content_free(Content *c)
{
    for (size_t i = 0; i < c->n_arrays; i++) {
        free(c->arrays[i].name);
        free(c->arrays[i].data);
    }
    for (size_t i = 0; i < c->n_attrs; i++) {
        free(c->attrs[i].name);
        free(c->attrs[i].s);
    }
    free(c->arrays);
    free(c->attrs);
    memset(c, 0, sizeof *c);
}

/* Takes ownership of a->name and a->data, also on failure. */
static int content_add_array(Content *c, Array *a)
{
    if (c->n_arrays == c->cap_arrays) {
        size_t cap = c->cap_arrays ? 2 * c->cap_arrays : 16;
        Array *p = realloc(c->arrays, cap * sizeof *p);
        if (!p) {
            free(a->name);
            free(a->data);
            return -1;
        }
        c->arrays = p;
        c->cap_arrays = cap;
    }
    c->arrays[c->n_arrays++] = *a;
    return 0;
}

/* Takes ownership of a->name and a->s, also on failure. */
static int content_add_attr(Content *c, Attr *a)
{
    if (c->n_attrs == c->cap_attrs) {
        size_t cap = c->cap_attrs ? 2 * c->cap_attrs : 16;
        Attr *p = realloc(c->attrs, cap * sizeof *p);
        if (!p) {
            free(a->name);
            free(a->s);
            return -1;
        }
        c->attrs = p;
        c->cap_attrs = cap;
    }
    c->attrs[c->n_attrs++] = *a;
    return 0;
}

static int cmp_array(const void *a, const void *b)
{
    return strcmp(((const Array *)a)->name, ((const Array *)b)->name);
}

static int cmp_attr(const void *a, const void *b)
{
    return strcmp(((const Attr *)a)->name, ((const Attr *)b)->name);
}

/* Name order (strcmp compares bytes as unsigned) is the checksum's order and
 * the order datasets are written in, which creates parents before children. */
static void content_sort(Content *c)
{
    if (c->n_arrays) qsort(c->arrays, c->n_arrays, sizeof *c->arrays, cmp_array);
    if (c->n_attrs) qsort(c->attrs, c->n_attrs, sizeof *c->attrs, cmp_attr);
}

static const Array *find_array(const Content *c, const char *name)
{
    for (size_t i = 0; i < c->n_arrays; i++)
        if (strcmp(c->arrays[i].name, name) == 0) return &c->arrays[i];
    return NULL;
}

static const Attr *find_attr(const Content *c, const char *name)
{
    for (size_t i = 0; i < c->n_attrs; i++)
        if (strcmp(c->attrs[i].name, name) == 0) return &c->attrs[i];
    return NULL;
}

/* --------------------------------------------------------------- checksum */

static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n)
{
    return (uint32_t)crc32_z(crc, p, n);
}

/* A string with its terminating NUL, so "ab"+"c" and "a"+"bc" differ. */
static uint32_t crc_str0(uint32_t crc, const char *s) { return crc_bytes(crc, s, strlen(s) + 1); }

static uint32_t crc_u64(uint32_t crc, uint64_t v) { return crc_bytes(crc, &v, sizeof v); }

/* The definition in docs/checkpoint-format.md ("Checksum"); content must be
 * sorted and must not contain the checksum attribute itself. */
static uint32_t content_checksum(const Content *c)
{
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < c->n_arrays; i++) {
        const Array *a = &c->arrays[i];
        crc = crc_str0(crc, "array");
        crc = crc_str0(crc, a->name);
        crc = crc_str0(crc, ckpt_type_name(a->type));
        crc = crc_u64(crc, (uint64_t)a->ndims);
        for (int d = 0; d < a->ndims; d++) crc = crc_u64(crc, a->dims[d]);
        crc = crc_bytes(crc, a->data, a->n * ckpt_type_size(a->type));
    }
    for (size_t i = 0; i < c->n_attrs; i++) {
        const Attr *a = &c->attrs[i];
        crc = crc_str0(crc, "attr");
        crc = crc_str0(crc, a->name);
        crc = crc_str0(crc, ATTR_KIND_NAME[a->kind]);
        if (a->kind == ATTR_I64) crc = crc_u64(crc, (uint64_t)a->i);
        if (a->kind == ATTR_F64) crc = crc_bytes(crc, &a->f, sizeof a->f);
        if (a->kind == ATTR_STR) {
            crc = crc_u64(crc, strlen(a->s));
            crc = crc_bytes(crc, a->s, strlen(a->s));
        }
    }
    return crc;
}

/* ------------------------------------------------------------ HDF5 errors */

/* HDF5 prints its error stack to stderr by default; library code must not
 * print, so the automatic handler is switched off for the duration of one
 * call of ours and the previous handler restored afterwards. */
typedef struct {
    H5E_auto2_t fn;
    void *data;
} H5Quiet;

static void quiet_begin(H5Quiet *q)
{
    if (H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data) < 0) {
        q->fn = NULL;
        q->data = NULL;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void quiet_end(const H5Quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

typedef struct {
    char text[512];
} H5Detail;

/* Keeps the most specific message and the one above it: the innermost is
 * often generic ("addr overflow") and its caller says what was being read
 * ("truncated file: eof = ..."). */
static herr_t collect_detail(unsigned n, const H5E_error2_t *e, void *data)
{
    H5Detail *d = data;
    if (n > 1 || !e->desc) return 0;
    size_t len = strlen(d->text);
    snprintf(d->text + len, sizeof d->text - len, "%s%s", len ? "; " : "", e->desc);
    return 0;
}

/* Sets "what [HDF5: detail]" from the current HDF5 error stack; returns -1. */
static int h5_error(Error *err, const char *what)
{
    H5Detail d = {{0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_detail, &d);
    if (d.text[0]) return error_set(err, "%s [HDF5: %s]", what, d.text);
    return error_set(err, "%s", what);
}

static void h5_close_id(hid_t id)
{
    if (id < 0) return;
    switch (H5Iget_type(id)) {
    case H5I_FILE: H5Fclose(id); break;
    case H5I_GROUP: H5Gclose(id); break;
    case H5I_DATASET: H5Dclose(id); break;
    case H5I_DATASPACE: H5Sclose(id); break;
    case H5I_DATATYPE: H5Tclose(id); break;
    case H5I_ATTR: H5Aclose(id); break;
    case H5I_GENPROP_LST: H5Pclose(id); break;
    default: break;
    }
}

/* -------------------------------------------------------------- names */

static bool name_char_ok(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
           ch == '_' || ch == '-' || ch == '.';
}

/* Components of [A-Za-z0-9_.-]+ other than "." and "..", separated by single
 * slashes; slashes only when path is true. */
static bool name_ok(const char *name, bool path)
{
    if (strlen(name) > CKPT_NAME_MAX) return false;
    size_t comp = 0;
    const char *start = name;
    for (const char *p = name;; p++) {
        if (*p == '/' || *p == '\0') {
            if (comp == 0) return false;
            if ((comp == 1 && start[0] == '.') || (comp == 2 && start[0] == '.' && start[1] == '.'))
                return false;
            if (*p == '\0') return true;
            if (!path) return false;
            comp = 0;
            start = p + 1;
        } else if (!name_char_ok(*p)) {
            return false;
        } else {
            comp++;
        }
    }
}

/* True when a is b or a group above b ("x" and "x/y"). */
static bool name_covers(const char *a, const char *b)
{
    size_t n = strlen(a);
    return strncmp(a, b, n) == 0 && (b[n] == '\0' || b[n] == '/');
}

static bool reserved_attr(const char *name)
{
    return strcmp(name, "format") == 0 || strcmp(name, "format_version") == 0 ||
           strcmp(name, "checksum") == 0;
}

/* ----------------------------------------------------------------- writer */

struct CheckpointWriter {
    Content content;
    bool failed;
    Error first; /* the first bad put, reported by ckpt_write */
};

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
    Attr f = {.name = strdup("format"), .kind = ATTR_STR, .s = strdup(CKPT_FORMAT_NAME)};
    Attr v = {.name = strdup("format_version"), .kind = ATTR_I64, .i = CKPT_FORMAT_VERSION};
    if (!f.name || !f.s || !v.name) {
        free(f.name);
        free(f.s);
        free(v.name);
        return -1;
    }
    if (content_add_attr(&w->content, &f)) {
        free(v.name);
        return -1;
    }
    return content_add_attr(&w->content, &v);
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
    content_free(&w->content);
    free(w);
}

static int check_array_name(CheckpointWriter *w, const char *name)
{
    if (!name || !name_ok(name, true))
        return writer_fail(w,
                           "invalid array name '%s' (components of [A-Za-z0-9_.-] joined by '/', "
                           "at most %d characters)",
                           name ? name : "(null)", CKPT_NAME_MAX);
    for (size_t i = 0; i < w->content.n_arrays; i++) {
        const char *old = w->content.arrays[i].name;
        if (strcmp(old, name) == 0) return writer_fail(w, "array '%s' put twice", name);
        if (name_covers(old, name) || name_covers(name, old))
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
    Array a = {.type = t, .ndims = ndims, .n = 1};
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
    if (content_add_array(&w->content, &a))
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
static int put_attr(CheckpointWriter *w, const char *name, Attr *a)
{
    if (!name || !name_ok(name, false)) {
        free(a->s);
        return writer_fail(
            w,
            "invalid attribute name '%s' (one component of [A-Za-z0-9_.-], at most %d characters)",
            name ? name : "(null)", CKPT_NAME_MAX);
    }
    if (reserved_attr(name) || find_attr(&w->content, name)) {
        free(a->s);
        return writer_fail(w, "attribute '%s' %s", name,
                           reserved_attr(name) ? "is reserved" : "set twice");
    }
    a->name = strdup(name);
    if (!a->name) {
        free(a->s);
        return writer_fail(w, "attribute '%s': out of memory", name);
    }
    if (content_add_attr(&w->content, a))
        return writer_fail(w, "attribute '%s': out of memory", name);
    return 0;
}

int ckpt_attr_i64(CheckpointWriter *w, const char *name, int64_t v)
{
    if (!w) return -1;
    Attr a = {.kind = ATTR_I64, .i = v};
    return put_attr(w, name, &a);
}

int ckpt_attr_f64(CheckpointWriter *w, const char *name, double v)
{
    if (!w) return -1;
    Attr a = {.kind = ATTR_F64, .f = v};
    return put_attr(w, name, &a);
}

int ckpt_attr_str(CheckpointWriter *w, const char *name, const char *s)
{
    if (!w) return -1;
    if (!s) return writer_fail(w, "attribute '%s': NULL string", name ? name : "(null)");
    Attr a = {.kind = ATTR_STR, .s = strdup(s)};
    if (!a.s) return writer_fail(w, "attribute '%s': out of memory", name ? name : "(null)");
    return put_attr(w, name, &a);
}

/* ------------------------------------------------------------ HDF5 write */

/* Object creation properties shared by every group and dataset: no
 * timestamps, so equal content gives byte-identical files. */
typedef struct {
    hid_t gcpl, dcpl;
} CreateProps;

static int ensure_groups(hid_t fid, const char *name, const CreateProps *cp, Error *err)
{
    char prefix[CKPT_NAME_MAX + 1];
    for (const char *p = strchr(name, '/'); p; p = strchr(p + 1, '/')) {
        size_t len = (size_t)(p - name);
        if (len >= sizeof prefix) return error_set(err, "array name '%s' too long", name);
        memcpy(prefix, name, len);
        prefix[len] = '\0';
        htri_t exists = H5Lexists(fid, prefix, H5P_DEFAULT);
        if (exists < 0) return h5_error(err, "checking a group");
        if (exists) continue;
        hid_t g = H5Gcreate2(fid, prefix, H5P_DEFAULT, cp->gcpl, H5P_DEFAULT);
        if (g < 0) {
            char what[1100];
            snprintf(what, sizeof what, "creating group '%s'", prefix);
            return h5_error(err, what);
        }
        H5Gclose(g);
    }
    return 0;
}

static int write_array(hid_t fid, const Array *a, const CreateProps *cp, Error *err)
{
    if (ensure_groups(fid, a->name, cp, err)) return -1;
    hsize_t dims[CKPT_MAX_DIMS];
    for (int d = 0; d < a->ndims; d++) dims[d] = a->dims[d];
    hid_t space = H5Screate_simple(a->ndims, dims, NULL);
    hid_t dset = space < 0 ? -1
                           : H5Dcreate2(fid, a->name, file_type(a->type), space, H5P_DEFAULT,
                                        cp->dcpl, H5P_DEFAULT);
    int rc = 0;
    if (dset < 0) {
        rc = h5_error(err, "creating dataset");
    } else if (a->n > 0 &&
               H5Dwrite(dset, mem_type(a->type), H5S_ALL, H5S_ALL, H5P_DEFAULT, a->data) < 0) {
        rc = h5_error(err, "writing dataset");
    }
    h5_close_id(dset);
    h5_close_id(space);
    if (rc) error_prefix(err, "array '%s': ", a->name);
    return rc;
}

/* Fixed-length, so the bytes live in the attribute message inside the
 * root's object header, which HDF5 checksums.  Variable-length strings live
 * in the global heap, which has no checksum: a damaged one crashes or hangs
 * the HDF5 library instead of failing cleanly. */
static hid_t string_type(const char *s)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, strlen(s) + 1) < 0 || H5Tset_strpad(t, H5T_STR_NULLTERM) < 0 ||
        H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* A scalar attribute on the root group. */
static int write_scalar_attr(hid_t fid, const char *name, hid_t ftype, hid_t mtype,
                             const void *value, Error *err)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = space < 0 ? -1 : H5Acreate2(fid, name, ftype, space, H5P_DEFAULT, H5P_DEFAULT);
    int rc = 0;
    if (attr < 0 || H5Awrite(attr, mtype, value) < 0) {
        char what[600];
        snprintf(what, sizeof what, "writing attribute '%s'", name);
        rc = h5_error(err, what);
    }
    h5_close_id(attr);
    h5_close_id(space);
    return rc;
}

static int write_attr(hid_t fid, const Attr *a, Error *err)
{
    if (a->kind == ATTR_I64)
        return write_scalar_attr(fid, a->name, H5T_STD_I64LE, H5T_NATIVE_INT64, &a->i, err);
    if (a->kind == ATTR_F64)
        return write_scalar_attr(fid, a->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &a->f, err);
    hid_t st = string_type(a->s);
    if (st < 0) return h5_error(err, "making a string type");
    int rc = write_scalar_attr(fid, a->name, st, st, a->s, err);
    H5Tclose(st);
    return rc;
}

static int make_props(hid_t *fcpl, hid_t *fapl, CreateProps *cp)
{
    *fcpl = H5Pcreate(H5P_FILE_CREATE);
    *fapl = H5Pcreate(H5P_FILE_ACCESS);
    cp->gcpl = H5Pcreate(H5P_GROUP_CREATE);
    cp->dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (*fcpl < 0 || *fapl < 0 || cp->gcpl < 0 || cp->dcpl < 0) return -1;
    /* The 1.8 file format checksums HDF5's own metadata (superblock v2,
     * object headers v2), so damage there is detected too; h5py reads it. */
    if (H5Pset_libver_bounds(*fapl, H5F_LIBVER_V18, H5F_LIBVER_V18) < 0) return -1;
    /* STRONG: H5Fclose really closes the file, so the fsync that follows
     * sees every byte. */
    if (H5Pset_fclose_degree(*fapl, H5F_CLOSE_STRONG) < 0) return -1;
    if (H5Pset_obj_track_times(*fcpl, 0) < 0 || H5Pset_obj_track_times(cp->gcpl, 0) < 0 ||
        H5Pset_obj_track_times(cp->dcpl, 0) < 0)
        return -1;
    /* Every element is written, so a fill pass would be wasted I/O. */
    if (H5Pset_fill_time(cp->dcpl, H5D_FILL_TIME_NEVER) < 0) return -1;
    return 0;
}

static int write_content(hid_t fid, const Content *c, const CreateProps *cp, Error *err)
{
    for (size_t i = 0; i < c->n_arrays; i++)
        if (write_array(fid, &c->arrays[i], cp, err)) return -1;
    for (size_t i = 0; i < c->n_attrs; i++)
        if (write_attr(fid, &c->attrs[i], err)) return -1;
    uint32_t crc = content_checksum(c);
    return write_scalar_attr(fid, "checksum", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc, err);
}

static int write_file(const Content *c, const char *tmp, Error *err)
{
    hid_t fcpl = -1, fapl = -1, fid = -1;
    CreateProps cp = {-1, -1};
    int rc = 0;
    if (make_props(&fcpl, &fapl, &cp)) {
        rc = h5_error(err, "setting up HDF5 properties");
        goto done;
    }
    fid = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (fid < 0) {
        rc = h5_error(err, "cannot create the temporary file");
        goto done;
    }
    rc = write_content(fid, c, &cp, err);
    hid_t f = fid;
    fid = -1;
    /* Closing flushes the metadata, so its failure is a failed write. */
    if (H5Fclose(f) < 0 && rc == 0) rc = h5_error(err, "closing the temporary file");
done:
    h5_close_id(fid);
    h5_close_id(fcpl);
    h5_close_id(fapl);
    h5_close_id(cp.gcpl);
    h5_close_id(cp.dcpl);
    return rc;
}

/* A sorted shallow copy of the writer's content: the writer stays const and
 * keeps its put order. */
static int sorted_view(const Content *c, Content *view)
{
    *view = (Content){0};
    view->arrays = malloc((c->n_arrays ? c->n_arrays : 1) * sizeof *view->arrays);
    view->attrs = malloc((c->n_attrs ? c->n_attrs : 1) * sizeof *view->attrs);
    if (!view->arrays || !view->attrs) {
        free(view->arrays);
        free(view->attrs);
        return -1;
    }
    if (c->n_arrays) memcpy(view->arrays, c->arrays, c->n_arrays * sizeof *c->arrays);
    if (c->n_attrs) memcpy(view->attrs, c->attrs, c->n_attrs * sizeof *c->attrs);
    view->n_arrays = c->n_arrays;
    view->n_attrs = c->n_attrs;
    content_sort(view);
    return 0;
}

int ckpt_write(const CheckpointWriter *w, const char *path, Error *err)
{
    if (!w) return error_set(err, "%s: out of memory creating the checkpoint writer", path);
    if (w->failed) return error_set(err, "%s: %s", path, w->first.msg);
    char tmp[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, path, err)) return -1;
    Content view;
    if (sorted_view(&w->content, &view)) return error_set(err, "%s: out of memory", path);
    H5Quiet q;
    quiet_begin(&q);
    int rc = write_file(&view, tmp, err);
    quiet_end(&q);
    free(view.arrays); /* shallow: the names and data belong to the writer */
    free(view.attrs);
    if (rc) {
        unlink(tmp);
        return error_prefix(err, "%s: ", path);
    }
    return fs_publish(tmp, path, err);
}

/* ------------------------------------------------------------- HDF5 read */

struct Checkpoint {
    char *path;
    Content content;
    uint32_t checksum;
};

/* Reports errors with the object's full name; the path is added by ckpt_open. */
static int read_fail(Error *err, const char *kind, const char *name, const char *what)
{
    char buf[1200];
    snprintf(buf, sizeof buf, "%s '%s' %s", kind, name, what);
    return h5_error(err, buf);
}

static int type_of_dataset(hid_t dset, const char *name, CkptType *t, Error *err)
{
    hid_t ft = H5Dget_type(dset);
    if (ft < 0) return read_fail(err, "array", name, "has an unreadable type");
    H5T_class_t cls = H5Tget_class(ft);
    size_t size = H5Tget_size(ft);
    H5T_sign_t sign = cls == H5T_INTEGER ? H5Tget_sign(ft) : H5T_SGN_ERROR;
    H5Tclose(ft);
    if (cls == H5T_FLOAT && size == 4) *t = CKPT_F32;
    else if (cls == H5T_FLOAT && size == 8) *t = CKPT_F64;
    else if (cls == H5T_INTEGER && size == 8 && sign == H5T_SGN_2) *t = CKPT_I64;
    else if (cls == H5T_INTEGER && size == 8 && sign == H5T_SGN_NONE) *t = CKPT_U64;
    else if (cls == H5T_INTEGER && size == 1 && sign == H5T_SGN_NONE) *t = CKPT_U8;
    else
        return error_set(err, "array '%s' has an unsupported type (f32 f64 i64 u64 u8 only)", name);
    return 0;
}

static int shape_of_dataset(hid_t dset, const char *name, Array *a, Error *err)
{
    hid_t space = H5Dget_space(dset);
    if (space < 0) return read_fail(err, "array", name, "has an unreadable shape");
    int nd = H5Sget_simple_extent_ndims(space);
    hsize_t dims[H5S_MAX_RANK];
    if (nd < 1 || nd > CKPT_MAX_DIMS || H5Sget_simple_extent_dims(space, dims, NULL) < 0) {
        H5Sclose(space);
        return error_set(err, "array '%s' has an unsupported shape (%d dimensions)", name, nd);
    }
    H5Sclose(space);
    a->ndims = nd;
    a->n = 1;
    for (int d = 0; d < nd; d++) {
        a->dims[d] = dims[d];
        if (dims[d] != 0 && a->n > SIZE_MAX / ckpt_type_size(a->type) / dims[d])
            return error_set(err, "array '%s' is too large", name);
        a->n *= (size_t)dims[d];
    }
    return 0;
}

static int read_dataset(hid_t dset, const char *name, Content *c, Error *err)
{
    Array a = {0};
    if (type_of_dataset(dset, name, &a.type, err)) return -1;
    if (shape_of_dataset(dset, name, &a, err)) return -1;
    size_t bytes = a.n * ckpt_type_size(a.type);
    a.data = malloc(bytes ? bytes : 1);
    a.name = strdup(name);
    if (!a.data || !a.name) {
        free(a.data);
        free(a.name);
        return error_set(err, "array '%s': out of memory", name);
    }
    if (a.n > 0 && H5Dread(dset, mem_type(a.type), H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data) < 0) {
        free(a.data);
        free(a.name);
        return read_fail(err, "array", name, "is unreadable");
    }
    if (content_add_array(c, &a)) return error_set(err, "array '%s': out of memory", name);
    return 0;
}

static int read_group(hid_t gid, const char *prefix, Content *c, Error *err);

/* One link of a group: a dataset (an array) or a subgroup, nothing else. */
static int read_link(hid_t gid, const char *link, const char *full, Content *c, Error *err)
{
    H5L_info_t li;
    if (H5Lget_info(gid, link, &li, H5P_DEFAULT) < 0)
        return read_fail(err, "object", full, "is unreadable");
    if (li.type != H5L_TYPE_HARD)
        return error_set(err, "object '%s' is a link, not an array or group", full);
    hid_t oid = H5Oopen(gid, link, H5P_DEFAULT);
    if (oid < 0) return read_fail(err, "object", full, "is unreadable");
    int rc;
    H5I_type_t kind = H5Iget_type(oid);
    if (kind == H5I_GROUP) rc = read_group(oid, full, c, err);
    else if (kind == H5I_DATASET) rc = read_dataset(oid, full, c, err);
    else rc = error_set(err, "object '%s' is neither an array nor a group", full);
    h5_close_id(oid);
    return rc;
}

static int read_group(hid_t gid, const char *prefix, Content *c, Error *err)
{
    H5G_info_t info;
    if (H5Gget_info(gid, &info) < 0)
        return read_fail(err, "group", prefix[0] ? prefix : "/", "is unreadable");
    for (hsize_t i = 0; i < info.nlinks; i++) {
        char link[CKPT_NAME_MAX + 2], full[CKPT_NAME_MAX + 2];
        ssize_t len = H5Lget_name_by_idx(gid, ".", H5_INDEX_NAME, H5_ITER_INC, i, link, sizeof link,
                                         H5P_DEFAULT);
        if (len < 0)
            return read_fail(err, "group", prefix[0] ? prefix : "/", "has an unreadable member");
        int n = snprintf(full, sizeof full, "%s%s%s", prefix, prefix[0] ? "/" : "", link);
        if ((size_t)len >= sizeof link || n < 0 || (size_t)n > CKPT_NAME_MAX)
            return error_set(err, "a member of group '%s' has a name longer than %d characters",
                             prefix[0] ? prefix : "/", CKPT_NAME_MAX);
        if (read_link(gid, link, full, c, err)) return -1;
    }
    return 0;
}

static int read_string_attr(hid_t attr, hid_t ft, char **out)
{
    /* Variable-length strings are what h5py writes for a Python str. */
    if (H5Tis_variable_str(ft) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        char *s = NULL;
        int rc = (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 &&
                  H5Tset_cset(mt, H5Tget_cset(ft)) >= 0 && H5Aread(attr, mt, &s) >= 0)
                     ? 0
                     : -1;
        if (rc == 0) *out = strdup(s ? s : "");
        if (s) H5free_memory(s);
        h5_close_id(mt);
        return rc == 0 && *out ? 0 : -1;
    }
    /* Ours (see string_type); the buffer is one longer than the string type
     * so that a NULLPAD or SPACEPAD string is terminated too. */
    size_t size = H5Tget_size(ft);
    *out = calloc(size + 1, 1);
    if (!*out || H5Aread(attr, ft, *out) < 0) {
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

typedef struct {
    Content *content;
    bool have_checksum;
    uint32_t checksum;
    Error *err;
} AttrScan;

/* The value of one user attribute, by its HDF5 type class. */
static int read_user_attr(hid_t attr, hid_t ft, Attr *a)
{
    switch (H5Tget_class(ft)) {
    case H5T_INTEGER:
        a->kind = ATTR_I64;
        return H5Aread(attr, H5T_NATIVE_INT64, &a->i) < 0 ? -1 : 0;
    case H5T_FLOAT: a->kind = ATTR_F64; return H5Aread(attr, H5T_NATIVE_DOUBLE, &a->f) < 0 ? -1 : 0;
    case H5T_STRING: a->kind = ATTR_STR; return read_string_attr(attr, ft, &a->s);
    default: return 1;
    }
}

static int read_attr_value(hid_t attr, const char *name, AttrScan *s)
{
    hid_t space = H5Aget_space(attr);
    H5S_class_t sc = space < 0 ? H5S_NO_CLASS : H5Sget_simple_extent_type(space);
    h5_close_id(space);
    if (sc != H5S_SCALAR) return error_set(s->err, "attribute '%s' is not a scalar", name);
    hid_t ft = H5Aget_type(attr);
    if (ft < 0) return read_fail(s->err, "attribute", name, "has an unreadable type");
    if (strcmp(name, "checksum") == 0) {
        bool is_int = H5Tget_class(ft) == H5T_INTEGER;
        H5Tclose(ft);
        if (!is_int) return error_set(s->err, "attribute 'checksum' is not an integer");
        if (H5Aread(attr, H5T_NATIVE_UINT32, &s->checksum) < 0)
            return read_fail(s->err, "attribute", name, "is unreadable");
        s->have_checksum = true;
        return 0;
    }
    Attr a = {0};
    int rc = read_user_attr(attr, ft, &a);
    if (rc < 0)
        read_fail(s->err, "attribute", name, "is unreadable"); /* before H5Tclose clears it */
    if (rc > 0)
        error_set(s->err, "attribute '%s' has an unsupported type (i64 f64 str only)", name);
    H5Tclose(ft);
    if (rc) {
        free(a.s);
        return -1;
    }
    a.name = strdup(name);
    if (!a.name) {
        free(a.s);
        return error_set(s->err, "attribute '%s': out of memory", name);
    }
    if (content_add_attr(s->content, &a))
        return error_set(s->err, "attribute '%s': out of memory", name);
    return 0;
}

static herr_t scan_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    (void)info;
    AttrScan *s = data;
    hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
    if (attr < 0) return read_fail(s->err, "attribute", name, "is unreadable");
    int rc = read_attr_value(attr, name, s);
    H5Aclose(attr);
    return rc;
}

static int read_attrs(hid_t fid, Content *c, bool *have_checksum, uint32_t *checksum, Error *err)
{
    AttrScan s = {.content = c, .err = err};
    err->msg[0] = '\0';
    if (H5Aiterate2(fid, H5_INDEX_NAME, H5_ITER_INC, NULL, scan_attr, &s) < 0) {
        /* A failure inside HDF5's iteration leaves our message empty. */
        if (!err->msg[0]) h5_error(err, "root attributes are unreadable");
        return -1;
    }
    *have_checksum = s.have_checksum;
    *checksum = s.checksum;
    return 0;
}

static int read_file(const char *path, Content *c, bool *have_checksum, uint32_t *checksum,
                     Error *err)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        h5_error(err, "setting up HDF5 properties");
        h5_close_id(fapl);
        return -1;
    }
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    /* Any HDF5 call resets the error stack, so the detail is taken first. */
    if (fid < 0) h5_error(err, "not a readable HDF5 file; truncated or damaged");
    H5Pclose(fapl);
    if (fid < 0) return -1;
    hid_t root = H5Gopen2(fid, "/", H5P_DEFAULT);
    int rc = root < 0 ? h5_error(err, "root group is unreadable") : read_group(root, "", c, err);
    if (rc == 0) rc = read_attrs(root, c, have_checksum, checksum, err);
    h5_close_id(root);
    H5Fclose(fid);
    return rc;
}

static int check_format(const Content *c, Error *err)
{
    const Attr *f = find_attr(c, "format");
    if (!f) return error_set(err, "not a modpo checkpoint (attribute 'format' missing)");
    if (f->kind != ATTR_STR || strcmp(f->s, CKPT_FORMAT_NAME) != 0)
        return error_set(err, "not a modpo checkpoint (attribute 'format' is not \"%s\")",
                         CKPT_FORMAT_NAME);
    const Attr *v = find_attr(c, "format_version");
    if (!v || v->kind != ATTR_I64)
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
    H5Quiet q;
    quiet_begin(&q);
    bool have_checksum = false;
    int rc = read_file(path, &c->content, &have_checksum, &c->checksum, e);
    quiet_end(&q);
    if (rc == 0) rc = check_format(&c->content, e);
    if (rc == 0 && !have_checksum) rc = error_set(e, "attribute 'checksum' missing");
    if (rc == 0) {
        content_sort(&c->content);
        uint32_t computed = content_checksum(&c->content);
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
    content_free(&c->content);
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
    return find_array(&c->content, name) != NULL;
}

static const Array *need_array(const Checkpoint *c, const char *name, Error *err)
{
    const Array *a = find_array(&c->content, name);
    if (!a) error_set(err, "%s: array '%s' missing", c->path, name);
    return a;
}

int ckpt_info(const Checkpoint *c, const char *name, CkptType *t, size_t *n, int *ndims,
              uint64_t dims[CKPT_MAX_DIMS], Error *err)
{
    const Array *a = need_array(c, name, err);
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
    const Array *a = need_array(c, name, err);
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
    return find_attr(&c->content, name) != NULL;
}

static const Attr *need_attr(const Checkpoint *c, const char *name, AttrKind kind, Error *err)
{
    const Attr *a = find_attr(&c->content, name);
    if (!a) {
        error_set(err, "%s: attribute '%s' missing", c->path, name);
        return NULL;
    }
    if (a->kind != kind) {
        error_set(err, "%s: attribute '%s' is %s, expected %s", c->path, name,
                  ATTR_KIND_NAME[a->kind], ATTR_KIND_NAME[kind]);
        return NULL;
    }
    return a;
}

int ckpt_get_attr_i64(const Checkpoint *c, const char *name, int64_t *v, Error *err)
{
    const Attr *a = need_attr(c, name, ATTR_I64, err);
    if (!a) return -1;
    *v = a->i;
    return 0;
}

int ckpt_get_attr_f64(const Checkpoint *c, const char *name, double *v, Error *err)
{
    const Attr *a = need_attr(c, name, ATTR_F64, err);
    if (!a) return -1;
    *v = a->f;
    return 0;
}

int ckpt_get_attr_str(const Checkpoint *c, const char *name, const char **s, Error *err)
{
    const Attr *a = need_attr(c, name, ATTR_STR, err);
    if (!a) return -1;
    *s = a->s;
    return 0;
}

/* Decoding an HDF5 checkpoint file into its content: every array (dataset)
 * and root attribute, and the stored checksum.  Errors name the object at
 * fault; the caller adds the path. */
#include "checkpoint_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "checkpoint_hdf5.h"

/* Reports errors with the object's full name; the path is added by ckpt_open. */
static int read_fail(Error *err, const char *kind, const char *name, const char *what)
{
    char buf[1200];
    snprintf(buf, sizeof buf, "%s '%s' %s", kind, name, what);
    return ckpt_h5_error(err, buf);
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

static int shape_of_dataset(hid_t dset, const char *name, CkptArray *a, Error *err)
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

static int read_dataset(hid_t dset, const char *name, CkptContent *c, Error *err)
{
    CkptArray a = {0};
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
    if (a.n > 0 &&
        H5Dread(dset, ckpt_mem_type(a.type), H5S_ALL, H5S_ALL, H5P_DEFAULT, a.data) < 0) {
        free(a.data);
        free(a.name);
        return read_fail(err, "array", name, "is unreadable");
    }
    if (ckpt_content_add_array(c, &a)) return error_set(err, "array '%s': out of memory", name);
    return 0;
}

static int read_group(hid_t gid, const char *prefix, CkptContent *c, Error *err);

/* One link of a group: a dataset (an array) or a subgroup, nothing else. */
static int read_link(hid_t gid, const char *link, const char *full, CkptContent *c, Error *err)
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
    ckpt_h5_close(oid);
    return rc;
}

static int read_group(hid_t gid, const char *prefix, CkptContent *c, Error *err)
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
        ckpt_h5_close(mt);
        return rc == 0 && *out ? 0 : -1;
    }
    /* Ours (see string_type in checkpoint_write.c); the buffer is one longer
     * than the string type so that a NULLPAD or SPACEPAD string is terminated
     * too. */
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
    CkptContent *content;
    bool have_checksum;
    uint32_t checksum;
    Error *err;
} AttrScan;

/* The value of one user attribute, by its HDF5 type class. */
static int read_user_attr(hid_t attr, hid_t ft, CkptAttr *a)
{
    switch (H5Tget_class(ft)) {
    case H5T_INTEGER:
        a->kind = CKPT_ATTR_I64;
        return H5Aread(attr, H5T_NATIVE_INT64, &a->i) < 0 ? -1 : 0;
    case H5T_FLOAT:
        a->kind = CKPT_ATTR_F64;
        return H5Aread(attr, H5T_NATIVE_DOUBLE, &a->f) < 0 ? -1 : 0;
    case H5T_STRING: a->kind = CKPT_ATTR_STR; return read_string_attr(attr, ft, &a->s);
    default: return 1;
    }
}

static int read_attr_value(hid_t attr, const char *name, AttrScan *s)
{
    hid_t space = H5Aget_space(attr);
    H5S_class_t sc = space < 0 ? H5S_NO_CLASS : H5Sget_simple_extent_type(space);
    ckpt_h5_close(space);
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
    CkptAttr a = {0};
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
    if (ckpt_content_add_attr(s->content, &a))
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

static int read_attrs(hid_t fid, CkptContent *c, bool *have_checksum, uint32_t *checksum,
                      Error *err)
{
    AttrScan s = {.content = c, .err = err};
    err->msg[0] = '\0';
    if (H5Aiterate2(fid, H5_INDEX_NAME, H5_ITER_INC, NULL, scan_attr, &s) < 0) {
        /* A failure inside HDF5's iteration leaves our message empty. */
        if (!err->msg[0]) ckpt_h5_error(err, "root attributes are unreadable");
        return -1;
    }
    *have_checksum = s.have_checksum;
    *checksum = s.checksum;
    return 0;
}

int ckpt_read_file(const char *path, CkptContent *c, bool *have_checksum, uint32_t *checksum,
                   Error *err)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG) < 0) {
        ckpt_h5_error(err, "setting up HDF5 properties");
        ckpt_h5_close(fapl);
        return -1;
    }
    hid_t fid = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    /* Any HDF5 call resets the error stack, so the detail is taken first. */
    if (fid < 0) ckpt_h5_error(err, "not a readable HDF5 file; truncated or damaged");
    H5Pclose(fapl);
    if (fid < 0) return -1;
    hid_t root = H5Gopen2(fid, "/", H5P_DEFAULT);
    int rc = root < 0 ? ckpt_h5_error(err, "root group is unreadable")
                      : read_group(root, "", c, err);
    if (rc == 0) rc = read_attrs(root, c, have_checksum, checksum, err);
    ckpt_h5_close(root);
    H5Fclose(fid);
    return rc;
}


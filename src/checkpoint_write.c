/* Encoding a checkpoint writer's content as an HDF5 file, written atomically
 * (fs_util.h's protocol). */
#include "checkpoint_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "checkpoint_hdf5.h"
#include "fs_util.h"

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
        if (exists < 0) return ckpt_h5_error(err, "checking a group");
        if (exists) continue;
        hid_t g = H5Gcreate2(fid, prefix, H5P_DEFAULT, cp->gcpl, H5P_DEFAULT);
        if (g < 0) {
            char what[1100];
            snprintf(what, sizeof what, "creating group '%s'", prefix);
            return ckpt_h5_error(err, what);
        }
        H5Gclose(g);
    }
    return 0;
}

static int write_array(hid_t fid, const CkptArray *a, const CreateProps *cp, Error *err)
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
        rc = ckpt_h5_error(err, "creating dataset");
    } else if (a->n > 0 &&
               H5Dwrite(dset, ckpt_mem_type(a->type), H5S_ALL, H5S_ALL, H5P_DEFAULT, a->data) < 0) {
        rc = ckpt_h5_error(err, "writing dataset");
    }
    ckpt_h5_close(dset);
    ckpt_h5_close(space);
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
        rc = ckpt_h5_error(err, what);
    }
    ckpt_h5_close(attr);
    ckpt_h5_close(space);
    return rc;
}

static int write_attr(hid_t fid, const CkptAttr *a, Error *err)
{
    if (a->kind == CKPT_ATTR_I64)
        return write_scalar_attr(fid, a->name, H5T_STD_I64LE, H5T_NATIVE_INT64, &a->i, err);
    if (a->kind == CKPT_ATTR_F64)
        return write_scalar_attr(fid, a->name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &a->f, err);
    hid_t st = string_type(a->s);
    if (st < 0) return ckpt_h5_error(err, "making a string type");
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

static int write_content(hid_t fid, const CkptContent *c, const CreateProps *cp, Error *err)
{
    for (size_t i = 0; i < c->n_arrays; i++)
        if (write_array(fid, &c->arrays[i], cp, err)) return -1;
    for (size_t i = 0; i < c->n_attrs; i++)
        if (write_attr(fid, &c->attrs[i], err)) return -1;
    uint32_t crc = ckpt_content_checksum(c);
    return write_scalar_attr(fid, "checksum", H5T_STD_U32LE, H5T_NATIVE_UINT32, &crc, err);
}

static int write_file(const CkptContent *c, const char *tmp, Error *err)
{
    hid_t fcpl = -1, fapl = -1, fid = -1;
    CreateProps cp = {-1, -1};
    int rc = 0;
    if (make_props(&fcpl, &fapl, &cp)) {
        rc = ckpt_h5_error(err, "setting up HDF5 properties");
        goto done;
    }
    fid = H5Fcreate(tmp, H5F_ACC_TRUNC, fcpl, fapl);
    if (fid < 0) {
        rc = ckpt_h5_error(err, "cannot create the temporary file");
        goto done;
    }
    rc = write_content(fid, c, &cp, err);
    hid_t f = fid;
    fid = -1;
    /* Closing flushes the metadata, so its failure is a failed write. */
    if (H5Fclose(f) < 0 && rc == 0) rc = ckpt_h5_error(err, "closing the temporary file");
done:
    ckpt_h5_close(fid);
    ckpt_h5_close(fcpl);
    ckpt_h5_close(fapl);
    ckpt_h5_close(cp.gcpl);
    ckpt_h5_close(cp.dcpl);
    return rc;
}

/* A sorted shallow copy of the writer's content: the writer stays const and
 * keeps its put order. */
static int sorted_view(const CkptContent *c, CkptContent *view)
{
    *view = (CkptContent){0};
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
    ckpt_content_sort(view);
    return 0;
}

int ckpt_write(const CheckpointWriter *w, const char *path, Error *err)
{
    if (!w) return error_set(err, "%s: out of memory creating the checkpoint writer", path);
    if (w->failed) return error_set(err, "%s: %s", path, w->first.msg);
    char tmp[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, path, err)) return -1;
    CkptContent view;
    if (sorted_view(&w->content, &view)) return error_set(err, "%s: out of memory", path);
    CkptH5Quiet q;
    ckpt_h5_quiet_begin(&q);
    int rc = write_file(&view, tmp, err);
    ckpt_h5_quiet_end(&q);
    free(view.arrays); /* shallow: the names and data belong to the writer */
    free(view.attrs);
    if (rc) {
        unlink(tmp);
        return error_prefix(err, "%s: ", path);
    }
    return fs_publish(tmp, path, err);
}

/* HDF5 plumbing shared by the checkpoint writer and reader: silencing the
 * library's error printing, turning its error stack into our messages,
 * closing any identifier, and the in-memory element types. */
#include "checkpoint_hdf5.h"

#include <stdio.h>
#include <string.h>

hid_t ckpt_mem_type(CkptType t)
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

/* ------------------------------------------------------------ HDF5 errors */

void ckpt_h5_quiet_begin(CkptH5Quiet *q)
{
    if (H5Eget_auto2(H5E_DEFAULT, &q->fn, &q->data) < 0) {
        q->fn = NULL;
        q->data = NULL;
    }
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void ckpt_h5_quiet_end(const CkptH5Quiet *q) { H5Eset_auto2(H5E_DEFAULT, q->fn, q->data); }

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
int ckpt_h5_error(Error *err, const char *what)
{
    H5Detail d = {{0}};
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_detail, &d);
    if (d.text[0]) return error_set(err, "%s [HDF5: %s]", what, d.text);
    return error_set(err, "%s", what);
}

void ckpt_h5_close(hid_t id)
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

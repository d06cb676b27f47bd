/* Private to the checkpoint implementation: HDF5 helpers shared by the
 * writer (checkpoint_write.c) and the reader (checkpoint_read.c,
 * checkpoint_reader.c). */
#ifndef MODPO_CHECKPOINT_HDF5_H
#define MODPO_CHECKPOINT_HDF5_H

#include <hdf5.h>

#include "checkpoint.h"
#include "error.h"

/* The native (in-memory) HDF5 type of an element type. */
hid_t ckpt_mem_type(CkptType t);

/* HDF5 prints its error stack to stderr by default; library code must not
 * print, so the automatic handler is switched off for the duration of one
 * call of ours and the previous handler restored afterwards. */
typedef struct {
    H5E_auto2_t fn;
    void *data;
} CkptH5Quiet;

void ckpt_h5_quiet_begin(CkptH5Quiet *q);
void ckpt_h5_quiet_end(const CkptH5Quiet *q);

/* Sets "what [HDF5: detail]" from the current HDF5 error stack; returns -1. */
int ckpt_h5_error(Error *err, const char *what);

/* Closes an identifier of any kind; a negative one is ignored. */
void ckpt_h5_close(hid_t id);

#endif

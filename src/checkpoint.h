/* Checkpoint file: a set of named arrays and scalar attributes in one HDF5
 * file, written atomically and protected by a CRC32 over its whole logical
 * content.  docs/checkpoint-format.md is the layout for readers (h5py).
 *
 * Writing collects copies of the arrays, so a trainer can fill a writer from
 * live buffers and keep training while it is written:
 *
 *     CheckpointWriter *w = ckpt_writer_new();
 *     ckpt_put_f32(w, "lora/params", params, n);
 *     ckpt_attr_i64(w, "step", step);
 *     ckpt_attr_str(w, "stage", "modpo");
 *     int rc = ckpt_write(w, path, err);     // also reports any bad put
 *     ckpt_writer_free(w);
 *
 * The put functions record the first problem (a bad or duplicate name) in
 * the writer and ckpt_write reports it, so a long series of puts needs one
 * check.  Reading verifies everything on open and then hands out copies:
 *
 *     Checkpoint *c = ckpt_open(path, err);  // NULL: missing, truncated, corrupt
 *     ckpt_get_f32(c, "lora/params", params, n, err);
 *     ckpt_get_attr_i64(c, "step", &step, err);
 *     ckpt_close(c);
 *
 * Names: array names are paths of components [A-Za-z0-9_.-]+ separated by
 * '/', at most CKPT_NAME_MAX characters; the slashes become HDF5 groups
 * ("lora/params" is dataset "params" in group "lora"), and a name cannot be
 * both an array and a group.  Attribute names are
 * one component and live on the root group; "format", "format_version" and
 * "checksum" are reserved. */
#ifndef MODPO_CHECKPOINT_H
#define MODPO_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define CKPT_FORMAT_NAME "modpo-checkpoint"
#define CKPT_FORMAT_VERSION 1
#define CKPT_MAX_DIMS 8
#define CKPT_NAME_MAX 255 /* characters in a full array or attribute name */

typedef enum { CKPT_F32, CKPT_F64, CKPT_I64, CKPT_U64, CKPT_U8 } CkptType;

/* "f32", "f64", "i64", "u64", "u8": the codes used in messages and in the
 * checksum definition. */
const char *ckpt_type_name(CkptType t);
size_t ckpt_type_size(CkptType t);

/* ---- writing ---- */

typedef struct CheckpointWriter CheckpointWriter;

CheckpointWriter *ckpt_writer_new(void); /* NULL only when out of memory */
void ckpt_writer_free(CheckpointWriter *w);

/* An array of any supported type and shape (ndims 1..CKPT_MAX_DIMS, a zero
 * dimension allowed); data is copied. */
int ckpt_put(CheckpointWriter *w, const char *name, CkptType t, const void *data, int ndims,
             const uint64_t *dims);
/* One-dimensional arrays of n elements. */
int ckpt_put_f32(CheckpointWriter *w, const char *name, const float *x, size_t n);
int ckpt_put_f64(CheckpointWriter *w, const char *name, const double *x, size_t n);
int ckpt_put_i64(CheckpointWriter *w, const char *name, const int64_t *x, size_t n);
int ckpt_put_u64(CheckpointWriter *w, const char *name, const uint64_t *x, size_t n);
int ckpt_put_u8(CheckpointWriter *w, const char *name, const uint8_t *x, size_t n);

int ckpt_attr_i64(CheckpointWriter *w, const char *name, int64_t v);
int ckpt_attr_f64(CheckpointWriter *w, const char *name, double v);
int ckpt_attr_str(CheckpointWriter *w, const char *name, const char *s);

/* Writes the file atomically (see fs_util.h): on failure an existing file at
 * path is untouched and no temporary file is left behind. */
int ckpt_write(const CheckpointWriter *w, const char *path, Error *err);

/* ---- reading ---- */

typedef struct Checkpoint Checkpoint;

/* Reads and verifies the whole file: HDF5 structure, format name and
 * version, supported types, checksum.  Errors start with the path and name
 * the dataset or attribute at fault, or say "checksum mismatch". */
Checkpoint *ckpt_open(const char *path, Error *err);
void ckpt_close(Checkpoint *c);

/* ckpt_open + ckpt_close. */
int ckpt_verify(const char *path, Error *err);

const char *ckpt_path(const Checkpoint *c);
uint32_t ckpt_checksum(const Checkpoint *c);

/* Arrays in name order, for tools that copy or reshard a whole checkpoint. */
size_t ckpt_n_arrays(const Checkpoint *c);
const char *ckpt_array_name(const Checkpoint *c, size_t i);

int ckpt_has(const Checkpoint *c, const char *name);
/* Type, number of elements and shape of an array; ndims/dims may be NULL. */
int ckpt_info(const Checkpoint *c, const char *name, CkptType *t, size_t *n, int *ndims,
              uint64_t dims[CKPT_MAX_DIMS], Error *err);

/* Copies array name into dst, which holds n_expected elements of type t.  A
 * missing array, another type or another element count is an error naming
 * the file and the array. */
int ckpt_get(const Checkpoint *c, const char *name, CkptType t, void *dst, size_t n_expected,
             Error *err);
int ckpt_get_f32(const Checkpoint *c, const char *name, float *dst, size_t n, Error *err);
int ckpt_get_f64(const Checkpoint *c, const char *name, double *dst, size_t n, Error *err);
int ckpt_get_i64(const Checkpoint *c, const char *name, int64_t *dst, size_t n, Error *err);
int ckpt_get_u64(const Checkpoint *c, const char *name, uint64_t *dst, size_t n, Error *err);
int ckpt_get_u8(const Checkpoint *c, const char *name, uint8_t *dst, size_t n, Error *err);

int ckpt_has_attr(const Checkpoint *c, const char *name);
int ckpt_get_attr_i64(const Checkpoint *c, const char *name, int64_t *v, Error *err);
int ckpt_get_attr_f64(const Checkpoint *c, const char *name, double *v, Error *err);
/* *s points into the checkpoint and lives until ckpt_close. */
int ckpt_get_attr_str(const Checkpoint *c, const char *name, const char **s, Error *err);

#endif

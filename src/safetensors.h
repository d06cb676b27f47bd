/* The safetensors format (https://github.com/huggingface/safetensors):
 *     u64 little-endian N | N bytes of JSON header | data
 * The header maps each tensor name to {dtype, shape, data_offsets: [begin, end]}
 * (offsets relative to the start of the data) plus an optional "__metadata__"
 * object of string values.  Files are read through mmap, so opening a 13 GB
 * shard costs nothing until a tensor is converted.  Like the reference Rust
 * reader, a file whose tensors do not tile the data exactly is rejected.
 *
 * Byte order: the format is little-endian and so are the hosts we run on
 * (x86-64, aarch64); no swapping is done. */
#ifndef MODPO_SAFETENSORS_H
#define MODPO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define SAFETENSORS_MAX_DIMS 8
/* A header larger than this is treated as corrupt rather than allocated. */
#define SAFETENSORS_MAX_HEADER (100u * 1024u * 1024u)

typedef enum {
    ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL,
    ST_N_DTYPES
} SafetensorsDtype;

typedef struct {
    const char *name;
    SafetensorsDtype dtype;
    int ndim;
    int64_t shape[SAFETENSORS_MAX_DIMS];
    size_t n_elements;
    /* Points into the mapping; not necessarily aligned to the element size
     * (use memcpy or the conversion functions below). */
    const void *data;
    size_t nbytes;
} SafetensorsTensor;

typedef struct SafetensorsFile SafetensorsFile;

/* "F32" <-> ST_F32 etc.; -1 for a name we do not know. */
int safetensors_dtype_from_name(const char *name);
const char *safetensors_dtype_name(SafetensorsDtype d);
size_t safetensors_dtype_size(SafetensorsDtype d);

/* bf16 is the top half of an fp32; conversion to it rounds to nearest, ties
 * to even (what torch's .to(torch.bfloat16) does); NaN stays a quiet NaN. */
float safetensors_bf16_to_f32(uint16_t h);
uint16_t safetensors_f32_to_bf16(float f);
float safetensors_f16_to_f32(uint16_t h);

/* Maps and validates a file.  Every error names the file (and the tensor). */
int safetensors_open(const char *path, SafetensorsFile **out, Error *err);
void safetensors_close(SafetensorsFile *f);

const char *safetensors_path(const SafetensorsFile *f);
size_t safetensors_count(const SafetensorsFile *f);
/* Tensors in header order, i < safetensors_count(f). */
const SafetensorsTensor *safetensors_tensor(const SafetensorsFile *f, size_t i);
/* NULL when the file has no tensor of that name. */
const SafetensorsTensor *safetensors_find(const SafetensorsFile *f, const char *name);
/* A "__metadata__" value, or NULL. */
const char *safetensors_metadata(const SafetensorsFile *f, const char *key);

/* Converts a floating-point or integer tensor to fp32 into dst[t->n_elements]. */
int safetensors_tensor_to_f32(const SafetensorsFile *f, const SafetensorsTensor *t,
                              float *dst, Error *err);

/* Reads tensor `name` into dst as fp32, checking that it exists and that its
 * shape equals shape[0..ndim-1]; errors name the file, the tensor and both
 * shapes. */
int safetensors_read_f32(const SafetensorsFile *f, const char *name, float *dst,
                         int ndim, const int64_t *shape, Error *err);

/* Reads an I32 or I64 tensor into dst[t->n_elements] as int64. */
int safetensors_tensor_to_i64(const SafetensorsFile *f, const SafetensorsTensor *t,
                              int64_t *dst, Error *err);

/* Formats a shape as "[2, 3]" into buf (for messages). */
const char *safetensors_shape_str(int ndim, const int64_t *shape, char *buf, size_t size);

/* ---- Writer ----
 * Tensors are declared first (name, dtype, shape and where the values come
 * from), then written in one pass.  Values either live in a caller's fp32
 * buffer (borrowed until the write) or are produced by a fill callback in
 * chunks, in order, at write time: that is how init-model writes a 7B model
 * with memory bounded by one chunk.  Output dtypes: F32 and BF16.  The file
 * is written to a temporary in the same directory, fsync'd and renamed
 * (fs_util.h's protocol), so a reader never sees half a file.  Metadata "format": "pt" is always written
 * (transformers checks it). */
typedef struct SafetensorsWriter SafetensorsWriter;

/* Produces elements [start, start + count) of a tensor as fp32 into dst.
 * Calls for one tensor come in order and cover it exactly once. */
typedef int (*SafetensorsFillFn)(void *ctx, size_t start, size_t count, float *dst, Error *err);

SafetensorsWriter *safetensors_writer_new(void);
void safetensors_writer_free(SafetensorsWriter *w);
int safetensors_writer_add(SafetensorsWriter *w, const char *name, SafetensorsDtype dtype,
                           int ndim, const int64_t *shape, const float *data, Error *err);
int safetensors_writer_add_fill(SafetensorsWriter *w, const char *name, SafetensorsDtype dtype,
                                int ndim, const int64_t *shape, SafetensorsFillFn fill,
                                void *ctx, Error *err);
/* Adds a "__metadata__" string entry (copied). */
int safetensors_writer_set_metadata(SafetensorsWriter *w, const char *key, const char *value,
                                    Error *err);
/* Bytes of tensor data declared so far. */
size_t safetensors_writer_data_bytes(const SafetensorsWriter *w);
int safetensors_writer_write(SafetensorsWriter *w, const char *path, Error *err);

#endif

/* Private to the checkpoint implementation (src/checkpoint_*.c): the
 * in-memory content model shared by the writer and the reader, its
 * checksum, name rules, and the entry points between the files. */
#ifndef MODPO_CHECKPOINT_INTERNAL_H
#define MODPO_CHECKPOINT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "error.h"

/* ---- content model (checkpoint_content.c) ---- */

typedef struct {
    char *name;
    CkptType type;
    int ndims;
    uint64_t dims[CKPT_MAX_DIMS];
    size_t n;
    void *data;
} CkptArray;

typedef enum { CKPT_ATTR_I64, CKPT_ATTR_F64, CKPT_ATTR_STR } CkptAttrKind;

/* "i64", "f64", "str". */
const char *ckpt_attr_kind_name(CkptAttrKind k);

typedef struct {
    char *name;
    CkptAttrKind kind;
    int64_t i;
    double f;
    char *s;
} CkptAttr;

typedef struct {
    CkptArray *arrays;
    size_t n_arrays, cap_arrays;
    CkptAttr *attrs;
    size_t n_attrs, cap_attrs;
} CkptContent;

void ckpt_content_free(CkptContent *c);
/* Takes ownership of a->name and a->data, also on failure. */
int ckpt_content_add_array(CkptContent *c, CkptArray *a);
/* Takes ownership of a->name and a->s, also on failure. */
int ckpt_content_add_attr(CkptContent *c, CkptAttr *a);
/* Name order (strcmp compares bytes as unsigned) is the checksum's order and
 * the order datasets are written in, which creates parents before children. */
void ckpt_content_sort(CkptContent *c);
const CkptArray *ckpt_find_array(const CkptContent *c, const char *name);
const CkptAttr *ckpt_find_attr(const CkptContent *c, const char *name);

/* ---- checksum (checkpoint_checksum.c) ---- */

/* The definition in docs/checkpoint-format.md ("Checksum"); content must be
 * sorted and must not contain the checksum attribute itself. */
uint32_t ckpt_content_checksum(const CkptContent *c);

/* ---- names (checkpoint_names.c) ---- */

/* Components of [A-Za-z0-9_.-]+ other than "." and "..", separated by single
 * slashes; slashes only when path is true. */
bool ckpt_name_ok(const char *name, bool path);
/* True when a is b or a group above b ("x" and "x/y"). */
bool ckpt_name_covers(const char *a, const char *b);
/* "format", "format_version", "checksum". */
bool ckpt_reserved_attr(const char *name);

/* ---- writer (checkpoint_writer.c; encoded by checkpoint_write.c) ---- */

struct CheckpointWriter {
    CkptContent content;
    bool failed;
    Error first; /* the first bad put, reported by ckpt_write */
};

/* ---- HDF5 decoding (checkpoint_read.c) ---- */

/* Reads every array and root attribute of the file at path into c (unsorted)
 * and the stored checksum, if any.  Errors do not include the path. */
int ckpt_read_file(const char *path, CkptContent *c, bool *have_checksum, uint32_t *checksum,
                   Error *err);

#endif

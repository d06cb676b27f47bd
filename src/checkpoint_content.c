/* The checkpoint's logical content: named arrays and scalar attributes, held
 * in memory by both the writer and the reader (so one function computes the
 * checksum on both sides), plus the table of array element types. */
#include "checkpoint_internal.h"

#include <stdlib.h>
#include <string.h>

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

static const char *const ATTR_KIND_NAME[] = {"i64", "f64", "str"};

const char *ckpt_attr_kind_name(CkptAttrKind k) { return ATTR_KIND_NAME[k]; }

/* ---------------------------------------------------------- content model */

void ckpt_content_free(CkptContent *c)
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
int ckpt_content_add_array(CkptContent *c, CkptArray *a)
{
    if (c->n_arrays == c->cap_arrays) {
        size_t cap = c->cap_arrays ? 2 * c->cap_arrays : 16;
        CkptArray *p = realloc(c->arrays, cap * sizeof *p);
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
int ckpt_content_add_attr(CkptContent *c, CkptAttr *a)
{
    if (c->n_attrs == c->cap_attrs) {
        size_t cap = c->cap_attrs ? 2 * c->cap_attrs : 16;
        CkptAttr *p = realloc(c->attrs, cap * sizeof *p);
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
    return strcmp(((const CkptArray *)a)->name, ((const CkptArray *)b)->name);
}

static int cmp_attr(const void *a, const void *b)
{
    return strcmp(((const CkptAttr *)a)->name, ((const CkptAttr *)b)->name);
}

/* Name order (strcmp compares bytes as unsigned) is the checksum's order and
 * the order datasets are written in, which creates parents before children. */
void ckpt_content_sort(CkptContent *c)
{
    if (c->n_arrays) qsort(c->arrays, c->n_arrays, sizeof *c->arrays, cmp_array);
    if (c->n_attrs) qsort(c->attrs, c->n_attrs, sizeof *c->attrs, cmp_attr);
}

const CkptArray *ckpt_find_array(const CkptContent *c, const char *name)
{
    for (size_t i = 0; i < c->n_arrays; i++)
        if (strcmp(c->arrays[i].name, name) == 0) return &c->arrays[i];
    return NULL;
}

const CkptAttr *ckpt_find_attr(const CkptContent *c, const char *name)
{
    for (size_t i = 0; i < c->n_attrs; i++)
        if (strcmp(c->attrs[i].name, name) == 0) return &c->attrs[i];
    return NULL;
}

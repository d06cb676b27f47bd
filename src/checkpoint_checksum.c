/* The CRC32 over a checkpoint's logical content (docs/checkpoint-format.md,
 * "Checksum"); the writer stores it and the reader recomputes it. */
#include "checkpoint_internal.h"

#include <string.h>
#include <zlib.h>

/* The checksum is defined over little-endian bytes and arrays are hashed
 * straight from memory. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "checkpoint_checksum.c assumes a little-endian host");

static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n)
{
    return (uint32_t)crc32_z(crc, p, n);
}

/* A string with its terminating NUL, so "ab"+"c" and "a"+"bc" differ. */
static uint32_t crc_str0(uint32_t crc, const char *s) { return crc_bytes(crc, s, strlen(s) + 1); }

static uint32_t crc_u64(uint32_t crc, uint64_t v) { return crc_bytes(crc, &v, sizeof v); }

/* The definition in docs/checkpoint-format.md ("Checksum"); content must be
 * sorted and must not contain the checksum attribute itself. */
uint32_t ckpt_content_checksum(const CkptContent *c)
{
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < c->n_arrays; i++) {
        const CkptArray *a = &c->arrays[i];
        crc = crc_str0(crc, "array");
        crc = crc_str0(crc, a->name);
        crc = crc_str0(crc, ckpt_type_name(a->type));
        crc = crc_u64(crc, (uint64_t)a->ndims);
        for (int d = 0; d < a->ndims; d++) crc = crc_u64(crc, a->dims[d]);
        crc = crc_bytes(crc, a->data, a->n * ckpt_type_size(a->type));
    }
    for (size_t i = 0; i < c->n_attrs; i++) {
        const CkptAttr *a = &c->attrs[i];
        crc = crc_str0(crc, "attr");
        crc = crc_str0(crc, a->name);
        crc = crc_str0(crc, ckpt_attr_kind_name(a->kind));
        if (a->kind == CKPT_ATTR_I64) crc = crc_u64(crc, (uint64_t)a->i);
        if (a->kind == CKPT_ATTR_F64) crc = crc_bytes(crc, &a->f, sizeof a->f);
        if (a->kind == CKPT_ATTR_STR) {
            crc = crc_u64(crc, strlen(a->s));
            crc = crc_bytes(crc, a->s, strlen(a->s));
        }
    }
    return crc;
}

#include "sentencepiece_model.h"

#include <stdlib.h>
#include <string.h>

/* A read cursor over one (sub)message; `base` is the absolute offset of `p`
 * in the file so that error messages point at the right byte. */
typedef struct {
    const uint8_t *p, *end;
    size_t base;
    const uint8_t *start;
} Reader;

enum { WIRE_VARINT = 0, WIRE_I64 = 1, WIRE_LEN = 2, WIRE_SGROUP = 3, WIRE_EGROUP = 4, WIRE_I32 = 5 };

static size_t rd_offset(const Reader *r) { return r->base + (size_t)(r->p - r->start); }

static int rd_varint(Reader *r, uint64_t *v, Error *err)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return error_set(err, "truncated protobuf (varint at byte %zu)", rd_offset(r));
        uint8_t b = *r->p++;
        x |= (uint64_t)(b & 0x7F) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return error_set(err, "malformed protobuf varint at byte %zu", rd_offset(r));
}

static int rd_bytes(Reader *r, const uint8_t **data, size_t *n, Error *err)
{
    uint64_t len = 0;
    if (rd_varint(r, &len, err)) return -1;
    if (len > (uint64_t)(r->end - r->p))
        return error_set(err, "truncated protobuf (field of %llu bytes at byte %zu)",
                         (unsigned long long)len, rd_offset(r));
    *data = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

static int rd_fixed32(Reader *r, uint32_t *v, Error *err)
{
    if (r->end - r->p < 4)
        return error_set(err, "truncated protobuf (fixed32 at byte %zu)", rd_offset(r));
    *v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
         (uint32_t)r->p[3] << 24;
    r->p += 4;
    return 0;
}

/* Skips a field we do not need.  Groups are deprecated and never written by
 * sentencepiece, so they are treated as malformed input. */
static int rd_skip(Reader *r, int wire, Error *err)
{
    uint64_t v = 0;
    const uint8_t *d;
    size_t n;
    switch (wire) {
    case WIRE_VARINT: return rd_varint(r, &v, err);
    case WIRE_LEN: return rd_bytes(r, &d, &n, err);
    case WIRE_I64:
        if (r->end - r->p < 8)
            return error_set(err, "truncated protobuf (fixed64 at byte %zu)", rd_offset(r));
        r->p += 8;
        return 0;
    case WIRE_I32: {
        uint32_t x;
        return rd_fixed32(r, &x, err);
    }
    default:
        return error_set(err, "unsupported protobuf wire type %d at byte %zu", wire,
                         rd_offset(r));
    }
}

static Reader sub_reader(const Reader *parent, const uint8_t *data, size_t n)
{
    Reader r = {data, data + n, parent->base + (size_t)(data - parent->start), data};
    return r;
}

static int rd_tag(Reader *r, int *field, int *wire, Error *err)
{
    uint64_t tag = 0;
    if (rd_varint(r, &tag, err)) return -1;
    *field = (int)(tag >> 3);
    *wire = (int)(tag & 7);
    if (*field == 0) return error_set(err, "malformed protobuf: field 0 at byte %zu", rd_offset(r));
    return 0;
}

/* Reads a length-delimited field into a fresh NUL-terminated string. */
static int rd_string(Reader *r, int wire, char **out, size_t *out_len, Error *err)
{
    const uint8_t *d;
    size_t n;
    if (wire != WIRE_LEN)
        return error_set(err, "malformed protobuf: string field with wire type %d at byte %zu",
                         wire, rd_offset(r));
    if (rd_bytes(r, &d, &n, err)) return -1;
    char *s = malloc(n + 1);
    if (!s) return error_set(err, "out of memory");
    memcpy(s, d, n);
    s[n] = 0;
    free(*out);
    *out = s;
    if (out_len) *out_len = n;
    return 0;
}

static int rd_int(Reader *r, int wire, int64_t *out, Error *err)
{
    uint64_t v = 0;
    if (wire != WIRE_VARINT)
        return error_set(err, "malformed protobuf: integer field with wire type %d at byte %zu",
                         wire, rd_offset(r));
    if (rd_varint(r, &v, err)) return -1;
    *out = (int64_t)v; /* int32 negatives are sign-extended to 64 bits on the wire */
    return 0;
}

static int rd_bool(Reader *r, int wire, bool *out, Error *err)
{
    int64_t v = 0;
    if (rd_int(r, wire, &v, err)) return -1;
    *out = v != 0;
    return 0;
}

static int parse_piece(Reader *r, SpmPiece *pc, Error *err)
{
    pc->type = SPM_NORMAL;
    while (r->p < r->end) {
        int field, wire;
        if (rd_tag(r, &field, &wire, err)) return -1;
        int rc;
        if (field == 1) {
            rc = rd_string(r, wire, &pc->piece, &pc->len, err);
        } else if (field == 2 && wire == WIRE_I32) {
            uint32_t bits = 0;
            rc = rd_fixed32(r, &bits, err);
            memcpy(&pc->score, &bits, sizeof pc->score);
        } else if (field == 3) {
            int64_t t = 0;
            rc = rd_int(r, wire, &t, err);
            pc->type = (int)t;
        } else {
            rc = rd_skip(r, wire, err);
        }
        if (rc) return -1;
    }
    if (!pc->piece) return error_set(err, "sentencepiece piece without text");
    return 0;
}

static int set_int(Reader *r, int wire, int *dst, Error *err)
{
    int64_t v = 0;
    if (rd_int(r, wire, &v, err)) return -1;
    *dst = (int)v;
    return 0;
}

static int parse_trainer_spec(Reader *r, SpmModel *m, Error *err)
{
    while (r->p < r->end) {
        int field, wire, rc;
        if (rd_tag(r, &field, &wire, err)) return -1;
        switch (field) {
        case 3: rc = set_int(r, wire, &m->model_type, err); break;
        case 24: rc = rd_bool(r, wire, &m->treat_whitespace_as_suffix, err); break;
        case 35: rc = rd_bool(r, wire, &m->byte_fallback, err); break;
        case 40: rc = set_int(r, wire, &m->unk_id, err); break;
        case 41: rc = set_int(r, wire, &m->bos_id, err); break;
        case 42: rc = set_int(r, wire, &m->eos_id, err); break;
        case 43: rc = set_int(r, wire, &m->pad_id, err); break;
        case 44: rc = rd_string(r, wire, &m->unk_surface, NULL, err); break;
        case 45: rc = rd_string(r, wire, &m->unk_piece, NULL, err); break;
        case 46: rc = rd_string(r, wire, &m->bos_piece, NULL, err); break;
        case 47: rc = rd_string(r, wire, &m->eos_piece, NULL, err); break;
        default: rc = rd_skip(r, wire, err); break;
        }
        if (rc) return -1;
    }
    return 0;
}

static int parse_normalizer_spec(Reader *r, SpmModel *m, Error *err)
{
    while (r->p < r->end) {
        int field, wire, rc;
        if (rd_tag(r, &field, &wire, err)) return -1;
        const uint8_t *d;
        switch (field) {
        case 1: rc = rd_string(r, wire, &m->normalizer_name, NULL, err); break;
        case 2:
            rc = wire == WIRE_LEN ? rd_bytes(r, &d, &m->precompiled_charsmap_len, err)
                                  : rd_skip(r, wire, err);
            break;
        case 3: rc = rd_bool(r, wire, &m->add_dummy_prefix, err); break;
        case 4: rc = rd_bool(r, wire, &m->remove_extra_whitespaces, err); break;
        case 5: rc = rd_bool(r, wire, &m->escape_whitespaces, err); break;
        default: rc = rd_skip(r, wire, err); break;
        }
        if (rc) return -1;
    }
    return 0;
}

static int push_piece(SpmModel *m, size_t *cap, Reader *sub, Error *err)
{
    if (m->n_pieces == *cap) {
        size_t nc = *cap ? *cap * 2 : 1024;
        SpmPiece *np = realloc(m->pieces, nc * sizeof *np);
        if (!np) return error_set(err, "out of memory");
        m->pieces = np;
        *cap = nc;
    }
    SpmPiece *pc = &m->pieces[m->n_pieces++];
    memset(pc, 0, sizeof *pc);
    if (parse_piece(sub, pc, err))
        return error_prefix(err, "piece %zu: ", m->n_pieces - 1);
    return 0;
}

static int dup_default(char **dst, const char *def, Error *err)
{
    if (*dst) return 0;
    *dst = strdup(def);
    return *dst ? 0 : error_set(err, "out of memory");
}

static void set_defaults(SpmModel *m)
{
    memset(m, 0, sizeof *m);
    m->model_type = SPM_MODEL_UNIGRAM;
    m->unk_id = 0;
    m->bos_id = 1;
    m->eos_id = 2;
    m->pad_id = -1;
    m->add_dummy_prefix = true;
    m->remove_extra_whitespaces = true;
    m->escape_whitespaces = true;
}

static int parse_model(Reader *r, SpmModel *m, Error *err)
{
    size_t cap = 0;
    bool seen_trainer = false, seen_normalizer = false;
    while (r->p < r->end) {
        int field, wire;
        if (rd_tag(r, &field, &wire, err)) return -1;
        if ((field == 1 || field == 2 || field == 3) && wire == WIRE_LEN) {
            const uint8_t *d;
            size_t n;
            if (rd_bytes(r, &d, &n, err)) return -1;
            Reader sub = sub_reader(r, d, n);
            seen_trainer |= field == 2;
            seen_normalizer |= field == 3;
            int rc = field == 1   ? push_piece(m, &cap, &sub, err)
                     : field == 2 ? parse_trainer_spec(&sub, m, err)
                                  : parse_normalizer_spec(&sub, m, err);
            if (rc) return -1;
        } else if (rd_skip(r, wire, err)) {
            return -1;
        }
    }
    /* sentencepiece always writes both specs after the pieces, so a file
     * cut at a field boundary is caught here rather than loading half a
     * vocabulary with default settings. */
    if (!seen_trainer || !seen_normalizer)
        return error_set(err, "truncated or incomplete sentencepiece model: no %s",
                         seen_trainer ? "normalizer_spec" : "trainer_spec");
    if (dup_default(&m->unk_piece, "<unk>", err) || dup_default(&m->bos_piece, "<s>", err) ||
        dup_default(&m->eos_piece, "</s>", err) ||
        dup_default(&m->unk_surface, " \xE2\x81\x87 ", err) ||
        dup_default(&m->normalizer_name, "", err))
        return -1;
    return 0;
}

int spm_model_parse(const uint8_t *data, size_t len, SpmModel *out, Error *err)
{
    set_defaults(out);
    Reader r = {data, data + len, 0, data};
    if (parse_model(&r, out, err)) {
        spm_model_free(out);
        return -1;
    }
    if (out->n_pieces == 0) {
        spm_model_free(out);
        return error_set(err, "sentencepiece model has no pieces");
    }
    return 0;
}

void spm_model_free(SpmModel *m)
{
    if (!m) return;
    for (size_t i = 0; i < m->n_pieces; i++) free(m->pieces[i].piece);
    free(m->pieces);
    free(m->unk_piece);
    free(m->bos_piece);
    free(m->eos_piece);
    free(m->unk_surface);
    free(m->normalizer_name);
    memset(m, 0, sizeof *m);
}

/* Converting a mapped tensor's values into caller buffers (fp32, int64), and
 * formatting shapes for messages. */
#include "safetensors_internal.h"

#include <stdio.h>
#include <string.h>

const char *safetensors_shape_str(int ndim, const int64_t *shape, char *buf, size_t size)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, size - n, "[");
    for (int i = 0; i < ndim && n < size; i++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (n < size) snprintf(buf + n, size - n, "]");
    return buf;
}
int safetensors_tensor_to_f32(const SafetensorsFile *f, const SafetensorsTensor *t,
                              float *dst, Error *err)
{
    const uint8_t *src = t->data;
    size_t n = t->n_elements;
    long long nn = (long long)n;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case ST_BF16:
#pragma omp parallel for if (nn > 65536) schedule(static)
        for (long long i = 0; i < nn; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = safetensors_bf16_to_f32(h);
        }
        return 0;
    case ST_F16:
#pragma omp parallel for if (nn > 65536) schedule(static)
        for (long long i = 0; i < nn; i++) {
            uint16_t h;
            memcpy(&h, src + 2 * i, 2);
            dst[i] = safetensors_f16_to_f32(h);
        }
        return 0;
    case ST_F64:
        for (size_t i = 0; i < n; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v;
        }
        return 0;
    case ST_I32: case ST_I64: case ST_I16: case ST_I8: case ST_U8: case ST_BOOL: {
        for (size_t i = 0; i < n; i++) {
            int64_t v = 0;
            switch (t->dtype) {
            case ST_I64: memcpy(&v, src + 8 * i, 8); break;
            case ST_I32: { int32_t x; memcpy(&x, src + 4 * i, 4); v = x; break; }
            case ST_I16: { int16_t x; memcpy(&x, src + 2 * i, 2); v = x; break; }
            case ST_I8: v = (int8_t)src[i]; break;
            default: v = src[i]; break;
            }
            dst[i] = (float)v;
        }
        return 0;
    }
    case ST_N_DTYPES:
        break;
    }
    return error_set(err, "%s: tensor '%s': cannot convert its dtype to F32", f->path, t->name);
}

int safetensors_tensor_to_i64(const SafetensorsFile *f, const SafetensorsTensor *t,
                              int64_t *dst, Error *err)
{
    const uint8_t *src = t->data;
    if (t->dtype == ST_I64) {
        memcpy(dst, src, t->n_elements * 8);
        return 0;
    }
    if (t->dtype == ST_I32) {
        for (size_t i = 0; i < t->n_elements; i++) {
            int32_t x;
            memcpy(&x, src + 4 * i, 4);
            dst[i] = x;
        }
        return 0;
    }
    return error_set(err, "%s: tensor '%s' is %s, expected I32 or I64", f->path, t->name,
                     safetensors_dtype_name(t->dtype));
}

int safetensors_read_f32(const SafetensorsFile *f, const char *name, float *dst,
                         int ndim, const int64_t *shape, Error *err)
{
    const SafetensorsTensor *t = safetensors_find(f, name);
    if (!t) return error_set(err, "%s: missing tensor '%s'", f->path, name);
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char want[128], got[128];
        return error_set(err, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                         safetensors_shape_str(t->ndim, t->shape, got, sizeof got),
                         safetensors_shape_str(ndim, shape, want, sizeof want));
    }
    return safetensors_tensor_to_f32(f, t, dst, err);
}

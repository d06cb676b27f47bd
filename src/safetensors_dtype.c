/* Safetensors dtypes: their names and sizes, and the scalar conversions
 * between fp32 and the 16-bit float formats. */
#include "safetensors.h"

#include <math.h>
#include <string.h>

static const struct {
    const char *name;
    size_t size;
} dtype_table[ST_N_DTYPES] = {
    [ST_F32] = {"F32", 4}, [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
    [ST_F64] = {"F64", 8}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};

int safetensors_dtype_from_name(const char *name)
{
    for (int d = 0; d < ST_N_DTYPES; d++)
        if (strcmp(name, dtype_table[d].name) == 0) return d;
    return -1;
}

const char *safetensors_dtype_name(SafetensorsDtype d) { return dtype_table[d].name; }
size_t safetensors_dtype_size(SafetensorsDtype d) { return dtype_table[d].size; }

float safetensors_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

uint16_t safetensors_f32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fc0; /* NaN, as torch */
    /* Adding 0x7fff plus the lowest kept bit rounds half to even; a carry into
     * the exponent is the correct rounding up (to infinity at the top). */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float safetensors_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1f) {
        u = sign | 0x7f800000u | (man << 13);           /* inf / NaN */
    } else if (exp != 0) {
        u = sign | ((exp + 112) << 23) | (man << 13);   /* normal: rebias 15 -> 127 */
    } else if (man == 0) {
        u = sign;                                       /* zero */
    } else {
        float f = ldexpf((float)man, -24);              /* subnormal: man * 2^-24 */
        memcpy(&u, &f, sizeof u);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

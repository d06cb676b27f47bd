#include "utf8.h"

static int is_cont(unsigned char c) { return (c & 0xC0) == 0x80; }

size_t utf8_lead_len(unsigned char c)
{
    if (c < 0xC0) return 1;
    if (c < 0xE0) return 2;
    if (c < 0xF0) return 3;
    if (c < 0xF8) return 4;
    return 1;
}

size_t utf8_decode(const char *s, size_t len, uint32_t *cp)
{
    if (len == 0) return 0;
    const unsigned char *u = (const unsigned char *)s;
    uint32_t c;
    size_t n;
    if (u[0] < 0x80) {
        c = u[0];
        n = 1;
    } else if ((u[0] & 0xE0) == 0xC0 && len >= 2 && is_cont(u[1])) {
        c = ((uint32_t)(u[0] & 0x1F) << 6) | (u[1] & 0x3F);
        n = 2;
        if (c < 0x80) return 0; /* overlong */
    } else if ((u[0] & 0xF0) == 0xE0 && len >= 3 && is_cont(u[1]) && is_cont(u[2])) {
        c = ((uint32_t)(u[0] & 0x0F) << 12) | ((uint32_t)(u[1] & 0x3F) << 6) | (u[2] & 0x3F);
        n = 3;
        if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    } else if ((u[0] & 0xF8) == 0xF0 && len >= 4 && is_cont(u[1]) && is_cont(u[2]) &&
               is_cont(u[3])) {
        c = ((uint32_t)(u[0] & 0x07) << 18) | ((uint32_t)(u[1] & 0x3F) << 12) |
            ((uint32_t)(u[2] & 0x3F) << 6) | (u[3] & 0x3F);
        n = 4;
        if (c < 0x10000 || c > 0x10FFFF) return 0;
    } else {
        return 0;
    }
    if (cp) *cp = c;
    return n;
}

size_t utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int utf8_validate(const char *s, size_t len, size_t *bad_offset)
{
    size_t i = 0;
    while (i < len) {
        /* ASCII fast path: most training text is ASCII. */
        if ((unsigned char)s[i] < 0x80) {
            i++;
            continue;
        }
        size_t n = utf8_decode(s + i, len - i, NULL);
        if (n == 0) {
            if (bad_offset) *bad_offset = i;
            return -1;
        }
        i += n;
    }
    return 0;
}

/* UTF-8 helpers shared by the tokenizer and the data reader.  "Valid" means
 * what sentencepiece accepts: shortest-form encodings of U+0000..U+10FFFF,
 * excluding the UTF-16 surrogates U+D800..U+DFFF. */
#ifndef MODPO_UTF8_H
#define MODPO_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* The replacement character U+FFFD, which stands in for invalid bytes. */
#define UTF8_REPLACEMENT "\xEF\xBF\xBD"
#define UTF8_REPLACEMENT_LEN 3

/* Decodes the character at s[0..len).  Returns its length in bytes (1-4) and
 * stores the code point in *cp (cp may be NULL), or returns 0 when the bytes
 * at s do not start a valid character (or len == 0). */
size_t utf8_decode(const char *s, size_t len, uint32_t *cp);

/* Encodes code point cp (must be valid) into out; returns its length (1-4). */
size_t utf8_encode(uint32_t cp, char out[4]);

/* Checks that s[0..len) is entirely valid UTF-8.  Returns 0 if it is, or -1
 * and stores the offset of the first offending byte in *bad_offset (which may
 * be NULL).  Note the convention: 0 means valid, as elsewhere in modpo. */
int utf8_validate(const char *s, size_t len, size_t *bad_offset);

/* Length of the character that starts with byte c as its lead byte says
 * (1 for ASCII and for stray continuation/invalid bytes), without validating. */
size_t utf8_lead_len(unsigned char c);

#endif

/* Private to the safetensors implementation (src/safetensors_*.c). */
#ifndef MODPO_SAFETENSORS_INTERNAL_H
#define MODPO_SAFETENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"
#include "safetensors.h"

struct SafetensorsFile {
    char *path;
    void *map;
    size_t map_size;
    const uint8_t *data;     /* start of the data section */
    size_t data_size;
    SafetensorsTensor *tensors;
    size_t n_tensors;
    char **meta;             /* key, value, key, value ... */
    size_t n_meta;
};

/* Parses and validates the JSON header text[0..len) of f, whose data and
 * data_size are already set: fills f's tensors (pointing into the data) and
 * metadata, and checks that the tensors tile the data exactly. */
int st_parse_header(SafetensorsFile *f, const char *text, size_t len, Error *err);

#endif

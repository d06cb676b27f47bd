/* The table of configuration keys: name, type, where the value lives in
 * Config, what range or choices are allowed.  config.c reads, checks and writes
 * configurations by walking this one table. */
#ifndef MODPO_CONFIG_SCHEMA_H
#define MODPO_CONFIG_SCHEMA_H

#include <stddef.h>

#include "config.h"

typedef enum {
    KEY_INT, KEY_FLOAT, KEY_BOOL, KEY_STRING, KEY_CHOICE, KEY_FLOAT_LIST, KEY_CHOICE_LIST
} KeyType;

typedef struct {
    const char *path;         /* "section.name" */
    KeyType type;
    size_t offset;            /* into Config */
    size_t size;              /* bytes of a string field / element of a string list */
    size_t count_offset;      /* lists: where the element count (int) lives */
    double lo, hi;            /* numeric range (list elements too) */
    unsigned char lo_open, hi_open; /* exclusive bounds */
    const char *choices;      /* KEY_CHOICE(_LIST): "a|b|c" */
    unsigned char strict_required; /* must be explicit when run.strict = true */
    const char *help;
} KeySpec;

extern const KeySpec config_schema[];
extern const size_t config_schema_len;

/* The schema entry for a dotted path, or NULL. */
const KeySpec *config_schema_find(const char *path);

#endif

/* Error reporting: a function that can fail returns 0 on success or -1 on
 * failure and fills an Error with a human-readable message that already names
 * the file, line, key or tensor involved.  Callers add context on the way up
 * with error_prefix() and only the command that owns the error prints it. */
#ifndef MODPO_ERROR_H
#define MODPO_ERROR_H

#include <stddef.h>

#define ERROR_MSG_MAX 2048

typedef struct {
    char msg[ERROR_MSG_MAX];
} Error;

/* Sets the message (printf-style) and returns -1 so callers can write
 * `return error_set(err, "...")`.  err may be NULL. */
int error_set(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends context ("reading foo.json: ") to an existing message; returns -1. */
int error_prefix(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends errno's text to a message being built: error_set_errno(err, "open %s", path). */
int error_set_errno(Error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif

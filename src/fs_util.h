/* File-system helpers for outputs that must survive a crash or a kill at any
 * instant: a file is either its old complete content or its new complete
 * content, never a mix, and once a function returns the new content is on
 * disk (not only in the page cache).
 *
 * The protocol (used by fs_write_atomic and by anything that produces a file
 * through a library, such as the HDF5 checkpoint writer):
 *   1. write the content to "<path>.tmp-<pid>" in the same directory, so the
 *      rename below stays inside one file system and is atomic;
 *   2. fsync the temporary file, so its data reaches the disk before its name;
 *   3. rename it over <path>;
 *   4. fsync the directory, so the rename itself is durable.
 * A crash before 3 leaves only a stray temporary file, which readers ignore
 * because its name does not match what they look for. */
#ifndef MODPO_FS_UTIL_H
#define MODPO_FS_UTIL_H

#include <stdbool.h>
#include <stddef.h>

#include "error.h"

/* Writes n bytes to path atomically and durably (steps 1-4). */
int fs_write_atomic(const char *path, const void *data, size_t n, Error *err);

/* The temporary name of step 1: "<path>.tmp-<pid>". */
int fs_tmp_name(char *out, size_t cap, const char *path, Error *err);

/* Steps 2-4 for a temporary file already written and closed.  On failure the
 * temporary file is removed and path is left as it was. */
int fs_publish(const char *tmp, const char *path, Error *err);

/* fsync of a regular file by name. */
int fs_fsync_file(const char *path, Error *err);

/* fsync of a directory.  File systems that cannot sync directories (EINVAL)
 * are accepted: there is nothing more we could do on them. */
int fs_fsync_dir(const char *dir, Error *err);

/* The directory part of path ("." when it has none). */
int fs_dirname(char *out, size_t cap, const char *path, Error *err);

/* mkdir -p with mode 0777 (less the umask); each directory it creates is made
 * durable in its parent.  An existing directory is fine, an existing
 * non-directory is an error. */
int fs_mkdir_p(const char *path, Error *err);

/* *empty = true when path is a directory with no entries or does not exist
 * (nothing there to overwrite); a path that is not a directory is an error. */
int fs_dir_is_empty(const char *path, bool *empty, Error *err);

/* rm -rf: removes path and everything under it without following symbolic
 * links (a link is removed, its target is not touched).  A missing path is
 * fine. */
int fs_remove_tree(const char *path, Error *err);

/* Reads a whole file into a malloc'd buffer with a terminating NUL (not
 * counted in *n); the caller frees *data. */
int fs_read_file(const char *path, char **data, size_t *n, Error *err);

/* True when something (file, directory, link) exists at path. */
bool fs_exists(const char *path);

#endif

/* A stage's directory of checkpoints:
 *
 *     DIR/checkpoint-00000200.h5     one file per saved step (8+ digits)
 *     DIR/checkpoint-00000300.h5
 *     DIR/best                       "checkpoint-00000200.h5\n"
 *
 * Only regular files named exactly so are checkpoints, so the temporary files of
 * an interrupted write ("checkpoint-00000400.h5.tmp-1234") are never listed
 * or loaded.  The best marker is a one-line text file replaced atomically
 * rather than a symbolic link: it survives copying a run directory with
 * tools or file systems that drop links, and reads the same everywhere.
 *
 * One process writes a directory at a time (rank 0 of the stage's group). */
#ifndef MODPO_CHECKPOINT_DIR_H
#define MODPO_CHECKPOINT_DIR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "checkpoint.h"
#include "error.h"

/* Sharded checkpoints (docs/checkpoint-format.md): the optimizer state of
 * a data-parallel run is written by every rank as
 *     DIR/checkpoint-00000200-shard-00001-of-00004.h5
 * and the index DIR/checkpoint-00000200.h5 (written last, by rank 0) lists
 * their checksums.  Only the index is a listed checkpoint: shards without
 * an index are the remains of an interrupted save and are removed by
 * ckdir_remove_leftovers; pruning a step removes its shards with it. */
int ckdir_shard_path(char *out, size_t cap, const char *dir, int64_t step, int rank, int n_shards,
                     Error *err);
/* True when name is exactly a shard file name. */
bool ckdir_parse_shard_name(const char *name, int64_t *step, int *rank, int *n_shards);

/* "checkpoint-00000100.h5" */
int ckdir_file_name(char *out, size_t cap, int64_t step, Error *err);
/* "DIR/checkpoint-00000100.h5" */
int ckdir_path(char *out, size_t cap, const char *dir, int64_t step, Error *err);
/* True when name is exactly a checkpoint file name; *step its step. */
bool ckdir_parse_name(const char *name, int64_t *step);

/* The steps of DIR's checkpoints, newest (largest step) first, in a malloc'd
 * array the caller frees (NULL when *n is 0).  A missing DIR has none. */
int ckdir_list(const char *dir, int64_t **steps, size_t *n, Error *err);

/* Saves w as DIR/checkpoint-<step>.h5 (creating DIR), marks it best when
 * is_best, then prunes to save_total_limit (see ckdir_prune).  In that order
 * a crash at any point leaves a loadable directory whose best, if any, still
 * exists. */
int ckdir_save(const char *dir, int64_t step, const CheckpointWriter *w, int save_total_limit,
               bool is_best, Error *err);

/* Records step as best (atomically replacing DIR/best). */
int ckdir_set_best(const char *dir, int64_t step, Error *err);
/* The step recorded in DIR/best, or -1 when there is no marker.  The file it
 * names is not checked: opening it reports it if it is gone. */
int ckdir_get_best(const char *dir, int64_t *step, Error *err);

/* Deletes all checkpoints but the save_total_limit newest and the best one;
 * save_total_limit <= 0 keeps everything. */
int ckdir_prune(const char *dir, int save_total_limit, Error *err);

/* Opens the newest checkpoint that verifies.  Each newer one that does not is
 * described in warn ("checkpoint-00000300.h5 is corrupt (checksum mismatch
 * ...); using checkpoint-00000200.h5") for the command to print; warn is ""
 * when the newest was good.  With no checkpoint at all *step is -1 and the
 * call succeeds; when checkpoints exist but none verifies it fails, since
 * starting over would silently discard them.  ckpt, when not NULL, receives
 * the open checkpoint (the caller closes it), which saves reading it twice. */
int ckdir_find_latest_valid(const char *dir, int64_t *step, Checkpoint **ckpt, char *warn,
                            size_t warn_cap, Error *err);

/* Removes the temporary files of interrupted writes ("*.tmp-<pid>" of a
 * checkpoint, a shard or the best marker) and shards whose index is
 * missing; *n_removed may be NULL.  Call it when
 * a stage starts, before anything writes into DIR. */
int ckdir_remove_leftovers(const char *dir, int *n_removed, Error *err);

#endif

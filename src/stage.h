/* A stage's directory under the run: the rules that make every stage
 * resumable and safe to rerun.
 *   - a directory with a DONE file holds a finished stage: skipped on rerun;
 *   - one with checkpoints resumes from the newest valid checkpoint;
 *   - one that modpo started but that has no checkpoint yet (only its
 *     config.cfg and metrics.jsonl) starts over;
 *   - anything else that is not empty is somebody's data: refused, never
 *     overwritten.
 * The resolved configuration is saved as config.cfg; a rerun whose critical
 * settings differ from the saved ones is refused with the differences
 * listed, unless forced. */
#ifndef MODPO_STAGE_H
#define MODPO_STAGE_H

#include <stdbool.h>

#include "config.h"
#include "dist/dist_comm.h"
#include "error.h"

typedef enum { STAGE_FRESH, STAGE_RESUME, STAGE_DONE } StageStatus;

/* Prepares DIR for a stage run.  critical: NULL-terminated key prefixes (see
 * conf_diff) whose change makes the saved work invalid. */
int stage_open(const char *dir, const Config *cfg, const char *const *critical, bool force,
               StageStatus *status, Error *err);

/* stage_open by rank 0 of comm, the status broadcast to the others (NULL
 * comm: one process).  A failure on rank 0 is returned there; the caller
 * aborts the job with it (dist_fail), so the others never wait forever. */
int stage_open_collective(const DistComm *comm, const char *dir, const Config *cfg,
                          const char *const *critical, bool force, StageStatus *status, Error *err);

/* Marks DIR finished; `summary` (a JSON object text, or NULL) goes in DONE. */
int stage_mark_done(const char *dir, const char *summary, Error *err);

bool stage_is_done(const char *dir);

const char *stage_status_name(StageStatus s);

#endif

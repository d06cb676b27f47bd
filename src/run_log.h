/* A log file per command run under the output root: everything the process
 * writes to stderr (stage status, warnings, progress, errors) is copied to
 * ROOT/logs/<command>-<UTC time>[-rank<R>].log as well, so a run started in
 * the background or under Slurm keeps its story next to its outputs. */
#ifndef MODPO_RUN_LOG_H
#define MODPO_RUN_LOG_H

#include "error.h"

typedef struct RunLog RunLog;

/* Starts copying stderr into a new file under dir/logs (created if needed).
 * rank < 0 leaves the rank out of the name.  *out receives the path. */
int run_log_start(const char *dir, const char *command, int rank, RunLog **log, Error *err);
/* Stops copying, flushes the file and restores stderr. */
void run_log_stop(RunLog *log);
const char *run_log_path(const RunLog *log);

#endif

/* A log file per command run under the output root: everything the process
 * writes to stderr (stage status, warnings, progress, errors) is copied to
 * ROOT/logs/<command>-<UTC time>[-rank<R>].log as well, so a run started in
 * the background or under Slurm keeps its story next to its outputs. */
#ifndef MODPO_RUN_LOG_H
#define MODPO_RUN_LOG_H

#include "error.h"

typedef struct RunLog RunLog;

/* Starts copying stderr into a new file under dir/logs (created if needed).
 * rank < 0 leaves the rank out of the name. */
int run_log_start(const char *dir, const char *command, int rank, RunLog **log, Error *err);
/* Stops copying, restores stderr and closes the file; `last_line`, when not
 * NULL, is appended to the file alone (an error the caller is about to
 * print on the restored stderr, maybe just before MPI_Abort). */
void run_log_stop(RunLog *log, const char *last_line);
const char *run_log_path(const RunLog *log);

#endif

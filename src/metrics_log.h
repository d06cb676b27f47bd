/* What a long-running stage tells the user: one JSON object per line in the
 * stage's metrics.jsonl (always), and a single self-rewriting progress line
 * with rate and ETA on stderr when stderr is a terminal. */
#ifndef MODPO_METRICS_LOG_H
#define MODPO_METRICS_LOG_H

#include <stdbool.h>
#include <stdio.h>

#include "error.h"

typedef struct {
    FILE *file;          /* metrics.jsonl, opened for append */
    bool tty;            /* draw the progress line */
    bool quiet;          /* no progress line at all (ranks other than 0) */
    double start_time;   /* seconds, monotonic */
    long start_step;     /* step the timing started at (resumed runs start later) */
    char stage[32];
} MetricsLog;

typedef struct {
    const char *name;
    double value;
} MetricValue;

/* Opens (appending to) PATH; `stage` names the stage in every record. */
int metrics_log_open(MetricsLog *log, const char *path, const char *stage, long start_step,
                     Error *err);
/* One record: {"stage":..., "kind": kind, "step": step, name: value...}.
 * Non-finite values are written as null so the line stays valid JSON. */
int metrics_log_write(MetricsLog *log, const char *kind, long step, const MetricValue *values,
                      int n, Error *err);
/* Redraws the progress line: "sft  120/1000  12.0%  3.4 step/s  ETA 4m18s  loss 1.234". */
void metrics_log_progress(MetricsLog *log, long step, long total, const char *extra);
/* Ends the progress line (newline) and closes the file. */
void metrics_log_close(MetricsLog *log);

/* Seconds on a monotonic clock. */
double monotonic_seconds(void);

#endif

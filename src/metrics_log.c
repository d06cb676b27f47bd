#include "metrics_log.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double monotonic_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int metrics_log_open(MetricsLog *log, const char *path, const char *stage, long start_step,
                     Error *err)
{
    memset(log, 0, sizeof *log);
    log->file = fopen(path, "a");
    if (!log->file) return error_set_errno(err, "cannot open metrics file %s", path);
    /* run_log.c sets MODPO_STDERR_TTY when it turns a terminal stderr into a pipe. */
    log->tty = isatty(STDERR_FILENO) != 0 || getenv("MODPO_STDERR_TTY") != NULL;
    log->start_time = monotonic_seconds();
    log->start_step = start_step;
    snprintf(log->stage, sizeof log->stage, "%s", stage);
    return 0;
}

static void write_number(FILE *f, double v)
{
    if (!isfinite(v)) fputs("null", f);
    else if (v == floor(v) && fabs(v) < 1e15) fprintf(f, "%.0f", v);
    else fprintf(f, "%.9g", v);
}

int metrics_log_write(MetricsLog *log, const char *kind, long step, const MetricValue *values,
                      int n, Error *err)
{
    FILE *f = log->file;
    fprintf(f, "{\"stage\":\"%s\",\"kind\":\"%s\",\"step\":%ld", log->stage, kind, step);
    for (int i = 0; i < n; i++) {
        fprintf(f, ",\"%s\":", values[i].name);
        write_number(f, values[i].value);
    }
    fputs("}\n", f);
    /* Flushed per record so a killed run keeps every line it reported. */
    if (fflush(f) != 0) return error_set_errno(err, "writing metrics of stage %s", log->stage);
    return 0;
}

static void format_duration(double s, char *out, size_t size)
{
    if (!isfinite(s) || s < 0) { snprintf(out, size, "?"); return; }
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(out, size, "%ldh%02ldm", t / 3600, (t % 3600) / 60);
    else if (t >= 60) snprintf(out, size, "%ldm%02lds", t / 60, t % 60);
    else snprintf(out, size, "%lds", t);
}

void metrics_log_progress(MetricsLog *log, long step, long total, const char *extra)
{
    if (!log->tty || log->quiet) return;
    double elapsed = monotonic_seconds() - log->start_time;
    long done = step - log->start_step;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    char eta[32];
    format_duration(rate > 0 ? (double)(total - step) / rate : NAN, eta, sizeof eta);
    fprintf(stderr, "\r\033[K%-8s %ld/%ld  %5.1f%%  %.2f step/s  ETA %s  %s", log->stage, step, total,
            total > 0 ? 100.0 * (double)step / (double)total : 100.0, rate, eta, extra ? extra : "");
    fflush(stderr);
}

void metrics_log_close(MetricsLog *log)
{
    if (log->tty && !log->quiet) fputc('\n', stderr);
    if (log->file) fclose(log->file);
    log->file = NULL;
}

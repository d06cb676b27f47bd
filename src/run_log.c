#include "run_log.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fs_util.h"

struct RunLog {
    int saved_stderr;   /* the terminal (or whatever stderr was) */
    int pipe_read;
    FILE *file;
    pthread_t thread;
    int in_progress_line; /* between a '\r' and the next newline */
    char path[4096];
};

/* The file gets everything but progress lines: they redraw themselves with
 * '\r' many times a second and the metrics file holds their numbers. */
static void write_to_file(RunLog *log, const char *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\r') log->in_progress_line = 1;
        else if (log->in_progress_line && buf[i] == '\n') log->in_progress_line = 0;
        else if (!log->in_progress_line) fputc(buf[i], log->file);
    }
}

/* Copies everything from the pipe to the old stderr and to the file. */
static void *pump(void *arg)
{
    RunLog *log = arg;
    char buf[4096];
    ssize_t n;
    while ((n = read(log->pipe_read, buf, sizeof buf)) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(log->saved_stderr, buf + off, (size_t)(n - off));
            if (w <= 0) break;
            off += w;
        }
        write_to_file(log, buf, (size_t)n);
        fflush(log->file);
    }
    return NULL;
}

static void log_name(char *out, size_t size, const char *dir, const char *command, int rank)
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    char stamp[32];
    strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
    if (rank >= 0) snprintf(out, size, "%s/logs/%s-%s-rank%d.log", dir, command, stamp, rank);
    else snprintf(out, size, "%s/logs/%s-%s.log", dir, command, stamp);
}

int run_log_start(const char *dir, const char *command, int rank, RunLog **out, Error *err)
{
    *out = NULL;
    char logs[4096];
    snprintf(logs, sizeof logs, "%s/logs", dir);
    if (fs_mkdir_p(logs, err)) return -1;
    RunLog *log = calloc(1, sizeof *log);
    if (!log) return error_set(err, "out of memory");
    log_name(log->path, sizeof log->path, dir, command, rank);
    log->file = fopen(log->path, "a");
    if (!log->file) {
        free(log);
        return error_set_errno(err, "cannot open log file %s", logs);
    }
    /* Progress lines are for terminals; once stderr is a pipe, only this
     * variable can tell the process that a person is watching. */
    if (isatty(STDERR_FILENO)) setenv("MODPO_STDERR_TTY", "1", 1);
    int fds[2];
    fflush(stderr);
    if (pipe(fds) != 0 || (log->saved_stderr = dup(STDERR_FILENO)) < 0 ||
        dup2(fds[1], STDERR_FILENO) < 0) {
        fclose(log->file);
        free(log);
        return error_set_errno(err, "cannot redirect stderr into %s", logs);
    }
    close(fds[1]);
    log->pipe_read = fds[0];
    if (pthread_create(&log->thread, NULL, pump, log) != 0) {
        dup2(log->saved_stderr, STDERR_FILENO);
        close(log->saved_stderr);
        close(log->pipe_read);
        fclose(log->file);
        free(log);
        return error_set(err, "cannot start the log thread");
    }
    *out = log;
    return 0;
}

void run_log_stop(RunLog *log, const char *last_line)
{
    if (!log) return;
    fflush(stderr);
    /* Putting the old stderr back closes the pipe's last write end, so the
     * pump sees end of file after copying what is left. */
    dup2(log->saved_stderr, STDERR_FILENO);
    pthread_join(log->thread, NULL);
    close(log->saved_stderr);
    close(log->pipe_read);
    if (last_line) fprintf(log->file, "%s\n", last_line);
    fclose(log->file);
    free(log);
}

const char *run_log_path(const RunLog *log) { return log->path; }

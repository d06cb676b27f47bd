#include "checkpoint_dir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_util.h"

#define PREFIX "checkpoint-"
#define SUFFIX ".h5"
#define BEST_FILE "best"

int ckdir_file_name(char *out, size_t cap, int64_t step, Error *err)
{
    if (step < 0) return error_set(err, "checkpoint step %lld is negative", (long long)step);
    int n = snprintf(out, cap, PREFIX "%08lld" SUFFIX, (long long)step);
    if (n < 0 || (size_t)n >= cap) return error_set(err, "checkpoint name too long");
    return 0;
}

int ckdir_path(char *out, size_t cap, const char *dir, int64_t step, Error *err)
{
    char name[64];
    if (ckdir_file_name(name, sizeof name, step, err)) return -1;
    int n = snprintf(out, cap, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= cap) return error_set(err, "%s/%s: path too long", dir, name);
    return 0;
}

bool ckdir_parse_name(const char *name, int64_t *step)
{
    size_t plen = strlen(PREFIX), slen = strlen(SUFFIX), len = strlen(name);
    if (len < plen + 8 + slen || strncmp(name, PREFIX, plen) != 0) return false;
    if (strcmp(name + len - slen, SUFFIX) != 0) return false;
    size_t ndig = len - plen - slen;
    if (ndig > 18) return false; /* keeps the value inside int64 */
    int64_t v = 0;
    for (size_t i = 0; i < ndig; i++) {
        char ch = name[plen + i];
        if (ch < '0' || ch > '9') return false;
        v = v * 10 + (ch - '0');
    }
    /* Only the canonical spelling counts: "checkpoint-000000100.h5" is not
     * the file ckdir_path would name for step 100. */
    char canon[64];
    if (ckdir_file_name(canon, sizeof canon, v, NULL) || strcmp(canon, name) != 0) return false;
    *step = v;
    return true;
}

#define SHARD_FMT PREFIX "%08lld-shard-%05d-of-%05d" SUFFIX

int ckdir_shard_path(char *out, size_t cap, const char *dir, int64_t step, int rank, int n_shards,
                     Error *err)
{
    if (step < 0 || rank < 0 || rank >= n_shards || n_shards > 99999)
        return error_set(err, "checkpoint shard %d of %d at step %lld does not exist", rank, n_shards,
                         (long long)step);
    int n = snprintf(out, cap, "%s/" SHARD_FMT, dir, (long long)step, rank, n_shards);
    if (n < 0 || (size_t)n >= cap) return error_set(err, "%s: path too long", dir);
    return 0;
}

bool ckdir_parse_shard_name(const char *name, int64_t *step, int *rank, int *n_shards)
{
    long long st;
    int r, n, end = -1;
    if (sscanf(name, PREFIX "%lld-shard-%d-of-%d" SUFFIX "%n", &st, &r, &n, &end) != 3 || end < 0 ||
        name[end] != '\0')
        return false;
    char canon[128];
    if (st < 0 || r < 0 || r >= n || n > 99999) return false;
    snprintf(canon, sizeof canon, SHARD_FMT, st, r, n);
    if (strcmp(canon, name) != 0) return false;
    *step = st;
    *rank = r;
    *n_shards = n;
    return true;
}

/* Removes DIR's shard files of `step` (every one when step < 0 and
 * orphans_only: those whose index is missing). */
static int remove_shards(const char *dir, int64_t step, bool orphans_only, int *n_removed, Error *err)
{
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return error_set_errno(err, "open directory %s", dir);
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        int64_t s;
        int r, n;
        if (!ckdir_parse_shard_name(e->d_name, &s, &r, &n)) continue;
        if (orphans_only) {
            char index[64];
            struct stat st;
            if (ckdir_file_name(index, sizeof index, s, err)) { rc = -1; break; }
            if (fstatat(dirfd(d), index, &st, 0) == 0) continue;
        } else if (s != step) {
            continue;
        }
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT)
            rc = error_set_errno(err, "remove %s/%s", dir, e->d_name);
        else if (n_removed) (*n_removed)++;
    }
    closedir(d);
    return rc;
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

static int push_step(int64_t **steps, size_t *n, size_t *cap, int64_t v)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 16;
        int64_t *p = realloc(*steps, c * sizeof *p);
        if (!p) return -1;
        *steps = p;
        *cap = c;
    }
    (*steps)[(*n)++] = v;
    return 0;
}

static bool is_regular(DIR *d, const struct dirent *e)
{
    if (e->d_type != DT_UNKNOWN) return e->d_type == DT_REG;
    struct stat st; /* file systems that do not fill d_type */
    return fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int ckdir_list(const char *dir, int64_t **steps, size_t *n, Error *err)
{
    *steps = NULL;
    *n = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return error_set_errno(err, "open directory %s", dir);
    }
    size_t cap = 0;
    struct dirent *e;
    int rc = 0;
    errno = 0;
    while ((e = readdir(d)) != NULL) {
        int64_t step;
        if (!ckdir_parse_name(e->d_name, &step) || !is_regular(d, e)) continue;
        if (push_step(steps, n, &cap, step)) {
            rc = error_set(err, "listing %s: out of memory", dir);
            break;
        }
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = error_set_errno(err, "read directory %s", dir);
    closedir(d);
    if (rc) {
        free(*steps);
        *steps = NULL;
        *n = 0;
        return -1;
    }
    if (*n) qsort(*steps, *n, sizeof **steps, cmp_desc);
    return 0;
}

static int best_path(char *out, size_t cap, const char *dir, Error *err)
{
    int n = snprintf(out, cap, "%s/" BEST_FILE, dir);
    if (n < 0 || (size_t)n >= cap) return error_set(err, "%s: path too long", dir);
    return 0;
}

int ckdir_set_best(const char *dir, int64_t step, Error *err)
{
    char path[PATH_MAX], line[64];
    if (best_path(path, sizeof path, dir, err)) return -1;
    if (ckdir_file_name(line, sizeof line - 1, step, err)) return -1;
    strcat(line, "\n");
    return fs_write_atomic(path, line, strlen(line), err);
}

int ckdir_get_best(const char *dir, int64_t *step, Error *err)
{
    char path[PATH_MAX];
    *step = -1;
    if (best_path(path, sizeof path, dir, err)) return -1;
    if (!fs_exists(path)) return 0;
    char *text;
    size_t n;
    if (fs_read_file(path, &text, &n, err)) return -1;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        text[--n] = '\0';
    int rc =
        ckdir_parse_name(text, step)
            ? 0
            : error_set(err, "%s: expected one checkpoint file name, found \"%.80s\"", path, text);
    free(text);
    return rc;
}

static int remove_checkpoint(const char *dir, int64_t step, Error *err)
{
    char path[PATH_MAX];
    if (ckdir_path(path, sizeof path, dir, step, err)) return -1;
    if (unlink(path) != 0 && errno != ENOENT) return error_set_errno(err, "remove %s", path);
    return remove_shards(dir, step, false, NULL, err);
}

int ckdir_prune(const char *dir, int save_total_limit, Error *err)
{
    if (save_total_limit <= 0) return 0;
    int64_t best, *steps;
    size_t n;
    if (ckdir_get_best(dir, &best, err)) return -1;
    if (ckdir_list(dir, &steps, &n, err)) return -1;
    int rc = 0, removed = 0;
    for (size_t i = (size_t)save_total_limit; rc == 0 && i < n; i++) {
        if (steps[i] == best) continue;
        rc = remove_checkpoint(dir, steps[i], err);
        removed++;
    }
    free(steps);
    /* Not needed for correctness (a resurrected old checkpoint is still
     * valid), only so the freed space and the listing agree after a crash. */
    if (rc == 0 && removed) rc = fs_fsync_dir(dir, err);
    return rc;
}

int ckdir_save(const char *dir, int64_t step, const CheckpointWriter *w, int save_total_limit,
               bool is_best, Error *err)
{
    char path[PATH_MAX];
    if (ckdir_path(path, sizeof path, dir, step, err)) return -1;
    if (fs_mkdir_p(dir, err)) return -1;
    if (ckpt_write(w, path, err)) return -1;
    if (is_best && ckdir_set_best(dir, step, err)) return -1;
    return ckdir_prune(dir, save_total_limit, err);
}

/* Appends printf-style text to a bounded buffer, truncating silently: the
 * warning is for a person, the decision is made on the step. */
__attribute__((format(printf, 3, 4))) static void append(char *buf, size_t cap, const char *fmt,
                                                         ...)
{
    if (!buf || cap == 0) return;
    size_t len = strnlen(buf, cap - 1);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, cap - len, fmt, ap);
    va_end(ap);
}

/* ckpt_open's message without its leading "PATH: ", to put after the name. */
static const char *reason(const Error *e, const char *path)
{
    size_t n = strlen(path);
    if (strncmp(e->msg, path, n) == 0 && strncmp(e->msg + n, ": ", 2) == 0) return e->msg + n + 2;
    return e->msg;
}

int ckdir_find_latest_valid(const char *dir, int64_t *step, Checkpoint **ckpt, char *warn,
                            size_t warn_cap, Error *err)
{
    *step = -1;
    if (ckpt) *ckpt = NULL;
    if (warn && warn_cap) warn[0] = '\0';
    int64_t *steps;
    size_t n;
    if (ckdir_list(dir, &steps, &n, err)) return -1;
    char notes[ERROR_MSG_MAX] = "";
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX], name[64];
        Error e;
        if (ckdir_path(path, sizeof path, dir, steps[i], err) ||
            ckdir_file_name(name, sizeof name, steps[i], err)) {
            free(steps);
            return -1;
        }
        Checkpoint *c = ckpt_open(path, &e);
        if (!c) {
            append(notes, sizeof notes, "%s is corrupt (%s); ", name, reason(&e, path));
            continue;
        }
        if (notes[0]) append(warn, warn_cap, "%susing %s", notes, name);
        *step = steps[i];
        if (ckpt) *ckpt = c;
        else ckpt_close(c);
        free(steps);
        return 0;
    }
    free(steps);
    if (n == 0) return 0;
    notes[strlen(notes) >= 2 ? strlen(notes) - 2 : 0] = '\0'; /* drop the trailing "; " */
    return error_set(err, "%s: none of its %zu checkpoints is valid: %s", dir, n, notes);
}

/* "<checkpoint name or best>.tmp-<digits>": what fs_tmp_name makes for them. */
static bool is_leftover(const char *name)
{
    const char *tmp = strstr(name, ".tmp-");
    if (!tmp || tmp[5] == '\0' || tmp - name >= 128) return false;
    for (const char *p = tmp + 5; *p; p++)
        if (*p < '0' || *p > '9') return false;
    char base[128];
    memcpy(base, name, (size_t)(tmp - name));
    base[tmp - name] = '\0';
    int64_t step;
    int r, n;
    return strcmp(base, BEST_FILE) == 0 || ckdir_parse_name(base, &step) ||
           ckdir_parse_shard_name(base, &step, &r, &n);
}

int ckdir_remove_leftovers(const char *dir, int *n_removed, Error *err)
{
    if (n_removed) *n_removed = 0;
    DIR *d = opendir(dir);
    if (!d) {
        if (errno == ENOENT) return 0;
        return error_set_errno(err, "open directory %s", dir);
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (!is_leftover(e->d_name)) continue;
        if (unlinkat(dirfd(d), e->d_name, 0) != 0 && errno != ENOENT)
            rc = error_set_errno(err, "remove %s/%s", dir, e->d_name);
        else if (n_removed) (*n_removed)++;
    }
    closedir(d);
    if (rc == 0) rc = remove_shards(dir, -1, true, n_removed, err);
    return rc;
}

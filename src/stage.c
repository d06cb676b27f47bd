#include "stage.h"

#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs_util.h"
#include "train_state.h"

#define DIFF_MAX 8192

static void join(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

bool stage_is_done(const char *dir)
{
    char path[CONFIG_STR_MAX + 16];
    join(path, sizeof path, dir, "DONE");
    return fs_exists(path);
}

const char *stage_status_name(StageStatus s)
{
    return s == STAGE_DONE ? "done" : s == STAGE_RESUME ? "resume" : "fresh";
}

/* "00001-of-00004.jsonl": a generation shard (generation_io.h). */
static bool is_generation_shard(const char *name)
{
    int r, n, end = -1;
    return strlen(name) == 20 && sscanf(name, "%5d-of-%5d.jsonl%n", &r, &n, &end) == 2 && end == 20;
}

/* True when every entry is one modpo writes before its first checkpoint
 * (or, for generation, the shards of an interrupted run: generation has
 * no checkpoint and starts over). */
static int only_own_startup_files(const char *dir, Error *err)
{
    DIR *d = opendir(dir);
    if (!d) return error_set_errno(err, "cannot list %s", dir);
    int own = 1;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, "config.cfg") ||
            !strcmp(n, "metrics.jsonl") || !strcmp(n, "checkpoints") || is_generation_shard(n))
            continue;
        own = 0;
    }
    closedir(d);
    return own;
}

/* Shards of an interrupted generation (possibly of another rank count). */
static int remove_generation_shards(const char *dir, Error *err)
{
    DIR *d = opendir(dir);
    if (!d) return error_set_errno(err, "cannot list %s", dir);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL)
        if (is_generation_shard(e->d_name) && unlinkat(dirfd(d), e->d_name, 0) != 0)
            rc = error_set_errno(err, "remove %s/%s", dir, e->d_name);
    closedir(d);
    return rc;
}

static int check_saved_config(const char *dir, const Config *cfg, const char *const *critical,
                              bool force, Error *err)
{
    char path[CONFIG_STR_MAX + 16];
    join(path, sizeof path, dir, "config.cfg");
    if (!fs_exists(path)) return 0;
    Config *saved = malloc(sizeof *saved);
    char *text = calloc(1, DIFF_MAX);
    int rc = 0;
    if (!saved || !text) { rc = error_set(err, "out of memory"); goto done; }
    conf_defaults(saved);
    if (conf_load(saved, path, text, DIFF_MAX)) {
        rc = error_set(err, "%s: the saved configuration does not load:\n%s", path, text);
        goto done;
    }
    int n = conf_diff(saved, cfg, critical, text, DIFF_MAX);
    if (n > 0 && !force)
        rc = error_set(err, "%s was made with different settings; refusing to mix them "
                            "(rerun with --force to continue anyway, or use another run.run_tag):\n%s",
                       dir, text);
    else if (n > 0)
        fprintf(stderr, "modpo: warning: --force: %s continues with changed settings:\n%s", dir, text);
done:
    free(saved);
    free(text);
    return rc;
}

static int save_config(const char *dir, const Config *cfg, Error *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return error_set_errno(err, "open_memstream");
    fprintf(f, "# resolved configuration of this stage (from %s)\n", cfg->source);
    conf_write(cfg, f);
    fclose(f);
    char path[CONFIG_STR_MAX + 16];
    join(path, sizeof path, dir, "config.cfg");
    int rc = fs_write_atomic(path, buf, len, err);
    free(buf);
    return rc;
}

int stage_open(const char *dir, const Config *cfg, const char *const *critical, bool force,
               StageStatus *status, Error *err)
{
    bool empty = true;
    if (fs_dir_is_empty(dir, &empty, err)) return -1;
    if (empty) {
        *status = STAGE_FRESH;
        if (fs_mkdir_p(dir, err)) return -1;
        return save_config(dir, cfg, err);
    }
    /* Settings matter only where there is work to keep: a finished stage or
     * checkpoints.  A stage that never reached its first checkpoint starts
     * over with whatever the user changed (a fixed data path, say). */
    if (stage_is_done(dir)) {
        *status = STAGE_DONE;
        return check_saved_config(dir, cfg, critical, force, err);
    }
    if (train_state_exists(dir)) {
        *status = STAGE_RESUME;
        if (check_saved_config(dir, cfg, critical, force, err)) return -1;
        return save_config(dir, cfg, err);
    }
    int own = only_own_startup_files(dir, err);
    if (own < 0) return -1;
    if (!own)
        return error_set(err, "%s is not empty and holds no modpo checkpoint; refusing to "
                              "overwrite it (remove it or choose another run.run_tag)", dir);
    char metrics[CONFIG_STR_MAX + 16];
    join(metrics, sizeof metrics, dir, "metrics.jsonl");
    remove(metrics);
    if (remove_generation_shards(dir, err)) return -1;
    *status = STAGE_FRESH;
    return save_config(dir, cfg, err);
}

int stage_mark_done(const char *dir, const char *summary, Error *err)
{
    char path[CONFIG_STR_MAX + 16];
    join(path, sizeof path, dir, "DONE");
    const char *text = summary ? summary : "{}";
    char buf[8192];
    int n = snprintf(buf, sizeof buf, "%s\n", text);
    return fs_write_atomic(path, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, err);
}

int stage_open_collective(const DistComm *comm, const char *dir, const Config *cfg,
                          const char *const *critical, bool force, StageStatus *status, Error *err)
{
    int st = STAGE_FRESH;
    if (dist_is_root(comm)) {
        StageStatus s;
        if (stage_open(dir, cfg, critical, force, &s, err)) return -1;
        st = (int)s;
    }
    if (dist_bcast_int(comm, &st, err)) return -1;
    *status = (StageStatus)st;
    return 0;
}

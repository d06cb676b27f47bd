#include "fs_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int fs_tmp_name(char *out, size_t cap, const char *path, Error *err)
{
    int n = snprintf(out, cap, "%s.tmp-%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= cap) return error_set(err, "%s: path too long", path);
    return 0;
}

int fs_dirname(char *out, size_t cap, const char *path, Error *err)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        if (cap < 2) return error_set(err, "%s: path too long", path);
        strcpy(out, ".");
        return 0;
    }
    size_t len = slash == path ? 1 : (size_t)(slash - path); /* "/x" -> "/" */
    if (len >= cap) return error_set(err, "%s: path too long", path);
    memcpy(out, path, len);
    out[len] = '\0';
    return 0;
}

/* Retries on EINTR and short writes, which a signal handler (the progress
 * line, Slurm's SIGTERM) can cause. */
static int write_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int fs_fsync_file(const char *path, Error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return error_set_errno(err, "open %s", path);
    if (fsync(fd) != 0) {
        error_set_errno(err, "fsync %s", path);
        close(fd);
        return -1;
    }
    if (close(fd) != 0) return error_set_errno(err, "close %s", path);
    return 0;
}

int fs_fsync_dir(const char *dir, Error *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return error_set_errno(err, "open directory %s", dir);
    int rc = fsync(fd);
    if (rc != 0 && errno != EINVAL) {
        error_set_errno(err, "fsync directory %s", dir);
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int fsync_parent(const char *path, Error *err)
{
    char dir[PATH_MAX];
    if (fs_dirname(dir, sizeof dir, path, err)) return -1;
    return fs_fsync_dir(dir, err);
}

int fs_publish(const char *tmp, const char *path, Error *err)
{
    if (fs_fsync_file(tmp, err)) goto fail;
    if (rename(tmp, path) != 0) {
        error_set_errno(err, "rename %s to %s", tmp, path);
        goto fail;
    }
    /* From here path holds the new content; only its durability is at stake,
     * so the temporary name is already gone and must not be unlinked. */
    return fsync_parent(path, err);
fail:
    unlink(tmp);
    return -1;
}

int fs_write_atomic(const char *path, const void *data, size_t n, Error *err)
{
    char tmp[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, path, err)) return -1;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) return error_set_errno(err, "create %s", tmp);
    if (write_all(fd, data, n) != 0) {
        error_set_errno(err, "write %s", tmp);
        close(fd);
        unlink(tmp);
        return -1;
    }
    /* close() can report a deferred write error (NFS, quota). */
    if (close(fd) != 0) {
        error_set_errno(err, "close %s", tmp);
        unlink(tmp);
        return -1;
    }
    return fs_publish(tmp, path, err);
}

static int ensure_dir(const char *path, Error *err)
{
    struct stat st;
    if (mkdir(path, 0777) == 0) return fsync_parent(path, err);
    if (errno != EEXIST) return error_set_errno(err, "mkdir %s", path);
    if (stat(path, &st) != 0) return error_set_errno(err, "stat %s", path);
    if (!S_ISDIR(st.st_mode)) return error_set(err, "%s exists and is not a directory", path);
    return 0;
}

int fs_mkdir_p(const char *path, Error *err)
{
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len == 0) return error_set(err, "mkdir: empty path");
    if (len >= sizeof buf) return error_set(err, "%s: path too long", path);
    memcpy(buf, path, len + 1);
    /* Each prefix ending before a '/' is a directory to make first. */
    for (size_t i = 1; i < len; i++) {
        if (buf[i] != '/' || buf[i - 1] == '/') continue;
        buf[i] = '\0';
        int rc = ensure_dir(buf, err);
        buf[i] = '/';
        if (rc) return -1;
    }
    return ensure_dir(buf, err);
}

int fs_dir_is_empty(const char *path, bool *empty, Error *err)
{
    DIR *d = opendir(path);
    if (!d) {
        if (errno == ENOENT) {
            *empty = true;
            return 0;
        }
        return error_set_errno(err, "open directory %s", path);
    }
    *empty = true;
    errno = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
            *empty = false;
            break;
        }
    }
    int rc = (e == NULL && errno != 0) ? error_set_errno(err, "read directory %s", path) : 0;
    closedir(d);
    return rc;
}

static int remove_at(int parent, const char *name, char *path, size_t cap, Error *err);

/* Empties the directory open as fd; path names it for messages and is used
 * as scratch space to build the children's paths. */
static int remove_children(int fd, char *path, size_t cap, Error *err)
{
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return error_set_errno(err, "open directory %s", path);
    }
    size_t len = strlen(path);
    int rc = 0;
    struct dirent *e;
    errno = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        if (len + 1 + strlen(e->d_name) >= cap) {
            rc = error_set(err, "%s/%s: path too long", path, e->d_name);
            break;
        }
        path[len] = '/';
        strcpy(path + len + 1, e->d_name);
        rc = remove_at(dirfd(d), e->d_name, path, cap, err);
        path[len] = '\0';
        errno = 0;
    }
    if (rc == 0 && errno != 0) rc = error_set_errno(err, "read directory %s", path);
    closedir(d);
    return rc;
}

static int remove_at(int parent, const char *name, char *path, size_t cap, Error *err)
{
    struct stat st;
    if (fstatat(parent, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) return 0;
        return error_set_errno(err, "stat %s", path);
    }
    if (!S_ISDIR(st.st_mode)) {
        if (unlinkat(parent, name, 0) != 0 && errno != ENOENT)
            return error_set_errno(err, "remove %s", path);
        return 0;
    }
    int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return error_set_errno(err, "open directory %s", path);
    if (remove_children(fd, path, cap, err)) return -1;
    if (unlinkat(parent, name, AT_REMOVEDIR) != 0 && errno != ENOENT)
        return error_set_errno(err, "remove directory %s", path);
    return 0;
}

int fs_remove_tree(const char *path, Error *err)
{
    char buf[PATH_MAX];
    if (strlen(path) >= sizeof buf) return error_set(err, "%s: path too long", path);
    if (path[0] == '\0') return error_set(err, "remove: empty path");
    strcpy(buf, path);
    return remove_at(AT_FDCWD, path, buf, sizeof buf, err);
}

int fs_read_file(const char *path, char **data, size_t *n, Error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return error_set_errno(err, "open %s", path);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1) break;
        char *bigger = realloc(buf, cap * 2);
        if (!bigger) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = bigger;
        cap *= 2;
    }
    if (!buf) {
        fclose(f);
        return error_set(err, "%s: out of memory", path);
    }
    if (ferror(f)) {
        error_set_errno(err, "read %s", path);
        free(buf);
        fclose(f);
        return -1;
    }
    fclose(f);
    buf[len] = '\0';
    *data = buf;
    if (n) *n = len;
    return 0;
}

bool fs_exists(const char *path)
{
    struct stat st;
    return lstat(path, &st) == 0;
}

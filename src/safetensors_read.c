/* Opening a safetensors file: mapping it, locating the header and the data,
 * and the accessors of the opened file. */
#include "safetensors_internal.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const char *safetensors_path(const SafetensorsFile *f) { return f->path; }
size_t safetensors_count(const SafetensorsFile *f) { return f->n_tensors; }

const SafetensorsTensor *safetensors_tensor(const SafetensorsFile *f, size_t i)
{
    return i < f->n_tensors ? &f->tensors[i] : NULL;
}

const SafetensorsTensor *safetensors_find(const SafetensorsFile *f, const char *name)
{
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

const char *safetensors_metadata(const SafetensorsFile *f, const char *key)
{
    for (size_t i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}

void safetensors_close(SafetensorsFile *f)
{
    if (!f) return;
    for (size_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    free(f->tensors);
    for (size_t i = 0; i < 2 * f->n_meta; i++) free(f->meta[i]);
    free(f->meta);
    if (f->map) munmap(f->map, f->map_size);
    free(f->path);
    free(f);
}
static int map_file(SafetensorsFile *f, Error *err)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return error_set_errno(err, "cannot open %s", f->path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return error_set_errno(err, "cannot stat %s", f->path);
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return error_set(err, "%s: not a regular file", f->path);
    }
    f->map_size = (size_t)st.st_size;
    if (f->map_size < 8) {
        close(fd);
        return error_set(err, "%s: file is %zu bytes, shorter than the 8-byte header length "
                         "(truncated?)", f->path, f->map_size);
    }
    /* Populated up front: every tensor is read, and one bulk mapping is far
     * cheaper than a page fault per 4 KB of a 10 GB shard. */
    void *p = mmap(NULL, f->map_size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    close(fd); /* the mapping keeps the file alive */
    if (p == MAP_FAILED) return error_set_errno(err, "cannot mmap %s", f->path);
    f->map = p;
    return 0;
}

int safetensors_open(const char *path, SafetensorsFile **out, Error *err)
{
    *out = NULL;
    SafetensorsFile *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return error_set(err, "%s: out of memory", path);
    }
    if (map_file(f, err)) goto fail;
    uint64_t hlen;
    memcpy(&hlen, f->map, 8);
    if (hlen > SAFETENSORS_MAX_HEADER) {
        error_set(err, "%s: header length %llu is absurd (limit %u bytes): not a safetensors "
                  "file or corrupt", path, (unsigned long long)hlen, SAFETENSORS_MAX_HEADER);
        goto fail;
    }
    if (hlen > f->map_size - 8) {
        error_set(err, "%s: header length %llu but only %zu bytes follow (truncated?)", path,
                  (unsigned long long)hlen, f->map_size - 8);
        goto fail;
    }
    const char *text = (const char *)f->map + 8;
    f->data = (const uint8_t *)f->map + 8 + hlen;
    f->data_size = f->map_size - 8 - (size_t)hlen;
    if (st_parse_header(f, text, (size_t)hlen, err)) goto fail;
    *out = f;
    return 0;
fail:
    safetensors_close(f);
    return -1;
}

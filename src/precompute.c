#include "precompute.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "batch.h"
#include "checkpoint.h"
#include "fs_util.h"

int pair_logps_all(const DistComm *comm, Backend *b, BackendAdapter *a, const PairSequences *ps,
                   int batch_size, float *chosen, float *rejected, Error *err)
{
    size_t *idx = malloc((size_t)batch_size * sizeof *idx);
    float *logps = malloc(2 * (size_t)batch_size * sizeof *logps);
    int rc = (idx && logps) ? 0 : error_set(err, "out of memory");
    size_t lo, hi;
    dist_shard_blocks(comm, ps->n, (size_t)batch_size, &lo, &hi);
    for (size_t start = lo; rc == 0 && start < hi; start += (size_t)batch_size) {
        int n = (int)(hi - start < (size_t)batch_size ? hi - start : (size_t)batch_size);
        for (int i = 0; i < n; i++) idx[i] = start + (size_t)i;
        Batch batch;
        rc = batch_from_pairs(ps, idx, n, &batch, err);
        if (rc) break;
        rc = backend_logps(b, a, &batch, logps, 0, err) || backend_sync(b, err);
        batch_free(&batch);
        for (int i = 0; rc == 0 && i < n; i++) {
            chosen[start + (size_t)i] = logps[i];
            rejected[start + (size_t)i] = logps[n + i];
        }
    }
    free(idx);
    free(logps);
    if (rc == 0)
        rc = dist_allgather_ranges_f32(comm, chosen, ps->n, lo, hi, err) ||
             dist_allgather_ranges_f32(comm, rejected, ps->n, lo, hi, err);
    return rc ? -1 : 0;
}

static unsigned long crc_sequence(unsigned long crc, const Sequence *s)
{
    int32_t head[2] = {s->len, s->completion_start};
    crc = crc32(crc, (const Bytef *)head, sizeof head);
    return crc32(crc, (const Bytef *)s->tokens, (uInt)((size_t)s->len * sizeof(int32_t)));
}

unsigned long pair_sequences_fingerprint(const PairSequences *ps)
{
    unsigned long crc = crc32(0L, Z_NULL, 0);
    for (size_t i = 0; i < ps->n; i++) {
        crc = crc_sequence(crc, &ps->chosen[i]);
        crc = crc_sequence(crc, &ps->rejected[i]);
    }
    return crc;
}

/* 1 when PATH holds logps for exactly these sequences and this model. */
static int load_cache(const char *path, const char *model_key, const PairSequences *ps,
                      float *chosen, float *rejected)
{
    if (!fs_exists(path)) return 0;
    Error err;
    Checkpoint *c = ckpt_open(path, &err);
    if (!c) return 0;
    int64_t fp = -1, n = -1;
    const char *key = NULL;
    int ok = ckpt_get_attr_i64(c, "fingerprint", &fp, &err) == 0 &&
             ckpt_get_attr_i64(c, "n_pairs", &n, &err) == 0 &&
             ckpt_get_attr_str(c, "model", &key, &err) == 0 &&
             (unsigned long)fp == pair_sequences_fingerprint(ps) && (size_t)n == ps->n &&
             strcmp(key, model_key) == 0 &&
             ckpt_get_f32(c, "logps/chosen", chosen, ps->n, &err) == 0 &&
             ckpt_get_f32(c, "logps/rejected", rejected, ps->n, &err) == 0;
    ckpt_close(c);
    return ok;
}

static int save_cache(const char *path, const char *model_key, const PairSequences *ps,
                      const float *chosen, const float *rejected, Error *err)
{
    char dir[4096];
    if (fs_dirname(dir, sizeof dir, path, err) || fs_mkdir_p(dir, err)) return -1;
    CheckpointWriter *w = ckpt_writer_new();
    if (!w) return error_set(err, "out of memory");
    ckpt_attr_str(w, "kind", "pair-logps");
    ckpt_attr_str(w, "model", model_key);
    ckpt_attr_i64(w, "fingerprint", (int64_t)pair_sequences_fingerprint(ps));
    ckpt_attr_i64(w, "n_pairs", (int64_t)ps->n);
    ckpt_put_f32(w, "logps/chosen", chosen, ps->n);
    ckpt_put_f32(w, "logps/rejected", rejected, ps->n);
    int rc = ckpt_write(w, path, err);
    ckpt_writer_free(w);
    return rc;
}

int pair_logps_cached(const DistComm *comm, const char *path, const char *model_key, Backend *b,
                      BackendAdapter *a, const PairSequences *ps, int batch_size, float *chosen,
                      float *rejected, bool *cached, Error *err)
{
    int hit = dist_is_root(comm) ? load_cache(path, model_key, ps, chosen, rejected) : 0;
    if (dist_bcast_int(comm, &hit, err)) return -1;
    *cached = hit != 0;
    if (*cached)
        return dist_bcast(comm, chosen, ps->n * sizeof *chosen, err) ||
               dist_bcast(comm, rejected, ps->n * sizeof *rejected, err) ? -1 : 0;
    if (pair_logps_all(comm, b, a, ps, batch_size, chosen, rejected, err)) return -1;
    if (dist_is_root(comm) && save_cache(path, model_key, ps, chosen, rejected, err)) return -1;
    /* the file exists for everyone (a group that starts next reads it) */
    return dist_barrier(comm, err);
}

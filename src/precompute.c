#include "precompute.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "batch.h"
#include "checkpoint.h"
#include "fs_util.h"
#include "unique_sequences.h"

/* Distinct sequences [start, start + n) as a batch: labels from each
 * one's first label start, and a new sum at each later start inside it. */
static int distinct_batch(const UniqueSequences *u, size_t start, int n, Batch *batch, Error *err)
{
    if (batch_from_sequences(u->seqs + start, n, batch, err)) return -1;
    size_t T = (size_t)batch->seq_len;
    batch->sum_start = calloc((size_t)n * T, 1);
    if (!batch->sum_start) {
        batch_free(batch);
        return error_set(err, "out of memory for a batch of %d sequences", n);
    }
    for (int i = 0; i < n; i++) {
        size_t d = start + (size_t)i;
        const int32_t *from = u->sum_from + u->sum_base[d];
        int m = (int)(u->sum_base[d + 1] - u->sum_base[d]), len = batch->lengths[i];
        uint8_t *mask = batch->label_mask + (size_t)i * T, *cut = batch->sum_start + (size_t)i * T;
        for (int t = 0; t < batch->seq_len; t++) mask[t] = t >= from[0] && t < len;
        for (int j = 1; j < m; j++)
            if (from[j] < len) cut[from[j]] = 1;
    }
    return 0;
}

/* The backend's sums of one batch -> each (sequence, start)'s logp: the
 * segments from that start on, summed. */
static void logps_from_segments(const UniqueSequences *u, size_t start, int n, const Batch *batch,
                                const float *segments, float *logps)
{
    int o = 0;
    for (int i = 0; i < n; i++) {
        size_t d = start + (size_t)i, base = u->sum_base[d], m = u->sum_base[d + 1] - base;
        float *seg = logps + base; /* segments first, summed in place below */
        for (size_t j = 0; j < m; j++)
            seg[j] = j == 0 || u->sum_from[base + j] < batch->lengths[i] ? segments[o++] : 0.0f;
        double acc = 0;
        for (size_t j = m; j-- > 0;) {
            acc += seg[j];
            seg[j] = (float)acc;
        }
    }
}

/* Logps of every (sequence, start) of the distinct sequences [lo, hi),
 * 2 * batch_size sequences at a time: as many per batch as batch_size
 * pairs hold. */
static int logps_of_range(Backend *b, BackendAdapter *a, const UniqueSequences *u, size_t lo,
                          size_t hi, size_t unit, float *logps, Error *err)
{
    for (size_t start = lo; start < hi; start += unit) {
        int n = (int)(hi - start < unit ? hi - start : unit);
        Batch batch;
        if (distinct_batch(u, start, n, &batch, err)) return -1;
        float *segments = malloc((size_t)batch_n_sums(&batch) * sizeof *segments);
        int rc = segments ? 0 : error_set(err, "out of memory");
        if (rc == 0) rc = backend_logps(b, a, &batch, segments, 0, err) || backend_sync(b, err);
        if (rc == 0) logps_from_segments(u, start, n, &batch, segments, logps);
        free(segments);
        batch_free(&batch);
        if (rc) return -1;
    }
    return 0;
}

int pair_logps_all(const DistComm *comm, Backend *b, BackendAdapter *a, const PairSequences *ps,
                   int batch_size, float *chosen, float *rejected, Error *err)
{
    UniqueSequences u;
    if (unique_sequences_build(ps, &u, err)) return -1;
    float *logps = malloc((u.n_sums + 1) * sizeof *logps);
    int rc = logps ? 0 : error_set(err, "out of memory");
    /* Whole blocks per rank, so every rank forms the batches one process
     * would (dist_shard_blocks): the same bits at any rank count. */
    size_t unit = 2 * (size_t)(batch_size > 0 ? batch_size : 1), lo, hi;
    dist_shard_blocks(comm, u.n, unit, &lo, &hi);
    if (rc == 0) rc = logps_of_range(b, a, &u, lo, hi, unit, logps, err);
    if (rc == 0)
        rc = dist_allgather_ranges_f32(comm, logps, u.n_sums, u.sum_base[lo], u.sum_base[hi], err);
    for (size_t p = 0; rc == 0 && p < ps->n; p++) {
        chosen[p] = logps[u.chosen[p]];
        rejected[p] = logps[u.rejected[p]];
    }
    free(logps);
    unique_sequences_free(&u);
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

#include "dist_comm.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shuffle.h"

int dist_check(int mpi_rc, const char *what, Error *err)
{
    if (mpi_rc == MPI_SUCCESS) return 0;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "code %d", mpi_rc);
    return error_set(err, "%s: %s", what, text);
}

int dist_comm_world(DistComm *out, Error *err)
{
    int init = 0;
    MPI_Initialized(&init);
    if (!init) return error_set(err, "MPI is not initialised");
    memset(out, 0, sizeof *out);
    out->comm = MPI_COMM_WORLD;
    if (dist_check(MPI_Comm_rank(MPI_COMM_WORLD, &out->rank), "MPI_Comm_rank", err) ||
        dist_check(MPI_Comm_size(MPI_COMM_WORLD, &out->size), "MPI_Comm_size", err))
        return -1;
    return 0;
}

void dist_shard(const DistComm *c, size_t n, size_t *begin, size_t *end)
{
    /* rank < size always holds, so shard_range cannot fail */
    if (shard_range(n, dist_size(c), dist_rank(c), begin, end, NULL)) *begin = *end = 0;
}

int dist_barrier(const DistComm *c, Error *err)
{
    if (!dist_is_multi(c)) return 0;
    return dist_check(MPI_Barrier(c->comm), "MPI_Barrier", err);
}

int dist_bcast(const DistComm *c, void *buf, size_t bytes, Error *err)
{
    if (!dist_is_multi(c)) return 0;
    char *p = buf;
    while (bytes > 0) {
        int chunk = bytes > (size_t)INT_MAX ? INT_MAX : (int)bytes;
        if (dist_check(MPI_Bcast(p, chunk, MPI_BYTE, 0, c->comm), "MPI_Bcast", err)) return -1;
        p += chunk;
        bytes -= (size_t)chunk;
    }
    return 0;
}

int dist_bcast_int(const DistComm *c, int *v, Error *err)
{
    return dist_bcast(c, v, sizeof *v, err);
}

int dist_allreduce_sum_f64(const DistComm *c, double *x, size_t n, Error *err)
{
    if (!dist_is_multi(c) || n == 0) return 0;
    if (n > INT_MAX) return error_set(err, "all-reduce of %zu values: too many", n);
    return dist_check(MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_DOUBLE, MPI_SUM, c->comm),
                      "MPI_Allreduce", err);
}

int dist_allreduce_max_i64(const DistComm *c, int64_t *x, size_t n, Error *err)
{
    if (!dist_is_multi(c) || n == 0) return 0;
    if (n > INT_MAX) return error_set(err, "all-reduce of %zu values: too many", n);
    return dist_check(MPI_Allreduce(MPI_IN_PLACE, x, (int)n, MPI_INT64_T, MPI_MAX, c->comm),
                      "MPI_Allreduce", err);
}

/* counts/displs of a contiguous sharding of n items over c's ranks. */
static int shard_layout(const DistComm *c, size_t n, int **counts, int **displs, Error *err)
{
    *counts = NULL;
    *displs = NULL;
    if (n > INT_MAX) return error_set(err, "sharded vector of %zu values: too many", n);
    *counts = malloc((size_t)c->size * sizeof **counts);
    *displs = malloc((size_t)c->size * sizeof **displs);
    if (!*counts || !*displs) {
        free(*counts);
        free(*displs);
        return error_set(err, "out of memory");
    }
    for (int r = 0; r < c->size; r++) {
        DistComm other = *c;
        other.rank = r;
        size_t b, e;
        dist_shard(&other, n, &b, &e);
        (*counts)[r] = (int)(e - b);
        (*displs)[r] = (int)b;
    }
    return 0;
}

int dist_allgather_shards_f32(const DistComm *c, float *x, size_t n, Error *err)
{
    if (!dist_is_multi(c) || n == 0) return 0;
    int *counts, *displs;
    if (shard_layout(c, n, &counts, &displs, err)) return -1;
    int rc = dist_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, displs, MPI_FLOAT,
                                       c->comm),
                        "MPI_Allgatherv", err);
    free(counts);
    free(displs);
    return rc;
}

void dist_shard_blocks(const DistComm *c, size_t n, size_t unit, size_t *begin, size_t *end)
{
    if (unit == 0) unit = 1;
    size_t blocks = (n + unit - 1) / unit, b, e;
    dist_shard(c, blocks, &b, &e);
    *begin = b * unit < n ? b * unit : n;
    *end = e * unit < n ? e * unit : n;
}

int dist_allgather_ranges_f32(const DistComm *c, float *x, size_t n, size_t begin, size_t end, Error *err)
{
    if (!dist_is_multi(c) || n == 0) return 0;
    if (n > INT_MAX) return error_set(err, "gathered vector of %zu values: too many", n);
    int mine[2] = {(int)begin, (int)(end - begin)};
    int *all = malloc(2 * (size_t)c->size * sizeof *all);
    int *counts = malloc((size_t)c->size * sizeof *counts), *displs = malloc((size_t)c->size * sizeof *displs);
    int rc = (all && counts && displs) ? 0 : error_set(err, "out of memory");
    if (rc == 0)
        rc = dist_check(MPI_Allgather(mine, 2, MPI_INT, all, 2, MPI_INT, c->comm), "MPI_Allgather", err);
    size_t covered = 0;
    for (int r = 0; rc == 0 && r < c->size; r++) {
        displs[r] = all[2 * r];
        counts[r] = all[2 * r + 1];
        if (counts[r] > 0 && (size_t)displs[r] != covered)
            rc = error_set(err, "gathered ranges are not contiguous in rank order (rank %d starts at %d, not %zu)",
                           r, displs[r], covered);
        covered += (size_t)counts[r];
    }
    if (rc == 0 && covered != n) rc = error_set(err, "gathered ranges cover %zu of %zu values", covered, n);
    if (rc == 0)
        rc = dist_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, counts, displs, MPI_FLOAT, c->comm),
                        "MPI_Allgatherv", err);
    free(all);
    free(counts);
    free(displs);
    return rc;
}

int dist_sum_ordered_f64(const DistComm *c, double *x, size_t n, Error *err)
{
    if (!dist_is_multi(c) || n == 0) return 0;
    if (n * (size_t)c->size > INT_MAX) return error_set(err, "ordered sum of %zu values: too many", n);
    double *all = malloc(n * (size_t)c->size * sizeof *all);
    if (!all) return error_set(err, "out of memory");
    int rc = dist_check(MPI_Allgather(x, (int)n, MPI_DOUBLE, all, (int)n, MPI_DOUBLE, c->comm), "MPI_Allgather", err);
    if (rc == 0)
        for (size_t i = 0; i < n; i++) {
            double s = 0;
            for (int r = 0; r < c->size; r++) s += all[(size_t)r * n + i];
            x[i] = s;
        }
    free(all);
    return rc;
}

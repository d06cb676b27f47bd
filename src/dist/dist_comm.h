/* A communicator of cooperating ranks (the world, or one w group) and the
 * few collectives the trainer and the stages need, each returning -1 with
 * the MPI error text in err.
 *
 * A NULL DistComm, or one of size 1, is a single process: every collective
 * is then a local no-op (a copy at most) and makes no MPI call, so library
 * code and tests that never initialise MPI work unchanged.
 *
 * Data-parallel sharding is contiguous everywhere (shard_range in
 * shuffle.h): rank r of n owns [begin, end) of a vector, the first
 * (len % n) ranks one item longer. */
#ifndef MODPO_DIST_COMM_H
#define MODPO_DIST_COMM_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct DistComm {
    MPI_Comm comm;
    int rank, size;
    int color;       /* which group of its parent (0 for the world) */
} DistComm;

static inline int dist_rank(const DistComm *c) { return c ? c->rank : 0; }
static inline int dist_size(const DistComm *c) { return c ? c->size : 1; }
static inline bool dist_is_root(const DistComm *c) { return dist_rank(c) == 0; }
static inline bool dist_is_multi(const DistComm *c) { return c && c->size > 1; }

/* The communicator over every rank of the job (MPI must be initialised). */
int dist_comm_world(DistComm *out, Error *err);

/* Sets err from an MPI return code; returns 0 for MPI_SUCCESS, else -1. */
int dist_check(int mpi_rc, const char *what, Error *err);

int dist_barrier(const DistComm *c, Error *err);
/* Broadcasts bytes from the root (rank 0). */
int dist_bcast(const DistComm *c, void *buf, size_t bytes, Error *err);
int dist_bcast_int(const DistComm *c, int *v, Error *err);

/* x[0..n) summed over the ranks in rank order, the same bits on every rank
 * (an all-gather of the parts, then each rank adds them r = 0, 1, ...):
 * for values every rank must agree on exactly, like an evaluation loss that
 * picks the best checkpoint. */
int dist_sum_ordered_f64(const DistComm *c, double *x, size_t n, Error *err);

/* In-place sums over the ranks. */
int dist_allreduce_sum_f64(const DistComm *c, double *x, size_t n, Error *err);
int dist_allreduce_max_i64(const DistComm *c, int64_t *x, size_t n, Error *err);

/* x[0..n) is sharded by shard_range: each rank holds its slice in place;
 * afterwards every rank holds all of x. */
int dist_allgather_shards_f32(const DistComm *c, float *x, size_t n, Error *err);

/* Rank r's shard of n items: [*begin, *end). */
void dist_shard(const DistComm *c, size_t n, size_t *begin, size_t *end);

/* The same over whole blocks of `unit` items (the last one may be short):
 * a rank's part starts on a block boundary, so work done in batches of
 * `unit` forms exactly the batches a single process forms, and a
 * sequence's logp (which depends on the rounding of its batch) or a greedy
 * generation is bit for bit the single-process one. */
void dist_shard_blocks(const DistComm *c, size_t n, size_t unit, size_t *begin, size_t *end);

/* Every rank holds x[begin, end) of its own (any contiguous layout that
 * covers [0, n) once, in rank order); afterwards every rank holds all of x. */
int dist_allgather_ranges_f32(const DistComm *c, float *x, size_t n, size_t begin, size_t end, Error *err);

#endif

/* The gradient collectives of one data-parallel group: sum-all-reduce,
 * sum-reduce-scatter (ZeRO-1's gradient step) and all-gather (its parameter
 * step), over fp32 host vectors sharded contiguously (dist_shard).
 *
 * Two transports:
 *   MPI  -- MPI_Allreduce / MPI_Reduce_scatter / MPI_Allgatherv on the
 *           group's communicator (the CPU backend);
 *   NCCL -- (built with MODPO_CUDA) one NCCL communicator per group, created
 *           with ncclCommInitRank from a unique id that the group's rank 0
 *           makes and broadcasts over MPI; vectors are staged through one
 *           device buffer on a private stream of the current device (the
 *           one the backend selected from the node-local rank).
 * Both give every rank the same bits: the reduced values are computed once
 * per element by the library and delivered to all.
 *
 * Every call adds its wall time to `seconds` (for the metrics and the
 * scaling benchmark). */
#ifndef MODPO_DIST_ALLREDUCE_H
#define MODPO_DIST_ALLREDUCE_H

#include <stdbool.h>
#include <stddef.h>

#include "dist/dist_comm.h"
#include "error.h"

typedef enum { GRAD_COMM_MPI, GRAD_COMM_NCCL } GradCommKind;

typedef struct GradComm {
    const DistComm *comm;   /* borrowed; NULL or size 1: every call is local */
    GradCommKind kind;
    size_t n;               /* length of the full vectors */
    int *counts, *displs;   /* the contiguous sharding of n over the ranks */
    double seconds;         /* time spent in collectives so far */
    long calls;
    void *nccl;             /* NCCL state (MODPO_CUDA only) */
} GradComm;

/* "mpi" | "nccl" | "auto" (NCCL when built with CUDA and the backend is
 * "cuda", MPI otherwise); -1 for anything else. */
int grad_comm_kind_from_name(const char *name, const char *backend_name, GradCommKind *out);
const char *grad_comm_kind_name(GradCommKind k);

/* Collective over comm: makes the NCCL communicator when kind is NCCL. */
int grad_comm_init(GradComm *g, const DistComm *comm, GradCommKind kind, size_t n, Error *err);
void grad_comm_free(GradComm *g);

/* x[0..n) summed over the ranks, in place. */
int grad_comm_allreduce_sum(GradComm *g, float *x, Error *err);
/* x[0..n) in device memory summed over the ranks in place by NCCL, queued
 * on the CUDA stream `stream` behind its work, without waiting for it (the
 * NCCL transport only: a backend that keeps its gradients on the device).
 * `seconds` gets the time to enqueue, not the transfer. */
int grad_comm_allreduce_sum_queued(GradComm *g, float *x, void *stream, Error *err);
/* The sum over the ranks of full[0..n), this rank's shard of it written to
 * slice[0 .. end - begin). */
int grad_comm_reduce_scatter_sum(GradComm *g, const float *full, float *slice, Error *err);
/* x[begin, end) of every rank gathered into every rank's x[0..n), in place. */
int grad_comm_allgather(GradComm *g, float *x, Error *err);

#endif

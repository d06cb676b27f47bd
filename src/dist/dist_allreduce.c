#include "dist/dist_allreduce.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "metrics_log.h"

#ifdef MODPO_CUDA
#include <cuda_runtime.h>
#include <nccl.h>

typedef struct {
    ncclComm_t comm;
    cudaStream_t stream;
    float *dev;        /* staging buffer: size blocks of ceil(n / size) floats */
} NcclState;

static int cuda_check(cudaError_t e, const char *what, Error *err)
{
    return e == cudaSuccess ? 0 : error_set(err, "%s: %s", what, cudaGetErrorString(e));
}

static int nccl_check(ncclResult_t r, const char *what, Error *err)
{
    return r == ncclSuccess ? 0 : error_set(err, "%s: %s", what, ncclGetErrorString(r));
}

/* NCCL's reduce-scatter and all-gather need equal blocks: the vector is
 * viewed as size blocks of ceil(n / size) (the staging buffer padded), and
 * the contiguous shards (counts/displs) are copied out of / into them. */
static size_t nccl_block(const GradComm *g)
{
    return (g->n + (size_t)g->comm->size - 1) / (size_t)g->comm->size;
}

static int nccl_init(GradComm *g, Error *err)
{
    NcclState *s = calloc(1, sizeof *s);
    if (!s) return error_set(err, "out of memory");
    g->nccl = s;
    ncclUniqueId id;
    if (g->comm->rank == 0 && nccl_check(ncclGetUniqueId(&id), "ncclGetUniqueId", err)) return -1;
    if (dist_bcast(g->comm, &id, sizeof id, err)) return error_prefix(err, "NCCL unique id: ");
    if (nccl_check(ncclCommInitRank(&s->comm, g->comm->size, id, g->comm->rank), "ncclCommInitRank", err))
        return -1;
    if (cuda_check(cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking), "cudaStreamCreate", err) ||
        cuda_check(cudaMalloc((void **)&s->dev, (nccl_block(g) * (size_t)g->comm->size + 1) * sizeof(float)), "cudaMalloc", err))
        return -1;
    return 0;
}

static void nccl_free(GradComm *g)
{
    NcclState *s = g->nccl;
    if (!s) return;
    if (s->dev) cudaFree(s->dev);
    if (s->stream) cudaStreamDestroy(s->stream);
    if (s->comm) ncclCommDestroy(s->comm);
    free(s);
    g->nccl = NULL;
}

/* host -> device [0..n), op, device -> host of what the op produced. */
static int nccl_allreduce(GradComm *g, float *x, Error *err)
{
    NcclState *s = g->nccl;
    size_t bytes = g->n * sizeof(float);
    return cuda_check(cudaMemcpyAsync(s->dev, x, bytes, cudaMemcpyHostToDevice, s->stream), "copy in", err) ||
           nccl_check(ncclAllReduce(s->dev, s->dev, g->n, ncclFloat32, ncclSum, s->comm, s->stream),
                      "ncclAllReduce", err) ||
           cuda_check(cudaMemcpyAsync(x, s->dev, bytes, cudaMemcpyDeviceToHost, s->stream), "copy out", err) ||
           cuda_check(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize", err);
}

static int nccl_reduce_scatter(GradComm *g, const float *full, float *slice, Error *err)
{
    NcclState *s = g->nccl;
    size_t blk = nccl_block(g), P = (size_t)g->comm->size;
    int r = g->comm->rank;
    /* block k of the padded buffer holds the contiguous shard k, zero-padded */
    if (cuda_check(cudaMemsetAsync(s->dev, 0, blk * P * sizeof(float), s->stream), "memset", err)) return -1;
    for (size_t k = 0; k < P; k++)
        if (cuda_check(cudaMemcpyAsync(s->dev + k * blk, full + g->displs[k], (size_t)g->counts[k] * sizeof(float),
                                       cudaMemcpyHostToDevice, s->stream), "copy in", err))
            return -1;
    float *out = s->dev + (size_t)r * blk;
    return nccl_check(ncclReduceScatter(s->dev, out, blk, ncclFloat32, ncclSum, s->comm, s->stream),
                      "ncclReduceScatter", err) ||
           cuda_check(cudaMemcpyAsync(slice, out, (size_t)g->counts[r] * sizeof(float), cudaMemcpyDeviceToHost,
                                      s->stream), "copy out", err) ||
           cuda_check(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize", err);
}

static int nccl_allgather(GradComm *g, float *x, Error *err)
{
    NcclState *s = g->nccl;
    size_t blk = nccl_block(g), P = (size_t)g->comm->size;
    int r = g->comm->rank;
    float *mine = s->dev + (size_t)r * blk;
    if (cuda_check(cudaMemcpyAsync(mine, x + g->displs[r], (size_t)g->counts[r] * sizeof(float),
                                   cudaMemcpyHostToDevice, s->stream), "copy in", err) ||
        nccl_check(ncclAllGather(mine, s->dev, blk, ncclFloat32, s->comm, s->stream), "ncclAllGather", err))
        return -1;
    for (size_t k = 0; k < P; k++)
        if (cuda_check(cudaMemcpyAsync(x + g->displs[k], s->dev + k * blk, (size_t)g->counts[k] * sizeof(float),
                                       cudaMemcpyDeviceToHost, s->stream), "copy out", err))
            return -1;
    return cuda_check(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize", err);
}
#endif

int grad_comm_kind_from_name(const char *name, const char *backend_name, GradCommKind *out)
{
    if (strcmp(name, "mpi") == 0) { *out = GRAD_COMM_MPI; return 0; }
    if (strcmp(name, "nccl") == 0) { *out = GRAD_COMM_NCCL; return 0; }
    if (strcmp(name, "auto") == 0) {
#ifdef MODPO_CUDA
        *out = backend_name && strcmp(backend_name, "cuda") == 0 ? GRAD_COMM_NCCL : GRAD_COMM_MPI;
#else
        (void)backend_name;
        *out = GRAD_COMM_MPI;
#endif
        return 0;
    }
    return -1;
}

const char *grad_comm_kind_name(GradCommKind k)
{
    return k == GRAD_COMM_NCCL ? "nccl" : "mpi";
}

int grad_comm_init(GradComm *g, const DistComm *comm, GradCommKind kind, size_t n, Error *err)
{
    memset(g, 0, sizeof *g);
    g->comm = comm;
    g->kind = kind;
    g->n = n;
    if (!dist_is_multi(comm)) return 0;
    if (n > INT_MAX) return error_set(err, "gradient of %zu values: too many for one collective", n);
    g->counts = malloc((size_t)comm->size * sizeof *g->counts);
    g->displs = malloc((size_t)comm->size * sizeof *g->displs);
    if (!g->counts || !g->displs) return error_set(err, "out of memory");
    for (int r = 0; r < comm->size; r++) {
        DistComm other = *comm;
        other.rank = r;
        size_t b, e;
        dist_shard(&other, n, &b, &e);
        g->counts[r] = (int)(e - b);
        g->displs[r] = (int)b;
    }
    if (kind == GRAD_COMM_NCCL) {
#ifdef MODPO_CUDA
        if (nccl_init(g, err)) return error_prefix(err, "NCCL communicator of %d ranks: ", comm->size);
#else
        return error_set(err, "NCCL requested but modpo was built without CUDA (make CUDA=1)");
#endif
    }
    return 0;
}

void grad_comm_free(GradComm *g)
{
#ifdef MODPO_CUDA
    nccl_free(g);
#endif
    free(g->counts);
    free(g->displs);
    memset(g, 0, sizeof *g);
}

int grad_comm_allreduce_sum(GradComm *g, float *x, Error *err)
{
    if (!dist_is_multi(g->comm) || g->n == 0) return 0;
    double t0 = monotonic_seconds();
    int rc;
#ifdef MODPO_CUDA
    if (g->kind == GRAD_COMM_NCCL) rc = nccl_allreduce(g, x, err);
    else
#endif
        rc = dist_check(MPI_Allreduce(MPI_IN_PLACE, x, (int)g->n, MPI_FLOAT, MPI_SUM, g->comm->comm),
                        "MPI_Allreduce (gradients)", err);
    g->seconds += monotonic_seconds() - t0;
    g->calls++;
    return rc;
}

int grad_comm_allreduce_sum_queued(GradComm *g, float *x, void *stream, Error *err)
{
    if (!dist_is_multi(g->comm) || g->n == 0) return 0;
    if (g->kind != GRAD_COMM_NCCL)
        return error_set(err, "summing device gradients needs the NCCL transport, not %s",
                         grad_comm_kind_name(g->kind));
    double t0 = monotonic_seconds();
    int rc = -1;
#ifdef MODPO_CUDA
    NcclState *s = g->nccl;
    rc = nccl_check(ncclAllReduce(x, x, g->n, ncclFloat32, ncclSum, s->comm, (cudaStream_t)stream),
                    "ncclAllReduce (device gradients)", err);
#else
    (void)x;
    (void)stream;
    rc = error_set(err, "NCCL requested but modpo was built without CUDA (make CUDA=1)");
#endif
    g->seconds += monotonic_seconds() - t0;
    g->calls++;
    return rc;
}

int grad_comm_reduce_scatter_sum(GradComm *g, const float *full, float *slice, Error *err)
{
    if (!dist_is_multi(g->comm)) {
        if (g->n) memcpy(slice, full, g->n * sizeof *full);
        return 0;
    }
    double t0 = monotonic_seconds();
    int rc;
#ifdef MODPO_CUDA
    if (g->kind == GRAD_COMM_NCCL) rc = nccl_reduce_scatter(g, full, slice, err);
    else
#endif
        rc = dist_check(MPI_Reduce_scatter(full, slice, g->counts, MPI_FLOAT, MPI_SUM, g->comm->comm),
                        "MPI_Reduce_scatter (gradients)", err);
    g->seconds += monotonic_seconds() - t0;
    g->calls++;
    return rc;
}

int grad_comm_allgather(GradComm *g, float *x, Error *err)
{
    if (!dist_is_multi(g->comm)) return 0;
    double t0 = monotonic_seconds();
    int rc;
#ifdef MODPO_CUDA
    if (g->kind == GRAD_COMM_NCCL) rc = nccl_allgather(g, x, err);
    else
#endif
        rc = dist_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, x, g->counts, g->displs, MPI_FLOAT,
                                       g->comm->comm),
                        "MPI_Allgatherv (parameters)", err);
    g->seconds += monotonic_seconds() - t0;
    g->calls++;
    return rc;
}

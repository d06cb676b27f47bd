/* The gradient collectives of data-parallel training, timed alone: for each
 * vector size, the ZeRO-1 step's reduce-scatter + all-gather (what the
 * trainer does every optimizer step) and a plain sum-all-reduce, through
 * src/dist/dist_allreduce.h -- MPI here, NCCL with --nccl in a CUDA build.
 *
 *   mpirun -np 4 build/bench/allreduce [--nccl] [--reps 50] [n_floats ...]
 *
 * One JSON line per size on rank 0's stdout: ranks, floats, bytes, the
 * median seconds of each operation and the bus bandwidth of the all-reduce
 * (2 (p-1)/p x bytes / time, NCCL's convention). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef MODPO_CUDA
#include <cuda_runtime.h>

#include "cuda_backend.h"
#endif

#include "dist/dist_allreduce.h"
#include "dist/dist_world.h"
#include "metrics_log.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* One size: reps timed repetitions of each op after 3 warm-up ones. */
static int bench(const DistComm *c, GradCommKind kind, size_t n, int reps, Error *err)
{
    GradComm g;
    float *x = malloc(n * sizeof *x), *slice = malloc(n * sizeof *slice);
    double *t_rs = malloc((size_t)reps * sizeof *t_rs), *t_ar = malloc((size_t)reps * sizeof *t_ar);
    if (!x || !slice || !t_rs || !t_ar) return error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) x[i] = (float)((i % 97) * 1e-3);
    int rc = grad_comm_init(&g, c, kind, n, err);
    for (int r = -3; rc == 0 && r < reps; r++) {
        MPI_Barrier(c->comm);
        double t0 = monotonic_seconds();
        rc = grad_comm_reduce_scatter_sum(&g, x, slice, err) || grad_comm_allgather(&g, x, err);
        double t1 = monotonic_seconds();
        MPI_Barrier(c->comm);
        double t2 = monotonic_seconds();
        if (rc == 0) rc = grad_comm_allreduce_sum(&g, x, err);
        double t3 = monotonic_seconds();
        /* the slowest rank's time is the step's */
        double t[2] = {t1 - t0, t3 - t2};
        MPI_Allreduce(MPI_IN_PLACE, t, 2, MPI_DOUBLE, MPI_MAX, c->comm);
        if (r >= 0) { t_rs[r] = t[0]; t_ar[r] = t[1]; }
        for (size_t i = 0; i < n; i++) x[i] = (float)((i % 97) * 1e-3); /* keep values bounded */
    }
    if (rc == 0 && c->rank == 0) {
        double rs = median(t_rs, reps), ar = median(t_ar, reps);
        double bytes = (double)n * 4.0, p = c->size;
        printf("{\"ranks\": %d, \"transport\": \"%s\", \"floats\": %zu, \"bytes\": %.0f, "
               "\"zero_step_s\": %.3e, \"allreduce_s\": %.3e, \"allreduce_busbw_GBps\": %.3f}\n",
               c->size, grad_comm_kind_name(kind), n, bytes, rs, ar,
               ar > 0 && p > 1 ? 2.0 * (p - 1) / p * bytes / ar / 1e9 : 0.0);
        fflush(stdout);
    }
    grad_comm_free(&g);
    free(x); free(slice); free(t_rs); free(t_ar);
    return rc;
}

int main(int argc, char **argv)
{
    DistWorld w;
    Error err;
    if (dist_world_init(&w, &argc, &argv, &err)) { dist_fail("allreduce", err.msg, 1); return 1; }
    GradCommKind kind = GRAD_COMM_MPI;
    int reps = 30, n_sizes = 0;
    size_t sizes[32];
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--nccl") == 0) kind = GRAD_COMM_NCCL;
        else if (strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = atoi(argv[++i]);
        else if (n_sizes < 32) sizes[n_sizes++] = (size_t)strtoull(argv[i], NULL, 10);
    }
    if (n_sizes == 0) {
        /* 65,536 (the tiny run's adapter has 18,688 parameters), 1M,
         * Llama-2-7B's with r 16 on q,v (4.19M), and 4x that */
        const size_t d[] = {65536, 1048576, 4194304, 16777216};
        for (int i = 0; i < 4; i++) sizes[n_sizes++] = d[i];
    }
    if (reps < 1) reps = 1;
#ifdef MODPO_CUDA
    /* As the CUDA backend does: one GPU per rank of a node, or NCCL sees two
     * ranks on one device and refuses the communicator. */
    if (kind == GRAD_COMM_NCCL) cudaSetDevice(cuda_backend_default_device());
#endif
    int rc = 0;
    for (int i = 0; rc == 0 && i < n_sizes; i++) rc = bench(&w.world, kind, sizes[i], reps, &err);
    if (rc) dist_fail("allreduce", err.msg, 1);
    dist_world_finalize(&w);
    return rc ? 1 : 0;
}

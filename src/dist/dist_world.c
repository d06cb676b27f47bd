#include "dist/dist_world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int env_int(const char *name)
{
    const char *v = getenv(name);
    if (!v || !*v) return -1;
    char *end;
    long x = strtol(v, &end, 10);
    return *end == '\0' && x >= 0 && x < 1 << 30 ? (int)x : -1;
}

int dist_world_init(DistWorld *w, int *argc, char ***argv, Error *err)
{
    memset(w, 0, sizeof *w);
    int init = 0;
    MPI_Initialized(&init);
    if (!init) {
        int provided;
        /* Funneled: OpenMP threads compute, only the main thread calls MPI. */
        if (dist_check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread", err))
            return -1;
        w->initialised_here = true;
    }
    /* Errors come back as return codes, so a failing call reaches the user
     * with context and dist_fail instead of MPI's default abort. */
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (dist_comm_world(&w->world, err)) return -1;
    MPI_Comm local;
    if (dist_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->world.rank,
                                       MPI_INFO_NULL, &local),
                   "MPI_Comm_split_type", err))
        return -1;
    MPI_Comm_rank(local, &w->local_rank);
    MPI_Comm_size(local, &w->local_size);
    MPI_Comm_free(&local);
    w->slurm_procid = env_int("SLURM_PROCID");
    w->slurm_localid = env_int("SLURM_LOCALID");
    w->slurm_ntasks = env_int("SLURM_NTASKS");
    /* Not checked against MPI: under mpirun inside an allocation the ranks
     * inherit the daemons' SLURM_PROCID (one per node), not their own. */
    return 0;
}

void dist_world_finalize(DistWorld *w)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (w->initialised_here && !fin) MPI_Finalize();
    w->initialised_here = false;
}

void dist_rank_tag(const DistComm *c, char *out, size_t size)
{
    if (!dist_is_multi(c)) { if (size) out[0] = '\0'; return; }
    snprintf(out, size, " [rank %d/%d]", c->rank, c->size);
}

void dist_fail(const char *prefix, const char *msg, int code)
{
    int init = 0, fin = 0, size = 1, rank = 0;
    MPI_Initialized(&init);
    MPI_Finalized(&fin);
    if (init && !fin) {
        MPI_Comm_size(MPI_COMM_WORLD, &size);
        MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    if (size > 1) fprintf(stderr, "%s [rank %d/%d]: %s\n", prefix, rank, size, msg);
    else fprintf(stderr, "%s: %s\n", prefix, msg);
    fflush(stderr);
    if (size > 1) {
        fprintf(stderr, "%s [rank %d/%d]: aborting the job\n", prefix, rank, size);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
}

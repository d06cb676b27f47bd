/* The MPI world of one modpo process: initialised once in main around the
 * command and finalised after it.  Launched by mpirun or srun, every rank
 * joins one MPI_COMM_WORLD; run alone it is a singleton world of one rank
 * (MPI's singleton init), so `./modpo pipeline` keeps working without a
 * launcher.
 *
 * Placement: the node-local rank (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED),
 * which equals SLURM_LOCALID under srun and OMPI_COMM_WORLD_LOCAL_RANK under
 * mpirun) is what picks a rank's GPU: the CUDA backend's
 * cuda_backend_default_device() takes that local rank modulo the visible
 * GPUs.  The Slurm variables are recorded for messages only -- MPI itself is
 * the source of truth for rank and size.
 *
 * Failure: a rank that fails prints its message prefixed with its rank and
 * calls MPI_Abort, which ends every rank of the job (never a hang in a
 * collective that the failed rank will not join). */
#ifndef MODPO_DIST_WORLD_H
#define MODPO_DIST_WORLD_H

#include <stdbool.h>

#include "dist/dist_comm.h"
#include "error.h"

typedef struct {
    DistComm world;
    int local_rank, local_size;  /* on this node */
    bool initialised_here;       /* this process called MPI_Init (finalize it) */
    /* Slurm's view, -1 when not under Slurm */
    int slurm_procid, slurm_localid, slurm_ntasks;
} DistWorld;

int dist_world_init(DistWorld *w, int *argc, char ***argv, Error *err);
void dist_world_finalize(DistWorld *w);

/* "" for a single rank, " [rank 3/8]" otherwise: put after "modpo CMD". */
void dist_rank_tag(const DistComm *c, char *out, size_t size);

/* Prints "PREFIX[rank r/n]: msg" to stderr; with more than one rank in the
 * world it then aborts the whole job (MPI_Abort, exit code `code`) and does
 * not return.  With one rank it returns so the caller exits normally. */
void dist_fail(const char *prefix, const char *msg, int code);

#endif

#include "dist/dist_groups.h"

#include <string.h>

int dist_groups_plan(int world_size, int n_items, int ranks_per_item, int *n_groups, Error *err)
{
    if (world_size < 1) return error_set(err, "world size %d", world_size);
    if (ranks_per_item < 0) return error_set(err, "dist.ranks_per_w = %d is negative", ranks_per_item);
    int items = n_items > 0 ? n_items : 1;
    int g;
    if (ranks_per_item == 0) {
        g = items < world_size ? items : world_size;
    } else {
        if (ranks_per_item > world_size || world_size % ranks_per_item != 0)
            return error_set(err,
                             "dist.ranks_per_w = %d does not divide the %d ranks of the job "
                             "(use a multiple of it, or 0 for automatic groups)",
                             ranks_per_item, world_size);
        g = world_size / ranks_per_item;
        if (g > items) g = items;
    }
    *n_groups = g;
    return 0;
}

int dist_group_of_rank(int rank, int world_size, int n_groups)
{
    return (int)((long long)rank * n_groups / world_size);
}

int dist_groups_split(const DistComm *world, int n_items, int ranks_per_item, DistGroups *out,
                      Error *err)
{
    memset(out, 0, sizeof *out);
    int size = dist_size(world);
    if (dist_groups_plan(size, n_items, ranks_per_item, &out->n_groups, err)) return -1;
    if (!dist_is_multi(world)) {
        out->group = world ? *world : (DistComm){MPI_COMM_SELF, 0, 1, 0};
        out->group.color = 0;
        return 0;
    }
    int color = dist_group_of_rank(world->rank, size, out->n_groups);
    if (out->n_groups == 1) {
        out->group = *world;
        out->group.color = 0;
        return 0;
    }
    MPI_Comm comm;
    if (dist_check(MPI_Comm_split(world->comm, color, world->rank, &comm), "MPI_Comm_split", err))
        return -1;
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    out->owns_comm = true;
    out->group.comm = comm;
    out->group.color = color;
    MPI_Comm_rank(comm, &out->group.rank);
    MPI_Comm_size(comm, &out->group.size);
    return 0;
}

bool dist_groups_owns(const DistGroups *g, int item)
{
    return item % g->n_groups == g->group.color;
}

void dist_groups_free(DistGroups *g)
{
    if (g->owns_comm) MPI_Comm_free(&g->group.comm);
    memset(g, 0, sizeof *g);
}

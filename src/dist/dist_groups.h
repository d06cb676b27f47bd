/* The w grid as rank groups.  MODPO runs for different w are independent,
 * so the world is split (MPI_Comm_split) into groups of contiguous ranks;
 * each group trains its w values data-parallel, the groups concurrently.
 * w value i belongs to group i % n_groups, so a group with more values than
 * there are groups' slots runs them one after another.
 *
 * How many groups:
 *   ranks_per_w = 0 (automatic): min(grid size, world size) groups, the
 *     ranks spread as evenly as contiguous blocks allow (sizes differ by at
 *     most one);
 *   ranks_per_w = k: world / k groups (the world size must be a multiple of
 *     k), capped at the grid size -- extra ranks then join the groups
 *     rather than idle.
 * SFT and DPO (one run each) use the whole world. */
#ifndef MODPO_DIST_GROUPS_H
#define MODPO_DIST_GROUPS_H

#include <stdbool.h>

#include "dist/dist_comm.h"
#include "error.h"

/* The number of groups for this world size, grid size and ranks_per_w. */
int dist_groups_plan(int world_size, int n_items, int ranks_per_item, int *n_groups, Error *err);
/* The group of world rank `rank` (contiguous blocks). */
int dist_group_of_rank(int rank, int world_size, int n_groups);

typedef struct {
    DistComm group;     /* this rank's group (group.color: its index) */
    int n_groups;
    bool owns_comm;     /* group.comm was made by MPI_Comm_split */
} DistGroups;

/* Collective over `world` (NULL: a single process, one group). */
int dist_groups_split(const DistComm *world, int n_items, int ranks_per_item, DistGroups *out,
                      Error *err);
/* Whether item i (a w index) is this rank's group's to train. */
bool dist_groups_owns(const DistGroups *g, int item);
void dist_groups_free(DistGroups *g);

#endif

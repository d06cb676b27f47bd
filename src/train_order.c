#include "train_order.h"

#include <stdlib.h>
#include <string.h>

#include "shuffle.h"

int train_order_init(TrainOrder *o, uint64_t seed, size_t n_items, Error *err)
{
    memset(o, 0, sizeof *o);
    if (n_items == 0) return error_set(err, "no training examples to order");
    o->seed = seed;
    o->n_items = n_items;
    o->epoch = -1;
    return 0;
}

int train_order_at(TrainOrder *o, uint64_t p, size_t *out, Error *err)
{
    long epoch = (long)(p / o->n_items);
    if (epoch != o->epoch) {
        Rng rng;
        rng_seed_stream(&rng, o->seed, (uint64_t)epoch);
        free(o->perm);
        o->perm = NULL;
        if (shuffle_permutation(o->n_items, &rng, &o->perm, err)) return -1;
        o->epoch = epoch;
    }
    *out = o->perm[p % o->n_items];
    return 0;
}

void train_order_free(TrainOrder *o)
{
    free(o->perm);
    memset(o, 0, sizeof *o);
}

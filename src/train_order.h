/* Which examples a training step sees.  The order is a pure function of
 * (seed, position): epoch e is the permutation drawn from stream e of the
 * seed, and the global position p of an example is
 *     (step * grad_accum + micro) * batch_size + i,
 * so a resumed run needs only its step to continue exactly where an
 * uninterrupted one would be. */
#ifndef MODPO_TRAIN_ORDER_H
#define MODPO_TRAIN_ORDER_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

typedef struct {
    uint64_t seed;
    size_t n_items;
    long epoch;     /* epoch of `perm`, -1 before the first use */
    size_t *perm;   /* [n_items] */
} TrainOrder;

int train_order_init(TrainOrder *o, uint64_t seed, size_t n_items, Error *err);
/* The example at global position p. */
int train_order_at(TrainOrder *o, uint64_t p, size_t *out, Error *err);
void train_order_free(TrainOrder *o);

#endif

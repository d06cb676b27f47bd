/* The frozen passes, done once: the logps of every pair's chosen and rejected
 * sequence under a frozen model (the reference: no adapter; or the margin
 * adapter).  DPO's reference logps and MODPO's reference and margin logps
 * depend on nothing MODPO trains, so they are computed once, cached in an
 * HDF5 file of the run (precompute/NAME.h5) and shared by every w value and
 * by resumed runs.  The cache records a fingerprint of the sequences and of
 * the model it was computed with and is recomputed when either changes. */
#ifndef MODPO_PRECOMPUTE_H
#define MODPO_PRECOMPUTE_H

#include <stdbool.h>

#include "backend.h"
#include "dist/dist_comm.h"
#include "sequences.h"

/* Logps of every pair of ps under adapter a (NULL: base).  A sequence that
 * is a side of several pairs (same tokens and completion_start,
 * unique_sequences.h) is computed once: the distinct sequences go through
 * the backend 2 * batch_size at a time (the sequences of batch_size pairs)
 * and their logps are copied to every pair side they are.  Collective over
 * comm (NULL: one process): each rank computes its contiguous shard of the
 * distinct sequences and the shards are all-gathered, so every rank ends
 * with all of chosen[] and rejected[]. */
int pair_logps_all(const DistComm *comm, Backend *b, BackendAdapter *a, const PairSequences *ps,
                   int batch_size, float *chosen, float *rejected, Error *err);

/* A fingerprint of the token sequences (CRC32 over lengths, prefixes and tokens). */
unsigned long pair_sequences_fingerprint(const PairSequences *ps);

/* Loads PATH when its fingerprint and model_key match, otherwise computes the
 * logps (spread over comm's ranks) and writes PATH atomically.  *cached
 * tells which happened.  Collective over comm: rank 0 reads or writes the
 * file and the others get the arrays by broadcast / all-gather. */
int pair_logps_cached(const DistComm *comm, const char *path, const char *model_key, Backend *b,
                      BackendAdapter *a, const PairSequences *ps, int batch_size, float *chosen,
                      float *rejected, bool *cached, Error *err);

#endif

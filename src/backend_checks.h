/* Preconditions every backend enforces the same way, so the messages and
 * the rules do not drift apart between the CPU and CUDA implementations. */
#ifndef MODPO_BACKEND_CHECKS_H
#define MODPO_BACKEND_CHECKS_H

#include "backend.h"

#ifdef __cplusplus
extern "C" {
#endif

/* backward(a, batch) needs a kept forward of the same adapter on a batch of
 * the same shape.  `who` ("cpu", "cuda") starts the message. */
int backend_check_backward(const char *who, const BackendAdapter *a, int has_kept,
                           const BackendAdapter *kept_adapter, int kept_n_seq, int kept_seq_len,
                           const Batch *batch, Error *err);

/* pref_backward(a, batch, loss): the checks of backward, and a batch of
 * 2 * loss->n_pairs sequences. */
int backend_check_pref_backward(const char *who, const BackendAdapter *a, int has_kept,
                                const BackendAdapter *kept_adapter, int kept_n_seq,
                                int kept_seq_len, const Batch *batch, const PrefLossSpec *loss,
                                Error *err);

/* logps(batch, keep): sum_start marks only at labelled positions, and only
 * in a pass that keeps nothing (a backward takes one dlogp per sequence). */
int backend_check_logps(const char *who, const Batch *batch, int keep, Error *err);

#ifdef __cplusplus
}
#endif

#endif

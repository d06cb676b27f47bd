#include "backend_checks.h"

int backend_check_backward(const char *who, const BackendAdapter *a, int has_kept,
                           const BackendAdapter *kept_adapter, int kept_n_seq, int kept_seq_len,
                           const Batch *batch, Error *err)
{
    if (!a) return error_set(err, "%s backward: no adapter (the base model has no gradients)", who);
    if (!has_kept || kept_adapter != a)
        return error_set(err, "%s backward: no forward of this adapter kept "
                              "(call logps with keep_for_backward first)", who);
    if (kept_n_seq != batch->n_seq || kept_seq_len != batch->seq_len)
        return error_set(err, "%s backward: batch is %dx%d, the kept forward's %dx%d", who,
                         batch->n_seq, batch->seq_len, kept_n_seq, kept_seq_len);
    return 0;
}

int backend_check_pref_backward(const char *who, const BackendAdapter *a, int has_kept,
                                const BackendAdapter *kept_adapter, int kept_n_seq,
                                int kept_seq_len, const Batch *batch, const PrefLossSpec *loss,
                                Error *err)
{
    if (backend_check_backward(who, a, has_kept, kept_adapter, kept_n_seq, kept_seq_len, batch, err))
        return -1;
    if (loss->n_pairs == 0 || (size_t)batch->n_seq != 2 * loss->n_pairs)
        return error_set(err, "%s preference backward: batch has %d sequences, %zu pairs need %zu", who,
                         batch->n_seq, loss->n_pairs, 2 * loss->n_pairs);
    return 0;
}

int backend_check_logps(const char *who, const Batch *batch, int keep, Error *err)
{
    if (!batch->sum_start) return 0;
    if (keep)
        return error_set(err, "%s logps: a batch with several sums per sequence cannot be kept "
                         "for a backward", who);
    char buf[160];
    const char *bad = batch_check_sums(batch, buf, sizeof buf);
    return bad ? error_set(err, "%s logps: %s", who, bad) : 0;
}

#include "objectives.h"

#include <stdlib.h>
#include <string.h>

#include "batch.h"

/* ---- SFT --------------------------------------------------------------- */

static long batch_tokens(const Batch *b)
{
    long n = 0;
    for (int i = 0; i < b->n_seq; i++) n += b->lengths[i];
    return n;
}

/* rec: f = [logps n | dlogps n], i = the label counts. */
static int sft_micro(void *ctx, const size_t *idx, int n, double grad_scale, MicroRecord *rec,
                     Error *err)
{
    SftObjective *o = ctx;
    float *f = micro_record_floats(rec, 2 * (size_t)n, err);
    int *n_tokens = micro_record_ints(rec, (size_t)n, err);
    if (!f || !n_tokens) return -1;
    Batch batch;
    if (batch_from_sft(o->train, idx, n, &batch, err)) return -1;
    for (int i = 0; i < n; i++) n_tokens[i] = batch_n_labels(&batch, i);
    int rc = sft_dlogps(n_tokens, (size_t)n, grad_scale, f + n, err) ||
             backend_logps(o->backend, o->policy, &batch, f, 1, err) ||
             backend_backward(o->backend, o->policy, &batch, f + n, err);
    rec->n = n;
    rec->tokens = batch_tokens(&batch);
    batch_free(&batch);
    return rc ? -1 : 0;
}

static int sft_settle(void *ctx, const MicroRecord *rec, ObjectiveStats *out, Error *err)
{
    (void)ctx;
    out->tokens = rec->tokens;
    return sft_loss(rec->f, rec->i, (size_t)rec->n, 1.0, &out->loss, NULL, err);
}

static int sft_evaluate(void *ctx, const DistComm *comm, ObjectiveStats *out, Error *err)
{
    SftObjective *o = ctx;
    size_t total = o->eval->n < (size_t)o->eval_size ? o->eval->n : (size_t)o->eval_size;
    double sums[2] = {0, 0}; /* nll, tokens */
    float logps[256];
    size_t idx[256];
    int bs = o->batch_size > 256 ? 256 : o->batch_size;
    size_t lo, hi;
    dist_shard_blocks(comm, total, (size_t)bs, &lo, &hi);
    for (size_t start = lo; start < hi; start += (size_t)bs) {
        int n = (int)(hi - start < (size_t)bs ? hi - start : (size_t)bs);
        for (int i = 0; i < n; i++) idx[i] = start + (size_t)i;
        Batch batch;
        if (batch_from_sft(o->eval, idx, n, &batch, err)) return -1;
        int rc = backend_logps(o->backend, o->policy, &batch, logps, 0, err) ||
                 backend_sync(o->backend, err);
        for (int i = 0; !rc && i < n; i++) {
            sums[0] -= logps[i];
            sums[1] += batch_n_labels(&batch, i);
        }
        batch_free(&batch);
        if (rc) return -1;
    }
    if (dist_sum_ordered_f64(comm, sums, 2, err)) return -1;
    out->loss = sums[1] > 0 ? sums[0] / sums[1] : 0;
    return 0;
}

/* SFT's micro-batch loss is a token mean: its weight is the label count. */
static double sft_weight(void *ctx, const size_t *idx, int n)
{
    const SftObjective *o = ctx;
    double w = 0;
    for (int i = 0; i < n; i++) {
        const Sequence *q = &o->train->seqs[idx[i]];
        w += (double)(q->len - q->completion_start);
    }
    return w;
}

Objective sft_objective(SftObjective *o)
{
    return (Objective){o, o->train->n, sft_micro, sft_settle, sft_evaluate, sft_weight};
}

/* ---- DPO and MODPO ------------------------------------------------------ */

/* One batch of n pairs laid out in 8n floats: the policy logps
 * [chosen | rejected], the reference logps, the margin rewards and dL/dlogp. */
typedef struct {
    float *logps, *ref_c, *ref_r, *mar_c, *mar_r, *d;
} PrefScratch;

#define PREF_FLOATS_PER_PAIR 8

static PrefScratch scratch_view(float *f, int n)
{
    size_t k = (size_t)n;
    return (PrefScratch){f, f + 2 * k, f + 3 * k, f + 4 * k, f + 5 * k, f + 6 * k};
}

static void gather_constants(const PairConstants *c, const size_t *idx, int n, PrefScratch *s)
{
    for (int i = 0; i < n; i++) {
        s->ref_c[i] = c->ref_chosen[idx[i]];
        s->ref_r[i] = c->ref_rejected[idx[i]];
        s->mar_c[i] = c->margin_chosen ? c->margin_chosen[idx[i]] : 0;
        s->mar_r[i] = c->margin_rejected ? c->margin_rejected[idx[i]] : 0;
    }
}

/* The loss of one batch of pairs whose policy logps are in s->logps. */
static int pref_loss(const PrefObjective *o, int n, double grad_scale, PrefScratch *s,
                     PrefMetrics *m, Error *err)
{
    PrefBatch pb = {(size_t)n, s->logps, s->logps + n, s->ref_c, s->ref_r};
    PrefGrads g = {s->d, s->d + n};
    if (o->is_modpo)
        return modpo_loss(&pb, s->mar_c, s->mar_r, o->beta, o->w, o->loss, grad_scale, m, &g, err);
    return dpo_loss(&pb, o->beta, o->loss, grad_scale, m, &g, err);
}

static void report(const PrefObjective *o, const PrefMetrics *m, ObjectiveStats *out)
{
    Metric list[PREF_METRICS_MAX];
    size_t k = pref_metrics_list(m, o->is_modpo, list);
    out->loss = m->loss;
    out->n_metrics = k;
    memcpy(out->metrics, list, k * sizeof *list);
}

/* The frozen passes of one batch, done now (testing; see PrefObjective).
 * They run before the policy pass so its kept state is the last one. */
static int recompute_frozen(const PrefObjective *o, const Batch *batch, int n, PrefScratch *s, Error *err)
{
    if (backend_logps(o->backend, NULL, batch, s->logps, 0, err) || backend_sync(o->backend, err)) return -1;
    memcpy(s->ref_c, s->logps, (size_t)n * sizeof(float));
    memcpy(s->ref_r, s->logps + n, (size_t)n * sizeof(float));
    if (!o->is_modpo || !o->margin) return 0;
    if (backend_logps(o->backend, o->margin, batch, s->logps, 0, err) || backend_sync(o->backend, err)) return -1;
    modpo_margin_rewards(o->margin_beta, s->logps, s->ref_c, (size_t)n, s->mar_c);
    modpo_margin_rewards(o->margin_beta, s->logps + n, s->ref_r, (size_t)n, s->mar_r);
    return 0;
}

/* Builds the batch, gathers its constants and queues the policy's logps
 * (with the frozen passes first when testing recomputes them). */
static int pref_queue(const PrefObjective *o, const PairSequences *ps, const PairConstants *c,
                      const size_t *idx, int n, int keep, Batch *batch, PrefScratch *s, Error *err)
{
    if (batch_from_pairs(ps, idx, n, batch, err)) return -1;
    gather_constants(c, idx, n, s);
    if ((o->recompute_frozen && recompute_frozen(o, batch, n, s, err)) ||
        backend_logps(o->backend, o->policy, batch, s->logps, keep, err)) {
        batch_free(batch);
        return -1;
    }
    return 0;
}

static PrefLossSpec loss_spec(const PrefObjective *o, int n, double grad_scale, const PrefScratch *s)
{
    return (PrefLossSpec){
        .n_pairs = (size_t)n,
        .ref_chosen = s->ref_c, .ref_rejected = s->ref_r,
        .margin_chosen = o->is_modpo ? s->mar_c : NULL,
        .margin_rejected = o->is_modpo ? s->mar_r : NULL,
        .form = pref_reward_form(o->beta, o->is_modpo, o->w),
        .type = o->loss,
        .grad_scale = grad_scale,
    };
}

static int pref_micro(void *ctx, const size_t *idx, int n, double grad_scale, MicroRecord *rec,
                      Error *err)
{
    PrefObjective *o = ctx;
    float *f = micro_record_floats(rec, PREF_FLOATS_PER_PAIR * (size_t)n, err);
    if (!f) return -1;
    PrefScratch s = scratch_view(f, n);
    Batch batch;
    if (pref_queue(o, o->train, &o->train_c, idx, n, 1, &batch, &s, err)) return -1;
    PrefLossSpec loss = loss_spec(o, n, grad_scale, &s);
    int rc = backend_pref_backward(o->backend, o->policy, &batch, &loss, err);
    rec->n = n;
    rec->tokens = batch_tokens(&batch);
    batch_free(&batch);
    return rc ? -1 : 0;
}

static int pref_settle(void *ctx, const MicroRecord *rec, ObjectiveStats *out, Error *err)
{
    const PrefObjective *o = ctx;
    PrefScratch s = scratch_view(rec->f, rec->n);
    PrefMetrics m;
    if (pref_loss(o, rec->n, 1.0, &s, &m, err)) return -1;
    report(o, &m, out);
    out->tokens = rec->tokens;
    return 0;
}

/* Weighted running mean of the metrics over evaluation batches. */
static void add_weighted(ObjectiveStats *sum, const ObjectiveStats *part, double w)
{
    sum->loss += w * part->loss;
    sum->n_metrics = part->n_metrics;
    for (size_t i = 0; i < part->n_metrics; i++) {
        sum->metrics[i].name = part->metrics[i].name;
        sum->metrics[i].value += w * part->metrics[i].value;
    }
}

static int pref_evaluate(void *ctx, const DistComm *comm, ObjectiveStats *out, Error *err)
{
    PrefObjective *o = ctx;
    size_t total = o->eval->n < (size_t)o->eval_size ? o->eval->n : (size_t)o->eval_size;
    memset(out, 0, sizeof *out);
    if (total == 0) return error_set(err, "no validation pairs to evaluate on");
    float *f = malloc(PREF_FLOATS_PER_PAIR * (size_t)o->batch_size * sizeof *f);
    size_t *idx = malloc((size_t)o->batch_size * sizeof *idx);
    int rc = idx && f ? 0 : error_set(err, "out of memory");
    size_t lo, hi;
    dist_shard_blocks(comm, total, (size_t)o->batch_size, &lo, &hi);
    for (size_t start = lo; rc == 0 && start < hi; start += (size_t)o->batch_size) {
        int n = (int)(hi - start < (size_t)o->batch_size ? hi - start : (size_t)o->batch_size);
        for (int i = 0; i < n; i++) idx[i] = start + (size_t)i;
        Batch batch;
        PrefMetrics m;
        ObjectiveStats part;
        memset(&part, 0, sizeof part);
        PrefScratch s = scratch_view(f, n);
        rc = pref_queue(o, o->eval, &o->eval_c, idx, n, 0, &batch, &s, err);
        if (rc) break;
        batch_free(&batch);
        rc = backend_sync(o->backend, err);
        if (rc) break;
        rc = pref_loss(o, n, 1.0, &s, &m, err);
        if (rc == 0) {
            report(o, &m, &part);
            add_weighted(out, &part, (double)n / (double)total);
        }
    }
    free(idx);
    free(f);
    if (rc == 0 && dist_is_multi(comm)) {
        /* the parts' weighted sums, added in rank order; a rank with no
         * batch has no metric names yet: rank 0 always has the first one */
        double v[TRAIN_METRICS_MAX + 1];
        v[0] = out->loss;
        for (size_t i = 0; i < TRAIN_METRICS_MAX; i++) v[1 + i] = i < out->n_metrics ? out->metrics[i].value : 0;
        rc = dist_sum_ordered_f64(comm, v, TRAIN_METRICS_MAX + 1, err);
        out->loss = v[0];
        for (size_t i = 0; i < out->n_metrics; i++) out->metrics[i].value = v[1 + i];
    }
    return rc ? -1 : 0;
}

/* DPO's and MODPO's micro-batch loss is a mean over pairs. */
static double pref_weight(void *ctx, const size_t *idx, int n)
{
    (void)ctx;
    (void)idx;
    return (double)n;
}

Objective pref_objective(PrefObjective *o)
{
    return (Objective){o, o->train->n, pref_micro, pref_settle, pref_evaluate, pref_weight};
}

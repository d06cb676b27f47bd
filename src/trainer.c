#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "adamw.h"
#include "dist/dist_allreduce.h"
#include "dist/dist_zero.h"
#include "lr_schedule.h"
#include "metrics_log.h"
#include "train_order.h"
#include "train_state.h"

typedef struct {
    const TrainerSetup *s;
    LrSchedule sched;
    GradComm gc;
    ZeroOptimizer zero;       /* AdamW over this rank's slice (all of it on one rank) */
    TrainOrder order;
    TrainState st;
    MetricsLog log;
    bool root;                /* rank 0 of the group: logs and progress */
    size_t *idx;              /* [batch_size] one micro-batch's examples */
    MicroRecord *records;     /* [grad_accum] what each queued micro-batch left */
    double *weights;          /* [grad_accum] each one's share of the step (0: not this rank's) */
    double step_seconds;      /* gradients + optimizer, summed over the steps run */
    double cpu_seconds;       /* this process's CPU time in them */
    bool opt_on_backend;      /* the backend takes the optimizer step (its adamw_step) */
    bool host_params_stale;   /* the backend's params are ahead of the host adapter's */
    float *full_m, *full_v;   /* [n] the whole moments, staged for a sharded checkpoint */
} Run;

static double cpu_seconds_now(void)
{
    struct timespec t;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t) != 0) return 0;
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* "auto": a GPU backend steps the optimizer itself, with any number of
 * ranks (gradients summed by NCCL in place; on 2 H200s it gave the host
 * way's adapter exactly, 2.7% faster); the CPU backend does in a single
 * process, and with several CPU ranks the gradients come to the host for
 * ZeRO-1 (dist_zero.h), which shards the moments.  With the backend's step
 * every rank keeps all the moments (an 8.4M-parameter adapter's are
 * 67 MB); a checkpoint still stores them sharded. */
static int optimizer_on_backend(const TrainerSetup *s, bool *out, Error *err)
{
    const char *place = s->optimizer ? s->optimizer : "auto";
    bool can = s->backend->ops->adamw_step != NULL;
    if (strcmp(place, "host") == 0) *out = false;
    else if (strcmp(place, "backend") == 0) *out = true;
    else if (strcmp(place, "auto") == 0)
        *out = can && (!dist_is_multi(s->comm) || strcmp(s->backend->ops->name, "cpu") != 0);
    else return error_set(err, "run.optimizer: '%s' is not auto, host or backend", place);
    if (*out && !can)
        return error_set(err, "run.optimizer = backend: the %s backend has no optimizer step",
                         s->backend->ops->name);
    return 0;
}

static int run_init(Run *r, const TrainerSetup *s, Error *err)
{
    memset(r, 0, sizeof *r);
    r->s = s;
    const TrainConfig *tc = s->tc;
    int kind = lr_schedule_kind_from_name(tc->scheduler);
    if (kind < 0) return error_set(err, "unknown scheduler '%s'", tc->scheduler);
    if (lr_schedule_init(&r->sched, (LrScheduleKind)kind, tc->learning_rate, tc->steps,
                         tc->warmup_steps, tc->warmup_ratio, err))
        return -1;
    size_t n = s->adapter->n_params;
    r->root = dist_is_root(s->comm);
    GradCommKind transport;
    if (grad_comm_kind_from_name("auto", s->backend->ops->name, &transport) ||
        grad_comm_init(&r->gc, s->comm, transport, n, err) ||
        zero_init(&r->zero, &r->gc, n, adamw_default_config(tc->weight_decay), err))
        return -1;
    if (optimizer_on_backend(s, &r->opt_on_backend, err)) return -1;
    if (r->opt_on_backend && dist_is_multi(s->comm)) {
        r->full_m = calloc(n, sizeof *r->full_m);
        r->full_v = calloc(n, sizeof *r->full_v);
        if (!r->full_m || !r->full_v) return error_set(err, "out of memory");
    }
    if (train_order_init(&r->order, s->seed, s->obj.n_train, err)) return -1;
    r->idx = calloc((size_t)tc->batch_size, sizeof *r->idx);
    r->records = calloc((size_t)tc->grad_accum, sizeof *r->records);
    r->weights = calloc((size_t)tc->grad_accum, sizeof *r->weights);
    r->st.best_params = malloc(n * sizeof(float));
    if (!r->idx || !r->records || !r->weights || !r->st.best_params) return error_set(err, "out of memory");
    r->st.stage = s->stage;
    r->st.n_params = n;
    r->st.params = s->adapter->params;
    r->st.opt = &r->zero.opt;
    r->st.opt_begin = r->zero.begin;
    r->st.comm = s->comm;
    r->st.best_eval_loss = INFINITY;
    r->st.best_step = -1;
    return 0;
}

static void run_free(Run *r)
{
    zero_free(&r->zero);
    grad_comm_free(&r->gc);
    train_order_free(&r->order);
    free(r->idx);
    for (int m = 0; r->records && m < r->s->tc->grad_accum; m++) micro_record_free(&r->records[m]);
    free(r->records);
    free(r->weights);
    free(r->st.best_params);
    free(r->full_m);
    free(r->full_v);
}

/* A resumed checkpoint's moments (this rank's slice in r->zero.opt) onto
 * the backend, which keeps them whole. */
static int push_moments(Run *r, Error *err)
{
    const TrainerSetup *s = r->s;
    const AdamW *opt = &r->zero.opt;
    if (!dist_is_multi(s->comm)) return s->backend->ops->adamw_push(s->backend, s->handle, opt->m, opt->v, err);
    size_t n = r->zero.n, b = r->zero.begin;
    memset(r->full_m, 0, n * sizeof *r->full_m);
    memset(r->full_v, 0, n * sizeof *r->full_v);
    memcpy(r->full_m + b, opt->m, opt->n * sizeof *opt->m);
    memcpy(r->full_v + b, opt->v, opt->n * sizeof *opt->v);
    if (grad_comm_allgather(&r->gc, r->full_m, err) || grad_comm_allgather(&r->gc, r->full_v, err))
        return error_prefix(err, "gathering the resumed AdamW moments: ");
    return s->backend->ops->adamw_push(s->backend, s->handle, r->full_m, r->full_v, err);
}

/* The backend's params (and, for a checkpoint, its moments) back into the
 * host adapter and this rank's slice of r->zero.opt. */
static int pull_backend_state(Run *r, bool with_moments, Error *err)
{
    const TrainerSetup *s = r->s;
    AdamW *opt = &r->zero.opt;
    if (!r->opt_on_backend || (!with_moments && !r->host_params_stale)) return 0;
    bool staged = dist_is_multi(s->comm);
    float *m = !with_moments ? NULL : staged ? r->full_m : opt->m;
    float *v = !with_moments ? NULL : staged ? r->full_v : opt->v;
    if (s->backend->ops->adamw_pull(s->backend, s->handle, m, v, err)) return -1;
    if (with_moments && staged) {
        memcpy(opt->m, r->full_m + r->zero.begin, opt->n * sizeof *opt->m);
        memcpy(opt->v, r->full_v + r->zero.begin, opt->n * sizeof *opt->v);
    }
    r->host_params_stale = false;
    return 0;
}

static int resume(Run *r, TrainResult *res, Error *err)
{
    const TrainerSetup *s = r->s;
    bool found = false;
    char warning[1024] = "";
    if (train_state_load(s->dir, &r->st, &found, warning, sizeof warning, err)) return -1;
    if (warning[0] && r->root) fprintf(stderr, "modpo %s: warning: %s\n", s->stage, warning);
    if (!found) return 0;
    res->resumed_from = r->st.step;
    if (r->root) fprintf(stderr, "modpo %s: resuming from step %ld\n", s->stage, r->st.step);
    if (s->backend->ops->adapter_push(s->backend, s->handle, err)) return -1;
    return r->opt_on_backend ? push_moments(r, err) : 0;
}

/* Sums a micro-batch's metrics into the step's running means. */
static void accumulate(ObjectiveStats *sum, const ObjectiveStats *m, double weight)
{
    sum->loss += weight * m->loss;
    sum->tokens += m->tokens;
    if (sum->n_metrics == 0) {
        sum->n_metrics = m->n_metrics;
        for (size_t i = 0; i < m->n_metrics; i++) sum->metrics[i] = (Metric){m->metrics[i].name, 0};
    }
    for (size_t i = 0; i < m->n_metrics && i < sum->n_metrics; i++)
        sum->metrics[i].value += weight * m->metrics[i].value;
}

/* The step's metrics summed over the ranks: each rank's part is already
 * weighted by its share of every micro-batch, so the sums are the means a
 * single process would log (up to the order of the additions). */
static int reduce_stats(const Run *r, ObjectiveStats *stats, Error *err)
{
    if (!dist_is_multi(r->s->comm)) return 0;
    double v[TRAIN_METRICS_MAX + 2];
    v[0] = stats->loss;
    v[1] = (double)stats->tokens;
    for (size_t i = 0; i < TRAIN_METRICS_MAX; i++) v[2 + i] = i < stats->n_metrics ? stats->metrics[i].value : 0;
    if (dist_sum_ordered_f64(r->s->comm, v, TRAIN_METRICS_MAX + 2, err)) return -1;
    stats->loss = v[0];
    stats->tokens = (long)v[1];
    for (size_t i = 0; i < stats->n_metrics; i++) stats->metrics[i].value = v[2 + i];
    return 0;
}

/* The examples of micro-batch m of `step` (global positions
 * (step * grad_accum + m) * batch_size + i), into r->idx. */
static int micro_batch_examples(Run *r, long step, int m, Error *err)
{
    const TrainConfig *tc = r->s->tc;
    uint64_t base = ((uint64_t)step * (uint64_t)tc->grad_accum + (uint64_t)m) * (uint64_t)tc->batch_size;
    for (int i = 0; i < tc->batch_size; i++)
        if (train_order_at(&r->order, base + (uint64_t)i, &r->idx[i], err)) return -1;
    return 0;
}

/* Data parallel: the step's batch_size x grad_accum positions are split
 * contiguously over the group's ranks; a rank runs the part of each
 * micro-batch that falls in its share, with the gradient scaled by
 * (1 / grad_accum) x (its part's weight / the micro-batch's weight), so the
 * gradients summed over the ranks are exactly the single-process ones:
 * every micro-batch's loss stays the mean over all of its examples.
 * Every micro-batch is queued before the one sync that settles their
 * losses, so the backend never waits for the host inside a step. */
static int accumulate_gradients(Run *r, long step, ObjectiveStats *stats, Error *err)
{
    const TrainerSetup *s = r->s;
    const TrainConfig *tc = s->tc;
    Backend *b = s->backend;
    memset(stats, 0, sizeof *stats);
    size_t lo, hi, B = (size_t)tc->batch_size;
    dist_shard(s->comm, B * (size_t)tc->grad_accum, &lo, &hi);
    if (b->ops->adapter_zero_grads(b, s->handle, err)) return -1;
    double *weight = r->weights;
    for (int m = 0; m < tc->grad_accum; m++) {
        size_t first = (size_t)m * B, from = lo > first ? lo : first, to = hi < first + B ? hi : first + B;
        weight[m] = 0;
        if (from >= to) continue;
        if (micro_batch_examples(r, step, m, err)) return -1;
        const size_t *part = r->idx + (from - first);
        int n = (int)(to - from);
        double share = 1.0;
        if (n < tc->batch_size) {
            double whole = s->obj.weight(s->obj.ctx, r->idx, tc->batch_size);
            share = whole > 0 ? s->obj.weight(s->obj.ctx, part, n) / whole : 0.0;
        }
        weight[m] = share / tc->grad_accum;
        if (s->obj.micro(s->obj.ctx, part, n, weight[m], &r->records[m], err))
            return error_prefix(err, "step %ld micro-batch %d: ", step + 1, m);
    }
    if (backend_sync(b, err)) return error_prefix(err, "step %ld: ", step + 1);
    for (int m = 0; m < tc->grad_accum; m++) {
        if (weight[m] == 0) continue;
        ObjectiveStats micro;
        memset(&micro, 0, sizeof micro);
        if (s->obj.settle(s->obj.ctx, &r->records[m], &micro, err))
            return error_prefix(err, "step %ld micro-batch %d: ", step + 1, m);
        accumulate(stats, &micro, weight[m]);
    }
    if (!r->opt_on_backend && b->ops->adapter_pull_grads(b, s->handle, err)) return -1;
    return reduce_stats(r, stats, err);
}

/* sum_fn of BackendGradSum: NCCL on the backend's stream, or (host memory)
 * the transport's all-reduce. */
static int sum_gradients(void *ctx, float *x, size_t n, void *queue, Error *err)
{
    GradComm *gc = ctx;
    if (n != gc->n) return error_set(err, "%zu gradients to sum, the group expects %zu", n, gc->n);
    return queue ? grad_comm_allreduce_sum_queued(gc, x, queue, err) : grad_comm_allreduce_sum(gc, x, err);
}

static int backend_optimizer_step(Run *r, double lr, double *grad_norm, Error *err)
{
    const TrainerSetup *s = r->s;
    AdamW *opt = &r->zero.opt;
    BackendAdamWStep req = {opt->cfg, opt->step + 1, lr, s->tc->max_grad_norm, {NULL, NULL}};
    if (dist_is_multi(s->comm)) req.sum = (BackendGradSum){sum_gradients, &r->gc};
    if (s->backend->ops->adamw_step(s->backend, s->handle, &req, grad_norm, err)) return -1;
    opt->step++;
    r->host_params_stale = true;
    return 0;
}

static int optimizer_step(Run *r, long step, double *grad_norm, double *lr, Error *err)
{
    const TrainerSetup *s = r->s;
    LoraAdapter *a = s->adapter;
    *lr = lr_schedule_lr(&r->sched, step);
    if (r->opt_on_backend) {
        if (backend_optimizer_step(r, *lr, grad_norm, err)) return error_prefix(err, "step %ld: ", step + 1);
        return 0;
    }
    if (zero_step(&r->zero, a->params, a->grads, s->tc->max_grad_norm, *lr, grad_norm, err))
        return error_prefix(err, "step %ld: ", step + 1);
    return s->backend->ops->adapter_push(s->backend, s->handle, err);
}

static int log_train(Run *r, long step, const ObjectiveStats *st, double grad_norm, double lr,
                     double seconds, Error *err)
{
    MetricValue v[TRAIN_METRICS_MAX + 7];
    int n = 0;
    v[n++] = (MetricValue){"loss", st->loss};
    v[n++] = (MetricValue){"lr", lr};
    v[n++] = (MetricValue){"grad_norm", grad_norm};
    v[n++] = (MetricValue){"tokens_per_s", seconds > 0 ? (double)st->tokens / seconds : NAN};
    for (size_t i = 0; i < st->n_metrics; i++) v[n++] = (MetricValue){st->metrics[i].name, st->metrics[i].value};
    if (dist_is_multi(r->s->comm)) {
        v[n++] = (MetricValue){"ranks", (double)dist_size(r->s->comm)};
        v[n++] = (MetricValue){"comm_seconds", r->gc.seconds};
    }
    if (!r->root) return 0;
    return metrics_log_write(&r->log, "train", step, v, n, err);
}

static int evaluate(Run *r, long step, Error *err)
{
    const TrainerSetup *s = r->s;
    ObjectiveStats ev;
    memset(&ev, 0, sizeof ev);
    if (s->obj.evaluate(s->obj.ctx, s->comm, &ev, err)) return error_prefix(err, "evaluation at step %ld: ", step);
    if (ev.loss < r->st.best_eval_loss) {
        if (pull_backend_state(r, false, err)) return error_prefix(err, "evaluation at step %ld: ", step);
        r->st.best_eval_loss = ev.loss;
        r->st.best_step = step;
        memcpy(r->st.best_params, s->adapter->params, s->adapter->n_params * sizeof(float));
    }
    MetricValue v[TRAIN_METRICS_MAX + 2];
    int n = 0;
    v[n++] = (MetricValue){"eval_loss", ev.loss};
    v[n++] = (MetricValue){"best_eval_loss", r->st.best_eval_loss};
    for (size_t i = 0; i < ev.n_metrics; i++) v[n++] = (MetricValue){ev.metrics[i].name, ev.metrics[i].value};
    if (!r->root) return 0;
    return metrics_log_write(&r->log, "eval", step, v, n, err);
}

static int train_one_step(Run *r, double *loss, Error *err)
{
    const TrainerSetup *s = r->s;
    const TrainConfig *tc = s->tc;
    long step = r->st.step;
    double t0 = monotonic_seconds(), c0 = cpu_seconds_now();
    ObjectiveStats stats;
    double grad_norm = 0, lr = 0;
    if (accumulate_gradients(r, step, &stats, err)) return -1;
    if (optimizer_step(r, step, &grad_norm, &lr, err)) return -1;
    r->step_seconds += monotonic_seconds() - t0;
    r->cpu_seconds += cpu_seconds_now() - c0;
    r->st.step = ++step;
    *loss = stats.loss;
    if (step % tc->log_steps == 0 || step == 1 || step == tc->steps)
        if (log_train(r, step, &stats, grad_norm, lr, monotonic_seconds() - t0, err)) return -1;
    if (step % tc->eval_steps == 0 || step == tc->steps)
        if (evaluate(r, step, err)) return -1;
    if (step % tc->save_steps == 0 || step == tc->steps)
        if (pull_backend_state(r, true, err) || train_state_save(s->dir, &r->st, tc->save_total_limit, err))
            return -1;
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f", stats.loss);
    if (r->root) metrics_log_progress(&r->log, step, tc->steps, extra);
    return 0;
}

static int train_loop(Run *r, TrainResult *res, Error *err)
{
    const TrainerSetup *s = r->s;
    while (r->st.step < s->tc->steps) {
        if (train_one_step(r, &res->last_train_loss, err)) return -1;
        if (s->stop_after_step > 0 && r->st.step >= s->stop_after_step) break;
    }
    return 0;
}

int trainer_run(const TrainerSetup *s, TrainResult *res, Error *err)
{
    memset(res, 0, sizeof *res);
    double t0 = monotonic_seconds();
    Run r;
    int rc = -1;
    if (run_init(&r, s, err) || resume(&r, res, err)) goto done;
    char path[CONFIG_STR_MAX + 32];
    snprintf(path, sizeof path, "%s/metrics.jsonl", s->dir);
    if (r.root && metrics_log_open(&r.log, path, s->stage, r.st.step, err)) goto done;
    r.log.quiet = s->quiet;
    rc = train_loop(&r, res, err);
    if (r.root) metrics_log_close(&r.log);
    if (!rc) rc = pull_backend_state(&r, false, err);
    if (rc) goto done;
    if (r.st.best_step >= 0) {
        memcpy(s->adapter->params, r.st.best_params, s->adapter->n_params * sizeof(float));
        if (s->backend->ops->adapter_push(s->backend, s->handle, err)) { rc = -1; goto done; }
    }
    res->steps_done = r.st.step;
    res->best_eval_loss = r.st.best_eval_loss;
    res->best_step = r.st.best_step;
    res->seconds = monotonic_seconds() - t0;
    res->comm_seconds = r.gc.seconds;
    res->step_seconds = r.step_seconds;
    res->cpu_seconds = r.cpu_seconds;
    if (dist_sum_ordered_f64(s->comm, &res->cpu_seconds, 1, err)) { rc = -1; goto done; }
done:
    run_free(&r);
    return rc;
}

static void *grow(void *p, size_t *cap, size_t n, size_t size, Error *err)
{
    if (n <= *cap) return p;
    void *q = realloc(p, n * size);
    if (!q) {
        error_set(err, "out of memory for a micro-batch's record (%zu values)", n);
        return NULL;
    }
    *cap = n;
    return q;
}

float *micro_record_floats(MicroRecord *rec, size_t n, Error *err)
{
    float *f = grow(rec->f, &rec->f_cap, n, sizeof *rec->f, err);
    if (f) rec->f = f;
    return f;
}

int *micro_record_ints(MicroRecord *rec, size_t n, Error *err)
{
    int *i = grow(rec->i, &rec->i_cap, n, sizeof *rec->i, err);
    if (i) rec->i = i;
    return i;
}

void micro_record_free(MicroRecord *rec)
{
    free(rec->f);
    free(rec->i);
    memset(rec, 0, sizeof *rec);
}

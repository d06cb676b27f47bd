#include "trainer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "grad_clip.h"
#include "lr_schedule.h"
#include "metrics_log.h"
#include "train_order.h"
#include "train_state.h"

typedef struct {
    const TrainerSetup *s;
    LrSchedule sched;
    AdamW opt;
    TrainOrder order;
    TrainState st;
    MetricsLog log;
    size_t *idx;
    double tokens_per_s;
} Run;

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
    if (adamw_init(&r->opt, n, adamw_default_config(tc->weight_decay), err)) return -1;
    if (train_order_init(&r->order, s->seed, s->obj.n_train, err)) return -1;
    r->idx = calloc((size_t)tc->batch_size, sizeof *r->idx);
    r->st.best_params = malloc(n * sizeof(float));
    if (!r->idx || !r->st.best_params) return error_set(err, "out of memory");
    r->st.stage = s->stage;
    r->st.n_params = n;
    r->st.params = s->adapter->params;
    r->st.opt = &r->opt;
    r->st.best_eval_loss = INFINITY;
    r->st.best_step = -1;
    return 0;
}

static void run_free(Run *r)
{
    adamw_free(&r->opt);
    train_order_free(&r->order);
    free(r->idx);
    free(r->st.best_params);
}

static int resume(Run *r, TrainResult *res, Error *err)
{
    const TrainerSetup *s = r->s;
    bool found = false;
    char warning[1024] = "";
    if (train_state_load(s->dir, &r->st, &found, warning, sizeof warning, err)) return -1;
    if (warning[0]) fprintf(stderr, "modpo %s: warning: %s\n", s->stage, warning);
    if (!found) return 0;
    res->resumed_from = r->st.step;
    fprintf(stderr, "modpo %s: resuming from step %ld\n", s->stage, r->st.step);
    return s->backend->ops->adapter_push(s->backend, s->handle, err);
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

static int accumulate_gradients(Run *r, long step, ObjectiveStats *stats, Error *err)
{
    const TrainerSetup *s = r->s;
    const TrainConfig *tc = s->tc;
    Backend *b = s->backend;
    memset(stats, 0, sizeof *stats);
    if (b->ops->adapter_zero_grads(b, s->handle, err)) return -1;
    for (int m = 0; m < tc->grad_accum; m++) {
        uint64_t base = ((uint64_t)step * (uint64_t)tc->grad_accum + (uint64_t)m) * (uint64_t)tc->batch_size;
        for (int i = 0; i < tc->batch_size; i++)
            if (train_order_at(&r->order, base + (uint64_t)i, &r->idx[i], err)) return -1;
        ObjectiveStats micro;
        memset(&micro, 0, sizeof micro);
        if (s->obj.micro(s->obj.ctx, r->idx, tc->batch_size, 1.0 / tc->grad_accum, &micro, err))
            return error_prefix(err, "step %ld micro-batch %d: ", step + 1, m);
        accumulate(stats, &micro, 1.0 / tc->grad_accum);
    }
    return b->ops->adapter_pull_grads(b, s->handle, err);
}

static int optimizer_step(Run *r, long step, double *grad_norm, double *lr, Error *err)
{
    const TrainerSetup *s = r->s;
    LoraAdapter *a = s->adapter;
    *grad_norm = grad_clip_norm(a->grads, a->n_params, s->tc->max_grad_norm);
    if (!isfinite(*grad_norm))
        return error_set(err, "step %ld: the gradient norm is not finite (%g)", step + 1, *grad_norm);
    *lr = lr_schedule_lr(&r->sched, step);
    if (adamw_step(&r->opt, a->params, a->grads, a->n_params, *lr, err)) return -1;
    return s->backend->ops->adapter_push(s->backend, s->handle, err);
}

static int log_train(Run *r, long step, const ObjectiveStats *st, double grad_norm, double lr,
                     double seconds, Error *err)
{
    MetricValue v[TRAIN_METRICS_MAX + 5];
    int n = 0;
    v[n++] = (MetricValue){"loss", st->loss};
    v[n++] = (MetricValue){"lr", lr};
    v[n++] = (MetricValue){"grad_norm", grad_norm};
    v[n++] = (MetricValue){"tokens_per_s", seconds > 0 ? (double)st->tokens / seconds : NAN};
    for (size_t i = 0; i < st->n_metrics; i++) v[n++] = (MetricValue){st->metrics[i].name, st->metrics[i].value};
    return metrics_log_write(&r->log, "train", step, v, n, err);
}

static int evaluate(Run *r, long step, Error *err)
{
    const TrainerSetup *s = r->s;
    ObjectiveStats ev;
    memset(&ev, 0, sizeof ev);
    if (s->obj.evaluate(s->obj.ctx, &ev, err)) return error_prefix(err, "evaluation at step %ld: ", step);
    if (ev.loss < r->st.best_eval_loss) {
        r->st.best_eval_loss = ev.loss;
        r->st.best_step = step;
        memcpy(r->st.best_params, s->adapter->params, s->adapter->n_params * sizeof(float));
    }
    MetricValue v[TRAIN_METRICS_MAX + 2];
    int n = 0;
    v[n++] = (MetricValue){"eval_loss", ev.loss};
    v[n++] = (MetricValue){"best_eval_loss", r->st.best_eval_loss};
    for (size_t i = 0; i < ev.n_metrics; i++) v[n++] = (MetricValue){ev.metrics[i].name, ev.metrics[i].value};
    return metrics_log_write(&r->log, "eval", step, v, n, err);
}

static int train_one_step(Run *r, double *loss, Error *err)
{
    const TrainerSetup *s = r->s;
    const TrainConfig *tc = s->tc;
    long step = r->st.step;
    double t0 = monotonic_seconds();
    ObjectiveStats stats;
    double grad_norm = 0, lr = 0;
    if (accumulate_gradients(r, step, &stats, err)) return -1;
    if (optimizer_step(r, step, &grad_norm, &lr, err)) return -1;
    r->st.step = ++step;
    *loss = stats.loss;
    if (step % tc->log_steps == 0 || step == 1 || step == tc->steps)
        if (log_train(r, step, &stats, grad_norm, lr, monotonic_seconds() - t0, err)) return -1;
    if (step % tc->eval_steps == 0 || step == tc->steps)
        if (evaluate(r, step, err)) return -1;
    if (step % tc->save_steps == 0 || step == tc->steps)
        if (train_state_save(s->dir, &r->st, tc->save_total_limit, err)) return -1;
    char extra[96];
    snprintf(extra, sizeof extra, "loss %.4f", stats.loss);
    metrics_log_progress(&r->log, step, tc->steps, extra);
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
    if (metrics_log_open(&r.log, path, s->stage, r.st.step, err)) goto done;
    r.log.quiet = s->quiet;
    rc = train_loop(&r, res, err);
    metrics_log_close(&r.log);
    if (rc) goto done;
    if (r.st.best_step >= 0) {
        memcpy(s->adapter->params, r.st.best_params, s->adapter->n_params * sizeof(float));
        if (s->backend->ops->adapter_push(s->backend, s->handle, err)) { rc = -1; goto done; }
    }
    res->steps_done = r.st.step;
    res->best_eval_loss = r.st.best_eval_loss;
    res->best_step = r.st.best_step;
    res->seconds = monotonic_seconds() - t0;
done:
    run_free(&r);
    return rc;
}

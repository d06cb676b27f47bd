#include "lr_schedule.h"

#include <math.h>
#include <string.h>

static const char *const kind_names[] = {
    [LR_CONSTANT] = "constant",
    [LR_CONSTANT_WITH_WARMUP] = "constant_with_warmup",
    [LR_LINEAR] = "linear",
    [LR_COSINE] = "cosine",
};

int lr_schedule_kind_from_name(const char *name)
{
    for (int k = 0; k < (int)(sizeof kind_names / sizeof *kind_names); k++)
        if (strcmp(name, kind_names[k]) == 0) return k;
    return -1;
}

const char *lr_schedule_kind_name(LrScheduleKind k) { return kind_names[k]; }

long lr_warmup_steps(long total_steps, long warmup_steps, double warmup_ratio)
{
    if (warmup_steps > 0) return warmup_steps;
    return (long)ceil((double)total_steps * warmup_ratio);
}

int lr_schedule_init(LrSchedule *s, LrScheduleKind kind, double base_lr, long total_steps,
                     long warmup_steps, double warmup_ratio, Error *err)
{
    if (total_steps <= 0) return error_set(err, "schedule needs a positive step count, got %ld", total_steps);
    if (warmup_steps < 0) return error_set(err, "warmup steps must be >= 0, got %ld", warmup_steps);
    if (!(warmup_ratio >= 0.0 && warmup_ratio <= 1.0))
        return error_set(err, "warmup ratio must be in [0, 1], got %g", warmup_ratio);
    *s = (LrSchedule){
        .kind = kind, .base_lr = base_lr, .total_steps = total_steps,
        .warmup_steps = lr_warmup_steps(total_steps, warmup_steps, warmup_ratio),
        .num_cycles = 0.5,
    };
    return 0;
}

/* The formulas below are transformers' lr_lambda functions term by term
 * (including their max(1, .) guards), so the doubles come out identical. */
static double warmup_factor(long step, long warmup)
{
    return (double)step / (double)(warmup > 1 ? warmup : 1);
}

double lr_schedule_factor(const LrSchedule *s, long step)
{
    long w = s->warmup_steps, t = s->total_steps;
    if (s->kind == LR_CONSTANT) return 1.0;
    if (step < w) return warmup_factor(step, w);
    if (s->kind == LR_CONSTANT_WITH_WARMUP) return 1.0;
    double span = (double)(t - w > 1 ? t - w : 1);
    if (s->kind == LR_LINEAR) return fmax(0.0, (double)(t - step) / span);
    double progress = (double)(step - w) / span;
    return fmax(0.0, 0.5 * (1.0 + cos(M_PI * s->num_cycles * 2.0 * progress)));
}

double lr_schedule_lr(const LrSchedule *s, long step)
{
    return s->base_lr * lr_schedule_factor(s, step);
}

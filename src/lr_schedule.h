/* Learning-rate schedules exactly as transformers defines them
 * (get_{cosine,linear,constant}_schedule_with_warmup, "constant"): a LambdaLR
 * factor of the optimizer step, times the base learning rate.  Hugging Face's
 * Trainer steps the scheduler after the optimizer, so the k-th optimizer step
 * (k = 0, 1, ...; AdamW.step before the update) uses lr_schedule_lr(s, k) --
 * which is 0 for k = 0 whenever there is a warmup. */
#ifndef MODPO_LR_SCHEDULE_H
#define MODPO_LR_SCHEDULE_H

#include "error.h"

typedef enum {
    LR_CONSTANT,             /* "constant": factor 1, warmup ignored (as transformers) */
    LR_CONSTANT_WITH_WARMUP, /* "constant_with_warmup" */
    LR_LINEAR,               /* "linear" */
    LR_COSINE,               /* "cosine", num_cycles 0.5 */
} LrScheduleKind;

typedef struct {
    LrScheduleKind kind;
    double base_lr;
    long total_steps;
    long warmup_steps;
    double num_cycles; /* cosine only; transformers' default 0.5 */
} LrSchedule;

/* transformers' SchedulerType names above; -1 for anything else. */
int lr_schedule_kind_from_name(const char *name);
const char *lr_schedule_kind_name(LrScheduleKind k);

/* Warmup steps as TrainingArguments.get_warmup_steps resolves them: the step
 * count when > 0, otherwise ceil(total_steps * warmup_ratio) (in double, so
 * e.g. 100 * 0.07 = 7.000000000000001 gives 8, as in Python). */
long lr_warmup_steps(long total_steps, long warmup_steps, double warmup_ratio);

/* warmup_steps > 0 wins over warmup_ratio (see lr_warmup_steps). */
int lr_schedule_init(LrSchedule *s, LrScheduleKind kind, double base_lr, long total_steps,
                     long warmup_steps, double warmup_ratio, Error *err);

/* The LambdaLR factor at `step` and the learning rate base_lr * factor. */
double lr_schedule_factor(const LrSchedule *s, long step);
double lr_schedule_lr(const LrSchedule *s, long step);

#endif

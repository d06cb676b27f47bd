/* The CPU backend, the objectives and the optimizer together against torch +
 * transformers + PEFT (fixtures from tests/gen_training_fixtures.py):
 * SFT, DPO and MODPO losses and LoRA gradients through the real model, then
 * ten MODPO optimizer steps (AdamW, cosine schedule with warmup, clipping,
 * gradient accumulation) step by step. */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adamw.h"
#include "backend.h"
#include "batch.h"
#include "grad_clip.h"
#include "lora_peft.h"
#include "losses.h"
#include "lr_schedule.h"
#include "model_io.h"
#include "safetensors.h"

#define FIX "tests/fixtures/training"
#define BACKEND_FIX "tests/fixtures/backend/gqa"
#define N_PAIRS 8
#define STEPS 10
#define ACCUM 2
#define BATCH 2

typedef struct {
    SafetensorsFile *ref;
    LlamaModel model;
    Backend *backend;
    int64_t tokens[2 * N_PAIRS * 64], lengths[2 * N_PAIRS], mask[2 * N_PAIRS * 64];
    int seq_len;
    float ref_logps[2 * N_PAIRS], margin_logps[2 * N_PAIRS];
} Fixture;

static Fixture fx;

static const SafetensorsTensor *tensor(const char *name)
{
    const SafetensorsTensor *t = safetensors_find(fx.ref, name);
    ck_assert_msg(t != NULL, "fixture tensor %s missing", name);
    return t;
}

static void read_f32(const char *name, float *dst, size_t n)
{
    const SafetensorsTensor *t = tensor(name);
    ck_assert_uint_eq(t->n_elements, n);
    Error err;
    ck_assert_msg(safetensors_tensor_to_f32(fx.ref, t, dst, &err) == 0, "%s", err.msg);
}

static void read_i64(const char *name, int64_t *dst, size_t cap)
{
    const SafetensorsTensor *t = tensor(name);
    ck_assert_uint_le(t->n_elements, cap);
    Error err;
    ck_assert_msg(safetensors_tensor_to_i64(fx.ref, t, dst, &err) == 0, "%s", err.msg);
}

static void setup(void)
{
    Error err;
    ck_assert_msg(safetensors_open(FIX "/reference.safetensors", &fx.ref, &err) == 0, "%s", err.msg);
    ck_assert_msg(llama_model_load(BACKEND_FIX "/model", &fx.model, &err) == 0, "%s", err.msg);
    ck_assert_msg(cpu_backend_create(&fx.model, NULL, &fx.backend, &err) == 0, "%s", err.msg);
    fx.seq_len = (int)tensor("tokens")->shape[1];
    read_i64("tokens", fx.tokens, sizeof fx.tokens / sizeof fx.tokens[0]);
    read_i64("lengths", fx.lengths, 2 * N_PAIRS);
    read_i64("label_mask", fx.mask, sizeof fx.mask / sizeof fx.mask[0]);
    read_f32("ref_logps", fx.ref_logps, 2 * N_PAIRS);
    read_f32("margin_logps", fx.margin_logps, 2 * N_PAIRS);
}

static void teardown(void)
{
    backend_destroy(fx.backend);
    llama_model_free(&fx.model);
    safetensors_close(fx.ref);
}

/* Pairs idx[0..n) as a batch [chosen..., rejected...] of fixture rows. */
static void pair_batch(const int *idx, int n, Batch *b)
{
    int T = fx.seq_len;
    memset(b, 0, sizeof *b);
    b->n_seq = 2 * n;
    b->seq_len = T;
    b->tokens = calloc((size_t)(2 * n * T), sizeof *b->tokens);
    b->label_mask = calloc((size_t)(2 * n * T), 1);
    b->lengths = calloc((size_t)(2 * n), sizeof *b->lengths);
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < n; i++) {
            int row = idx[i] + side * N_PAIRS, dst = side * n + i;
            b->lengths[dst] = (int32_t)fx.lengths[row];
            for (int t = 0; t < T; t++) {
                b->tokens[dst * T + t] = (int32_t)fx.tokens[row * T + t];
                b->label_mask[dst * T + t] = (uint8_t)fx.mask[row * T + t];
            }
        }
}

static void gather(const float *all, const int *idx, int n, float *out)
{
    for (int i = 0; i < n; i++) {
        out[i] = all[idx[i]];
        out[n + i] = all[N_PAIRS + idx[i]];
    }
}

/* max |a - b| / max |b| over one PEFT tensor of the adapter. */
static double tensor_error(const LoraAdapter *a, const float *vec, const char *prefix, int layer,
                           LoraTarget t, char which)
{
    const LoraSlot *s = lora_slot(a, layer, t);
    size_t n = (size_t)a->spec.rank * (size_t)(which == 'A' ? s->in_features : s->out_features);
    const float *ours = vec + (which == 'A' ? s->a_offset : s->b_offset);
    char name[256];
    snprintf(name, sizeof name, "%sbase_model.model.model.layers.%d.%s.%s.lora_%c.weight", prefix,
             layer, lora_target_module(t), lora_target_name(t), which);
    float *want = malloc(n * sizeof *want);
    read_f32(name, want, n);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num = fmax(num, fabs((double)ours[i] - want[i]));
        den = fmax(den, fabs((double)want[i]));
    }
    free(want);
    return den > 0 ? num / den : num;
}

static double adapter_error(const LoraAdapter *a, const float *vec, const char *prefix)
{
    double worst = 0;
    for (int l = 0; l < a->n_layers; l++)
        for (int t = 0; t < LORA_N_TARGETS; t++)
            if (lora_slot(a, l, (LoraTarget)t)) {
                worst = fmax(worst, tensor_error(a, vec, prefix, l, (LoraTarget)t, 'A'));
                worst = fmax(worst, tensor_error(a, vec, prefix, l, (LoraTarget)t, 'B'));
            }
    return worst;
}

/* Loss of one objective on pairs 0..3 with the margin adapter as the policy;
 * gradients land in a->grads. */
static double objective(const char *which, BackendAdapter *h)
{
    Backend *b = fx.backend;
    Error err;
    int idx[4] = {0, 1, 2, 3};
    Batch batch;
    pair_batch(idx, 4, &batch);
    float logps[8], dlogps[8] = {0}, ref[8], mref[8], mar_c[4], mar_r[4];
    gather(fx.ref_logps, idx, 4, ref);
    gather(fx.margin_logps, idx, 4, mref);
    modpo_margin_rewards(-0.1, mref, ref, 4, mar_c);
    modpo_margin_rewards(-0.1, mref + 4, ref + 4, 4, mar_r);
    ck_assert_int_eq(b->ops->adapter_zero_grads(b, h, &err), 0);
    ck_assert_msg(backend_logps(b, h, &batch, logps, 1, &err) == 0 && backend_sync(b, &err) == 0, "%s", err.msg);
    double loss = 0;
    PrefMetrics m;
    PrefBatch pb = {4, logps, logps + 4, ref, ref + 4};
    PrefGrads g = {dlogps, dlogps + 4};
    if (strcmp(which, "sft") == 0) {
        int n_tok[4];
        for (int i = 0; i < 4; i++) n_tok[i] = batch_n_labels(&batch, i);
        ck_assert_int_eq(sft_loss(logps, n_tok, 4, 1.0, &loss, dlogps, &err), 0);
    } else if (strcmp(which, "dpo") == 0) {
        ck_assert_int_eq(dpo_loss(&pb, 0.1, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), 0);
        loss = m.loss;
    } else {
        ck_assert_int_eq(modpo_loss(&pb, mar_c, mar_r, 0.1, 0.4, PREF_LOSS_SIGMOID, 1.0, &m, &g, &err), 0);
        loss = m.loss;
    }
    ck_assert_msg(backend_backward(b, h, &batch, dlogps, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(b->ops->adapter_pull_grads(b, h, &err), 0);
    batch_free(&batch);
    return loss;
}

START_TEST(objectives_match_torch)
{
    const char *names[] = {"sft", "dpo", "modpo"};
    LoraAdapter a;
    BackendAdapter *h;
    Error err;
    ck_assert_msg(lora_peft_load(BACKEND_FIX "/adapter", &fx.model.config, &a, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fx.backend->ops->adapter_bind(fx.backend, &a, &h, &err), 0);
    for (int k = 0; k < 3; k++) {
        double loss = objective(names[k], h);
        char key[64], prefix[64];
        snprintf(key, sizeof key, "objective.%s.loss", names[k]);
        float want;
        read_f32(key, &want, 1);
        double rel = fabs(loss - want) / fabs((double)want);
        snprintf(prefix, sizeof prefix, "objective.%s.grad.", names[k]);
        double grad_err = adapter_error(&a, a.grads, prefix);
        printf("%-5s loss %.7f (torch %.7f, rel %.2e), LoRA grad rel error %.2e\n", names[k], loss, want,
               rel, grad_err);
        ck_assert_msg(rel < 1e-5, "%s loss rel error %g", names[k], rel);
        ck_assert_msg(grad_err < 1e-4, "%s gradient rel error %g", names[k], grad_err);
    }
    fx.backend->ops->adapter_unbind(fx.backend, h);
    lora_adapter_free(&a);
}
END_TEST

/* One optimizer step of the fixture's MODPO run; returns the mean loss. */
static double modpo_step(int step, const int64_t *order, BackendAdapter *h)
{
    Backend *b = fx.backend;
    Error err;
    double total = 0;
    ck_assert_int_eq(b->ops->adapter_zero_grads(b, h, &err), 0);
    for (int m = 0; m < ACCUM; m++) {
        int idx[BATCH];
        for (int i = 0; i < BATCH; i++) idx[i] = (int)order[(step * ACCUM + m) * BATCH + i];
        Batch batch;
        pair_batch(idx, BATCH, &batch);
        float logps[2 * BATCH], d[2 * BATCH], ref[2 * BATCH], mref[2 * BATCH], mc[BATCH], mr[BATCH];
        gather(fx.ref_logps, idx, BATCH, ref);
        gather(fx.margin_logps, idx, BATCH, mref);
        modpo_margin_rewards(-0.1, mref, ref, BATCH, mc);
        modpo_margin_rewards(-0.1, mref + BATCH, ref + BATCH, BATCH, mr);
        ck_assert(backend_logps(b, h, &batch, logps, 1, &err) == 0 && backend_sync(b, &err) == 0);
        PrefBatch pb = {BATCH, logps, logps + BATCH, ref, ref + BATCH};
        PrefGrads g = {d, d + BATCH};
        PrefMetrics met;
        ck_assert_int_eq(modpo_loss(&pb, mc, mr, 0.1, 0.4, PREF_LOSS_SIGMOID, 1.0 / ACCUM, &met, &g, &err), 0);
        ck_assert_msg(backend_backward(b, h, &batch, d, &err) == 0, "%s", err.msg);
        total += met.loss / ACCUM;
        batch_free(&batch);
    }
    ck_assert_int_eq(b->ops->adapter_pull_grads(b, h, &err), 0);
    return total;
}

START_TEST(ten_modpo_steps_match_torch)
{
    LoraAdapter a;
    BackendAdapter *h;
    Error err;
    ck_assert_msg(lora_peft_load(FIX "/adapter-init", &fx.model.config, &a, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(fx.backend->ops->adapter_bind(fx.backend, &a, &h, &err), 0);
    int64_t order[STEPS * ACCUM * BATCH];
    read_i64("order", order, STEPS * ACCUM * BATCH);
    float want_loss[STEPS], want_norm[STEPS], want_lr[STEPS];
    read_f32("step_loss", want_loss, STEPS);
    read_f32("step_grad_norm", want_norm, STEPS);
    read_f32("step_lr", want_lr, STEPS);
    AdamW opt;
    LrSchedule sched;
    ck_assert_int_eq(adamw_init(&opt, a.n_params, adamw_default_config(0.05), &err), 0);
    ck_assert_int_eq(lr_schedule_init(&sched, LR_COSINE, 5e-3, STEPS, 2, 0.0, &err), 0);
    double worst_loss = 0, worst_norm = 0;
    for (int step = 0; step < STEPS; step++) {
        double loss = modpo_step(step, order, h);
        double norm = grad_clip_norm(a.grads, a.n_params, 0.05);
        double lr = lr_schedule_lr(&sched, step);
        ck_assert_double_eq_tol(lr, want_lr[step], 1e-9);
        ck_assert_int_eq(adamw_step(&opt, a.params, a.grads, a.n_params, lr, &err), 0);
        ck_assert_int_eq(fx.backend->ops->adapter_push(fx.backend, h, &err), 0);
        worst_loss = fmax(worst_loss, fabs(loss - want_loss[step]) / fabs((double)want_loss[step]));
        worst_norm = fmax(worst_norm, fabs(norm - want_norm[step]) / fabs((double)want_norm[step]));
    }
    double w_err = adapter_error(&a, a.params, "final.");
    printf("10 MODPO steps: worst step-loss rel error %.2e, grad-norm rel error %.2e, final LoRA rel error %.2e\n",
           worst_loss, worst_norm, w_err);
    ck_assert_msg(worst_loss < 1e-5, "step loss rel error %g", worst_loss);
    ck_assert_msg(worst_norm < 1e-4, "grad norm rel error %g", worst_norm);
    ck_assert_msg(w_err < 1e-4, "final adapter rel error %g", w_err);
    adamw_free(&opt);
    fx.backend->ops->adapter_unbind(fx.backend, h);
    lora_adapter_free(&a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("training_parity");
    TCase *tc = tcase_create("training_parity");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, objectives_match_torch);
    tcase_add_test(tc, ten_modpo_steps_match_torch);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

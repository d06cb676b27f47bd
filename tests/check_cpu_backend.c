/* The CPU backend against PyTorch: tiny random Llamas and PEFT adapters
 * written by tests/gen_backend_fixtures.py (transformers, fp32, eager
 * attention), one folder per case in tests/fixtures/backend/.
 *
 * Errors are norm-relative, max|ours - torch| / max|torch| over a whole
 * tensor, so entries near zero do not dominate: logits and per-sequence
 * logps < 1e-5, every LoRA gradient tensor < 1e-4.  The decode path is held
 * to the full forward's logits at the same positions (< 1e-5). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "label_cuts.h"
#include "losses.h"
#include "lora_peft.h"
#include "model_io.h"
#include "safetensors.h"

#define FIXTURES "tests/fixtures/backend"

static const char *const cases[] = {"mha_untied", "gqa", "tied", "long_mqa"};
#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

typedef struct {
    double logits, logps, grads, decode;
} Worst;
static Worst worst; /* printed at the end (the suite runs CK_NOFORK) */

static void note(double *slot, double v) { *slot = v > *slot ? v : *slot; }

typedef struct {
    LlamaModel model;
    LoraAdapter adapter;
    Backend *be;
    BackendAdapter *ba;
    SafetensorsFile *ref;
    Batch batch;
    float *coef;
} Fixture;

static void ok(int rc, const Error *err)
{
    ck_assert_msg(rc == 0, "%s", err->msg);
}

/* Reads tensor `name` of the reference file as fp32 (malloc'd). */
static float *ref_f32(const Fixture *fx, const char *name, size_t *n)
{
    Error err;
    const SafetensorsTensor *t = safetensors_find(fx->ref, name);
    ck_assert_msg(t != NULL, "reference has no %s", name);
    float *v = malloc(t->n_elements * sizeof *v);
    ok(safetensors_tensor_to_f32(fx->ref, t, v, &err), &err);
    if (n) *n = t->n_elements;
    return v;
}

static int64_t *ref_i64(const Fixture *fx, const char *name)
{
    Error err;
    const SafetensorsTensor *t = safetensors_find(fx->ref, name);
    ck_assert_msg(t != NULL, "reference has no %s", name);
    int64_t *v = malloc(t->n_elements * sizeof *v);
    ok(safetensors_tensor_to_i64(fx->ref, t, v, &err), &err);
    return v;
}

/* max|a - b| / max|b| */
static double rel_err(const float *a, const float *b, size_t n)
{
    double num = 0.0, den = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        num = d > num ? d : num;
        den = fabs((double)b[i]) > den ? fabs((double)b[i]) : den;
    }
    return den > 0 ? num / den : num;
}

static void fixture_open(Fixture *fx, const char *name, int lm_head_chunk)
{
    Error err;
    char path[512];
    memset(fx, 0, sizeof *fx);
    snprintf(path, sizeof path, FIXTURES "/%s/model", name);
    ok(llama_model_load(path, &fx->model, &err), &err);
    snprintf(path, sizeof path, FIXTURES "/%s/adapter", name);
    ok(lora_peft_load(path, &fx->model.config, &fx->adapter, &err), &err);
    snprintf(path, sizeof path, FIXTURES "/%s/reference.safetensors", name);
    ok(safetensors_open(path, &fx->ref, &err), &err);

    CpuBackendOptions opts = {lm_head_chunk};
    ok(cpu_backend_create(&fx->model, &opts, &fx->be, &err), &err);
    ok(fx->be->ops->adapter_bind(fx->be, &fx->adapter, &fx->ba, &err), &err);

    const SafetensorsTensor *tt = safetensors_find(fx->ref, "tokens");
    ck_assert(tt != NULL && tt->ndim == 2);
    Batch *b = &fx->batch;
    memset(b, 0, sizeof *b);
    b->n_seq = (int)tt->shape[0];
    b->seq_len = (int)tt->shape[1];
    size_t n = (size_t)b->n_seq * b->seq_len;
    int64_t *tok = ref_i64(fx, "tokens"), *len = ref_i64(fx, "lengths"), *lab = ref_i64(fx, "label_mask");
    b->tokens = malloc(n * sizeof *b->tokens);
    b->label_mask = malloc(n);
    b->lengths = malloc((size_t)b->n_seq * sizeof *b->lengths);
    for (size_t i = 0; i < n; i++) {
        b->tokens[i] = (int32_t)tok[i];
        b->label_mask[i] = (uint8_t)lab[i];
    }
    for (int s = 0; s < b->n_seq; s++) b->lengths[s] = (int32_t)len[s];
    free(tok);
    free(len);
    free(lab);
    fx->coef = ref_f32(fx, "coef", NULL);
}

static void fixture_close(Fixture *fx)
{
    fx->be->ops->adapter_unbind(fx->be, fx->ba);
    backend_destroy(fx->be);
    safetensors_close(fx->ref);
    lora_adapter_free(&fx->adapter);
    llama_model_free(&fx->model);
    free(fx->batch.tokens);
    free(fx->batch.lengths);
    free(fx->batch.label_mask);
    free(fx->coef);
}

static float *full_logits(Fixture *fx, BackendAdapter *a)
{
    Error err;
    const Batch *b = &fx->batch;
    float *out = malloc((size_t)b->n_seq * b->seq_len * fx->model.config.vocab_size * sizeof *out);
    ok(fx->be->ops->debug_logits(fx->be, a, b, out, &err), &err);
    return out;
}

START_TEST(logits_match_torch)
{
    Fixture fx;
    fixture_open(&fx, cases[_i], 0);
    size_t n;
    float *want = ref_f32(&fx, "logits", &n);
    ck_assert_uint_eq(n, (size_t)fx.batch.n_seq * fx.batch.seq_len * fx.model.config.vocab_size);
    float *got = full_logits(&fx, fx.ba); /* padding rows are 0 in both */
    double e = rel_err(got, want, n);
    note(&worst.logits, e);
    ck_assert_msg(e < 1e-5, "%s: logits rel err %.3g", cases[_i], e);
    free(got);
    free(want);
    fixture_close(&fx);
}
END_TEST

static void check_logps(Fixture *fx, const char *name, BackendAdapter *a, const char *ref_name)
{
    Error err;
    float got[16];
    ck_assert_int_le(fx->batch.n_seq, 16);
    float *want = ref_f32(fx, ref_name, NULL);
    ok(backend_logps(fx->be, a, &fx->batch, got, 0, &err), &err);
    ok(backend_sync(fx->be, &err), &err);
    double e = rel_err(got, want, (size_t)fx->batch.n_seq);
    note(&worst.logps, e);
    ck_assert_msg(e < 1e-5, "%s: %s rel err %.3g", name, ref_name, e);
    free(want);
}

START_TEST(logps_match_torch)
{
    /* chunk 3: the fused head's chunks split sequences and end unevenly */
    for (int chunk = 0; chunk <= 3; chunk += 3) {
        Fixture fx;
        fixture_open(&fx, cases[_i], chunk);
        check_logps(&fx, cases[_i], fx.ba, "logps_adapter");
        check_logps(&fx, cases[_i], NULL, "logps_base");
        fixture_close(&fx);
    }
}
END_TEST

/* dL/d(A, B) for L = sum_s coef_s * logp_s, against PEFT's .grad. */
static void check_grads(Fixture *fx, const char *case_name, int times)
{
    const LoraAdapter *a = &fx->adapter;
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            if (!s) continue;
            for (int which = 0; which < 2; which++) {
                char name[256];
                snprintf(name, sizeof name, "grad.base_model.model.model.layers.%d.%s.%s.lora_%c.weight",
                         l, lora_target_module((LoraTarget)t), lora_target_name((LoraTarget)t),
                         which ? 'B' : 'A');
                size_t n;
                float *want = ref_f32(fx, name, &n);
                for (size_t i = 0; i < n; i++) want[i] *= (float)times;
                const float *got = a->grads + (which ? s->b_offset : s->a_offset);
                double e = rel_err(got, want, n);
                note(&worst.grads, e);
                ck_assert_msg(e < 1e-4, "%s: %s rel err %.3g", case_name, name, e);
                free(want);
            }
        }
    }
}

START_TEST(lora_grads_match_torch)
{
    Error err;
    Fixture fx;
    fixture_open(&fx, cases[_i], 0);
    float lp[16];
    ok(fx.be->ops->adapter_zero_grads(fx.be, fx.ba, &err), &err);
    ok(backend_logps(fx.be, fx.ba, &fx.batch, lp, 1, &err), &err);
    ok(backend_sync(fx.be, &err), &err);
    /* a reference forward in between must not disturb the kept one */
    float ref[16];
    ok(backend_logps(fx.be, NULL, &fx.batch, ref, 0, &err), &err);
    ok(backend_backward(fx.be, fx.ba, &fx.batch, fx.coef, &err), &err);
    ok(fx.be->ops->adapter_pull_grads(fx.be, fx.ba, &err), &err);
    check_grads(&fx, cases[_i], 1);

    /* a second micro-batch accumulates; a backward without a kept forward fails */
    ok(backend_logps(fx.be, fx.ba, &fx.batch, lp, 1, &err), &err);
    ok(backend_backward(fx.be, fx.ba, &fx.batch, fx.coef, &err), &err);
    ok(fx.be->ops->adapter_pull_grads(fx.be, fx.ba, &err), &err);
    check_grads(&fx, cases[_i], 2);
    ck_assert_int_eq(backend_backward(fx.be, fx.ba, &fx.batch, fx.coef, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "keep_for_backward"));
    fixture_close(&fx);
}
END_TEST

/* pref_backward forms dL/dlogp itself from the kept logps; it must give the
 * gradients of the host's own loss (dpo_loss / modpo_loss, which
 * check_losses holds to torch) pushed through backward, bit for bit. */
static void pref_grads(Fixture *fx, Batch *b, int on_backend, int is_modpo, PrefLossType type,
                       float *out)
{
    Error err;
    int n = b->n_seq / 2;
    float lp[16], ref[16], margin[16], d[16];
    ok(backend_logps(fx->be, NULL, b, ref, 0, &err), &err);
    ok(backend_sync(fx->be, &err), &err);
    /* beta small enough that every pair stays inside the losses' sensitive range */
    for (int i = 0; i < b->n_seq; i++) margin[i] = 0.25f * (float)(i + 1) - 0.6f;
    ok(fx->be->ops->adapter_zero_grads(fx->be, fx->ba, &err), &err);
    ok(backend_logps(fx->be, fx->ba, b, lp, 1, &err), &err);
    PrefLossSpec spec = {(size_t)n, ref, ref + n, is_modpo ? margin : NULL, is_modpo ? margin + n : NULL,
                         pref_reward_form(0.001, is_modpo, 0.4), type, 0.5};
    if (on_backend) {
        ok(backend_pref_backward(fx->be, fx->ba, b, &spec, &err), &err);
    } else {
        ok(backend_sync(fx->be, &err), &err);
        PrefBatch pb = {(size_t)n, lp, lp + n, ref, ref + n};
        PrefGrads g = {d, d + n};
        PrefMetrics m;
        if (is_modpo) ok(modpo_loss(&pb, margin, margin + n, 0.001, 0.4, type, 0.5, &m, &g, &err), &err);
        else ok(dpo_loss(&pb, 0.001, type, 0.5, &m, &g, &err), &err);
        ok(backend_backward(fx->be, fx->ba, b, d, &err), &err);
    }
    ok(fx->be->ops->adapter_pull_grads(fx->be, fx->ba, &err), &err);
    memcpy(out, fx->adapter.grads, fx->adapter.n_params * sizeof *out);
}

START_TEST(pref_backward_matches_host_loss)
{
    Fixture fx;
    fixture_open(&fx, cases[_i], 0);
    Batch b = fx.batch;
    b.n_seq -= b.n_seq % 2; /* whole pairs: the first half chosen, the rest rejected */
    ck_assert_int_ge(b.n_seq, 2);
    size_t np = fx.adapter.n_params;
    float *host = malloc(np * sizeof *host), *dev = malloc(np * sizeof *dev);
    for (int variant = 0; variant < 2; variant++) {
        int is_modpo = variant == 0;
        PrefLossType type = is_modpo ? PREF_LOSS_SIGMOID : PREF_LOSS_HINGE;
        pref_grads(&fx, &b, 0, is_modpo, type, host);
        pref_grads(&fx, &b, 1, is_modpo, type, dev);
        double norm = 0;
        for (size_t i = 0; i < np; i++) norm += (double)host[i] * host[i];
        ck_assert_msg(norm > 0, "%s: the loss gave no gradient to compare", cases[_i]);
        ck_assert_msg(memcmp(host, dev, np * sizeof *host) == 0, "%s %s: pref_backward's gradients differ",
                      cases[_i], is_modpo ? "modpo" : "dpo hinge");
    }
    /* a batch that is not whole pairs, and no kept forward, are errors */
    Error err;
    float lp[16], ref[16] = {0};
    PrefLossSpec spec = {(size_t)b.n_seq, ref, ref, NULL, NULL, pref_reward_form(0.1, 0, 1), PREF_LOSS_SIGMOID, 1};
    ok(backend_logps(fx.be, fx.ba, &b, lp, 1, &err), &err);
    ck_assert_int_eq(backend_pref_backward(fx.be, fx.ba, &b, &spec, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "pairs need"));
    spec.n_pairs = (size_t)b.n_seq / 2;
    ok(backend_pref_backward(fx.be, fx.ba, &b, &spec, &err), &err);
    ck_assert_int_eq(backend_pref_backward(fx.be, fx.ba, &b, &spec, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "keep_for_backward"));
    free(host);
    free(dev);
    fixture_close(&fx);
}
END_TEST

/* Two prompts of different lengths: prefill, then feed each sequence's own
 * next tokens one step at a time (the shorter one stops early); every step's
 * logits must equal the full forward's at that position. */
START_TEST(decode_matches_full_forward)
{
    Error err;
    Fixture fx;
    fixture_open(&fx, cases[_i], 0);
    const Batch *b = &fx.batch;
    int v = fx.model.config.vocab_size, T = b->seq_len;
    float *full = full_logits(&fx, fx.ba);
    int32_t prompt_len[2] = {3, 2};
    KvCache *kv;
    ok(fx.be->ops->kv_create(fx.be, 2, T, &kv, &err), &err);
    float *step = malloc(2 * (size_t)v * sizeof *step);
    ok(fx.be->ops->prefill(fx.be, kv, fx.ba, b->tokens, prompt_len, T, step, &err), &err);
    for (;;) {
        int32_t next[2] = {0, 0};
        uint8_t active[2] = {0, 0};
        for (int s = 0; s < 2; s++) {
            int pos = kv->len[s] - 1; /* the logits just produced score position pos + 1 */
            double e = rel_err(step + (size_t)s * v, full + ((size_t)s * T + pos) * v, (size_t)v);
            note(&worst.decode, e);
            ck_assert_msg(e < 1e-5, "%s: slot %d position %d rel err %.3g", cases[_i], s, pos, e);
            if (kv->len[s] < b->lengths[s]) {
                active[s] = 1;
                next[s] = b->tokens[(size_t)s * T + kv->len[s]];
            }
        }
        if (!active[0] && !active[1]) break;
        ok(fx.be->ops->decode_step(fx.be, kv, fx.ba, next, active, step, &err), &err);
    }
    ck_assert_int_eq(kv->len[0], b->lengths[0]);
    ck_assert_int_eq(kv->len[1], b->lengths[1]);
    fx.be->ops->kv_free(fx.be, kv);
    free(step);
    free(full);
    fixture_close(&fx);
}
END_TEST

/* Batch.sum_start: one forward, several sums per sequence.  Each sequence
 * is cut in the middle of its labels: its two sums add up to PyTorch's
 * logp, and the second equals the ordinary logps of the batch labelled
 * from the cut on.  A cut where nothing is labelled, or in a kept pass, is
 * an error. */
START_TEST(label_sums_split_sequences)
{
    Error err;
    Fixture fx;
    fixture_open(&fx, cases[_i], 0);
    Batch *b = &fx.batch;
    int n = b->n_seq, T = b->seq_len;
    ck_assert_int_le(n, 16);
    float *want = ref_f32(&fx, "logps_adapter", NULL);
    uint8_t *mask = malloc((size_t)n * T), *tail_mask = calloc((size_t)n * T, 1);
    memcpy(mask, b->label_mask, (size_t)n * T);
    int cut[16], marks = label_cuts_mid(b, cut, tail_mask);
    ck_assert_int_gt(marks, 0);
    ck_assert_int_eq(batch_n_sums(b), n + marks);
    float sums[32], tail[16], lp[16];
    ok(backend_logps(fx.be, fx.ba, b, sums, 0, &err), &err);
    ok(backend_sync(fx.be, &err), &err);
    ck_assert_int_eq(backend_logps(fx.be, fx.ba, b, lp, 1, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "cannot be kept"));
    uint8_t *cuts = b->sum_start;
    b->sum_start = NULL;
    memcpy(b->label_mask, tail_mask, (size_t)n * T);
    ok(backend_logps(fx.be, fx.ba, b, tail, 0, &err), &err);
    ok(backend_sync(fx.be, &err), &err);
    for (int s = 0, o = 0; s < n; s++) {
        double whole = sums[o] + (cut[s] >= 0 ? sums[o + 1] : 0.0);
        ck_assert_msg(fabs(whole - want[s]) <= 1e-5 * fabs(want[s]), "seq %d: %.7g + %.7g != torch %.7g",
                      s, sums[o], cut[s] >= 0 ? sums[o + 1] : 0.0f, want[s]);
        if (cut[s] >= 0)
            ck_assert_msg(fabsf(sums[o + 1] - tail[s]) <= 1e-6f * fabsf(tail[s]),
                          "seq %d: second sum %.7g != logp from the cut %.7g", s, sums[o + 1], tail[s]);
        o += cut[s] >= 0 ? 2 : 1;
    }
    memcpy(b->label_mask, mask, (size_t)n * T);
    b->sum_start = cuts;
    int s0 = 0;
    while (cut[s0] < 0) s0++;
    b->sum_start[(size_t)s0 * T + cut[s0]] = 0;
    b->sum_start[(size_t)s0 * T] = 1; /* position 0 carries no label */
    ck_assert_int_eq(backend_logps(fx.be, fx.ba, b, sums, 0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "has no label"));
    free(b->sum_start);
    b->sum_start = NULL;
    free(mask);
    free(tail_mask);
    free(want);
    fixture_close(&fx);
}
END_TEST

START_TEST(bad_batches_are_errors)
{
    Error err;
    Fixture fx;
    fixture_open(&fx, cases[0], 0);
    float lp[16];
    Batch *b = &fx.batch;
    int32_t saved = b->tokens[1];
    b->tokens[1] = fx.model.config.vocab_size;
    ck_assert_int_eq(backend_logps(fx.be, fx.ba, b, lp, 0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "vocabulary"));
    b->tokens[1] = saved;
    b->label_mask[0] = 1; /* nothing scores position 0 */
    ck_assert_int_eq(backend_logps(fx.be, fx.ba, b, lp, 0, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "label at position 0"));
    b->label_mask[0] = 0;
    ck_assert_int_eq(backend_backward(fx.be, NULL, b, fx.coef, &err), -1);
    fixture_close(&fx);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("cpu_backend");
    TCase *tc = tcase_create("parity");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, logits_match_torch, 0, N_CASES);
    tcase_add_loop_test(tc, logps_match_torch, 0, N_CASES);
    tcase_add_loop_test(tc, lora_grads_match_torch, 0, N_CASES);
    tcase_add_loop_test(tc, pref_backward_matches_host_loss, 0, N_CASES);
    tcase_add_loop_test(tc, decode_matches_full_forward, 0, N_CASES);
    tcase_add_loop_test(tc, label_sums_split_sequences, 0, N_CASES);
    tcase_add_test(tc, bad_batches_are_errors);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_set_fork_status(sr, CK_NOFORK); /* keeps the worst-error tallies in this process */
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    printf("  worst norm-relative error vs torch: logits %.2e, logps %.2e, LoRA grads %.2e; "
           "decode vs full forward %.2e\n", worst.logits, worst.logps, worst.grads, worst.decode);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

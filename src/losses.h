/* The training objectives as scalar functions of per-sequence completion
 * log-probs (DESIGN.md §2): each returns the loss, dL/dlogp for every policy
 * input (the backend pushes those into the LoRA weights) and the metrics the
 * seed logs, under the seed's (TRL-style) names.
 *
 * Inputs are the backend's fp32 logps; everything is computed in double and
 * the gradients are rounded to fp32 once at the end.
 *
 * Gradient accumulation convention (the seed's, i.e. HF Trainer's): each
 * micro-batch's loss is its own mean (token mean for SFT, pair mean for
 * DPO/MODPO) and is divided by the number of micro-batches per optimizer
 * step.  So call every loss with grad_scale = 1.0 / grad_accum, let the
 * backend *add* each micro-batch's LoRA gradients into LoraAdapter.grads, and
 * zero them after the optimizer step.  grad_scale multiplies the gradients
 * only; the returned loss and metrics are the micro-batch's unscaled means
 * (the seed logs the average of those over the micro-batches).  The seed
 * pins transformers 4.34; newer Trainers normalise SFT by the tokens of the
 * whole accumulation step instead -- that is grad_scale = this micro-batch's
 * tokens / the step's tokens, if ever wanted. */
#ifndef MODPO_LOSSES_H
#define MODPO_LOSSES_H

#include <stddef.h>

#include "error.h"
#include "pref_loss_math.h"

typedef enum { PREF_LOSS_SIGMOID, PREF_LOSS_HINGE } PrefLossType;

/* "sigmoid" | "hinge"; -1 for anything else. */
int pref_loss_type_from_name(const char *name);
const char *pref_loss_type_name(PrefLossType t);

/* SFT: token-mean NLL over the completion tokens of one micro-batch,
 *   loss = -(sum_s logps[s]) / (sum_s n_tokens[s]),
 * which is Hugging Face's CrossEntropyLoss(ignore_index=-100) mean for that
 * batch.  dlogps[s] = -grad_scale / sum_s n_tokens[s] (dlogps may be NULL). */
int sft_loss(const float *logps, const int *n_tokens, size_t n_seq, double grad_scale,
             double *loss, float *dlogps, Error *err);
/* sft_loss's dlogps alone: they do not depend on the logps, so a step can
 * queue the backward before the logps reach the host. */
int sft_dlogps(const int *n_tokens, size_t n_seq, double grad_scale, float *dlogps, Error *err);

/* A batch of preference pairs.  The reference logps (and MODPO's margin
 * rewards) are constants: no gradient flows into them. */
typedef struct {
    size_t n_pairs;
    const float *policy_chosen;   /* [n_pairs] logp_pi(chosen) */
    const float *policy_rejected; /* [n_pairs] */
    const float *ref_chosen;      /* [n_pairs] logp_ref(chosen) */
    const float *ref_rejected;    /* [n_pairs] */
} PrefBatch;

/* dL/dlogp_pi for each policy input, already multiplied by grad_scale. */
typedef struct {
    float *d_chosen;   /* [n_pairs] */
    float *d_rejected; /* [n_pairs] */
} PrefGrads;

/* Batch means, as the seed's DPO/MODPO trainers log them.  "rewards" are the
 * rewards whose difference is the loss's logit: beta*(pi - ref) for DPO,
 * MODPO's R(y) for MODPO (the seed logs R(y) there, not beta*(pi - ref);
 * the implicit_* fields carry beta*(pi - ref) for MODPO). */
typedef struct {
    double loss;
    double rewards_chosen, rewards_rejected, rewards_margins;
    double accuracy; /* fraction of pairs with reward(chosen) > reward(rejected) */
    double logps_chosen, logps_rejected, logps_margins;
    /* MODPO only (0 for DPO): */
    double margin_raw_mean, margin_raw_std; /* over all 2B margin rewards; std unbiased like torch.std */
    double margin_chosen, margin_rejected;  /* mean r_margin of chosen / rejected */
    double implicit_chosen, implicit_rejected, implicit_margins; /* beta*(pi - ref) */
} PrefMetrics;

/* DPO: z = beta*((pi_c - ref_c) - (pi_r - ref_r)); loss = mean -log sigmoid(z)
 * (evaluated stably as softplus(-z)) or mean relu(1 - z). */
int dpo_loss(const PrefBatch *b, double beta, PrefLossType type, double grad_scale,
             PrefMetrics *m, PrefGrads *g, Error *err);

/* MODPO with weights (w, 1 - w), 0 < w <= 1 (DESIGN.md §1):
 *   R(y) = (1/w) * (beta*(logp_pi(y) - logp_ref(y)) - (1 - w)*r_margin(y))
 *   loss = mean -log sigmoid(R(c) - R(r))   (hinge: mean relu(1 - (R(c) - R(r)))).
 * margin_chosen/rejected are the precomputed r_margin values. */
int modpo_loss(const PrefBatch *b, const float *margin_chosen, const float *margin_rejected,
               double beta, double w, PrefLossType type, double grad_scale,
               PrefMetrics *m, PrefGrads *g, Error *err);

/* The reward form of DPO (is_modpo 0; w unused) or of MODPO with weight w. */
PrefRewardForm pref_reward_form(double beta, int is_modpo, double w);

/* A preference loss handed to a backend whole (BackendOps.pref_backward), so
 * dL/dlogp is formed where the logps are: the pair constants of one
 * micro-batch (host memory, read before the call returns) and the loss's
 * parameters.  The policy batch holds the n_pairs chosen sequences, then the
 * n_pairs rejected ones. */
typedef struct {
    size_t n_pairs;
    const float *ref_chosen, *ref_rejected;       /* [n_pairs] */
    const float *margin_chosen, *margin_rejected; /* [n_pairs], NULL for DPO */
    PrefRewardForm form;
    PrefLossType type;
    double grad_scale;
} PrefLossSpec;

/* dL/dlogp of `loss` for the policy logps [chosen n_pairs | rejected n_pairs]
 * into dlogps (same layout): what pref_backward forms on a backend.  The
 * logps are not checked (dpo_loss / modpo_loss do that). */
void pref_loss_dlogps(const PrefLossSpec *loss, const float *logps, float *dlogps);

/* r_margin(y) = margin_beta * (logp_adapter(y) - logp_sft(y)) for n sequences:
 * the margin adapter's implicit reward, computed once before MODPO. */
void modpo_margin_rewards(double margin_beta, const float *logp_adapter, const float *logp_sft,
                          size_t n, float *out);

/* The metrics as (name, value) pairs under the seed's log keys
 * ("rewards/chosen", ..., "accuracy", "logps/margins"; MODPO adds
 * "rewards/margins_raw_mean", "rewards/margins_raw_std" and the extra
 * "margin_rewards/..." and "implicit_rewards/..." keys).  Excludes "loss".
 * Fills at most PREF_METRICS_MAX entries and returns how many. */
#define PREF_METRICS_MAX 16
typedef struct {
    const char *name;
    double value;
} Metric;
size_t pref_metrics_list(const PrefMetrics *m, int is_modpo, Metric out[PREF_METRICS_MAX]);

#endif

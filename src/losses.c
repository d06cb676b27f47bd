#include "losses.h"

#include <math.h>
#include <string.h>

int pref_loss_type_from_name(const char *name)
{
    if (strcmp(name, "sigmoid") == 0) return PREF_LOSS_SIGMOID;
    if (strcmp(name, "hinge") == 0) return PREF_LOSS_HINGE;
    return -1;
}

const char *pref_loss_type_name(PrefLossType t)
{
    return t == PREF_LOSS_HINGE ? "hinge" : "sigmoid";
}

/* A NaN or infinite logp means the backend or the data went wrong; training
 * on it would silently poison the adapter, so it is an error naming the input. */
static int check_finite(const float *x, size_t n, const char *what, Error *err)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return error_set(err, "%s[%zu] is not finite (%g)", what, i, (double)x[i]);
    return 0;
}

int sft_loss(const float *logps, const int *n_tokens, size_t n_seq, double grad_scale,
             double *loss, float *dlogps, Error *err)
{
    if (n_seq == 0) return error_set(err, "SFT loss of an empty batch");
    if (check_finite(logps, n_seq, "SFT logps", err)) return -1;
    double sum = 0.0;
    long long tokens = 0;
    for (size_t s = 0; s < n_seq; s++) {
        if (n_tokens[s] < 0) return error_set(err, "SFT n_tokens[%zu] is negative (%d)", s, n_tokens[s]);
        sum += logps[s];
        tokens += n_tokens[s];
    }
    /* HF's mean over zero labels is NaN; the data stage drops such rows, so
     * reaching here means a bug upstream. */
    if (tokens == 0) return error_set(err, "SFT batch has no completion tokens");
    *loss = -sum / (double)tokens;
    return dlogps ? sft_dlogps(n_tokens, n_seq, grad_scale, dlogps, err) : 0;
}

int sft_dlogps(const int *n_tokens, size_t n_seq, double grad_scale, float *dlogps, Error *err)
{
    long long tokens = 0;
    for (size_t s = 0; s < n_seq; s++) {
        if (n_tokens[s] < 0) return error_set(err, "SFT n_tokens[%zu] is negative (%d)", s, n_tokens[s]);
        tokens += n_tokens[s];
    }
    if (tokens == 0) return error_set(err, "SFT batch has no completion tokens");
    float d = (float)(-grad_scale / (double)tokens);
    for (size_t s = 0; s < n_seq; s++) dlogps[s] = d;
    return 0;
}

static int check_batch(const PrefBatch *b, Error *err)
{
    if (b->n_pairs == 0) return error_set(err, "preference loss of an empty batch");
    size_t n = b->n_pairs;
    if (check_finite(b->policy_chosen, n, "policy chosen logps", err)) return -1;
    if (check_finite(b->policy_rejected, n, "policy rejected logps", err)) return -1;
    if (check_finite(b->ref_chosen, n, "reference chosen logps", err)) return -1;
    return check_finite(b->ref_rejected, n, "reference rejected logps", err);
}

/* The shared core of DPO and MODPO: with per-pair rewards R(y) of `f`
 * (pref_loss_math.h), z = R(c) - R(r) and dz/dpi_c = -dz/dpi_r = scale*beta.
 * shift_chosen/rejected: MODPO's margin rewards, NULL for DPO. */
static void pref_core(const PrefBatch *b, const PrefRewardForm *f, const float *shift_chosen,
                      const float *shift_rejected, PrefLossType type, double grad_scale,
                      PrefMetrics *m, PrefGrads *g)
{
    size_t n = b->n_pairs;
    double dz_dpi = pref_dz_dpi(f, grad_scale, (double)n);
    int hinge = type == PREF_LOSS_HINGE;
    memset(m, 0, sizeof *m);
    for (size_t i = 0; i < n; i++) {
        double pc = b->policy_chosen[i], pr = b->policy_rejected[i];
        double sc = shift_chosen ? shift_chosen[i] : 0.0, sr = shift_rejected ? shift_rejected[i] : 0.0;
        double rc = pref_reward(f, pc, b->ref_chosen[i], sc);
        double rr = pref_reward(f, pr, b->ref_rejected[i], sr);
        m->loss += pref_pair_grads(f, hinge, dz_dpi, pc, pr, b->ref_chosen[i], b->ref_rejected[i], sc,
                                   sr, &g->d_chosen[i], &g->d_rejected[i]);
        m->rewards_chosen += rc;
        m->rewards_rejected += rr;
        m->rewards_margins += rc - rr;
        m->accuracy += rc > rr ? 1.0 : 0.0;
        m->logps_chosen += pc;
        m->logps_rejected += pr;
        m->logps_margins += pc - pr;
        m->implicit_chosen += f->beta * (pc - b->ref_chosen[i]);
        m->implicit_rejected += f->beta * (pr - b->ref_rejected[i]);
    }
    double inv = 1.0 / (double)n;
    m->loss *= inv;
    m->rewards_chosen *= inv;
    m->rewards_rejected *= inv;
    m->rewards_margins *= inv;
    m->accuracy *= inv;
    m->logps_chosen *= inv;
    m->logps_rejected *= inv;
    m->logps_margins *= inv;
    m->implicit_chosen *= inv;
    m->implicit_rejected *= inv;
    m->implicit_margins = m->implicit_chosen - m->implicit_rejected;
}

int dpo_loss(const PrefBatch *b, double beta, PrefLossType type, double grad_scale,
             PrefMetrics *m, PrefGrads *g, Error *err)
{
    if (check_batch(b, err)) return error_prefix(err, "DPO: ");
    PrefRewardForm f = pref_reward_form(beta, 0, 1.0);
    pref_core(b, &f, NULL, NULL, type, grad_scale, m, g);
    /* For DPO the implicit rewards are the rewards; no margin part. */
    m->implicit_chosen = m->implicit_rejected = m->implicit_margins = 0.0;
    return 0;
}

/* Mean and unbiased std (torch.std's default) of the 2n margin rewards. */
static void margin_stats(const float *mc, const float *mr, size_t n, PrefMetrics *m)
{
    double sum_c = 0.0, sum_r = 0.0;
    for (size_t i = 0; i < n; i++) {
        sum_c += mc[i];
        sum_r += mr[i];
    }
    double mean = (sum_c + sum_r) / (double)(2 * n);
    double ss = 0.0;
    for (size_t i = 0; i < n; i++)
        ss += (mc[i] - mean) * (mc[i] - mean) + (mr[i] - mean) * (mr[i] - mean);
    m->margin_chosen = sum_c / (double)n;
    m->margin_rejected = sum_r / (double)n;
    m->margin_raw_mean = mean;
    m->margin_raw_std = sqrt(ss / (double)(2 * n - 1));
}

int modpo_loss(const PrefBatch *b, const float *margin_chosen, const float *margin_rejected,
               double beta, double w, PrefLossType type, double grad_scale,
               PrefMetrics *m, PrefGrads *g, Error *err)
{
    if (!(w > 0.0 && w <= 1.0)) return error_set(err, "MODPO: w must be in (0, 1], got %g", w);
    if (check_batch(b, err)) return error_prefix(err, "MODPO: ");
    if (check_finite(margin_chosen, b->n_pairs, "margin rewards (chosen)", err) ||
        check_finite(margin_rejected, b->n_pairs, "margin rewards (rejected)", err))
        return error_prefix(err, "MODPO: ");
    PrefRewardForm f = pref_reward_form(beta, 1, w);
    pref_core(b, &f, margin_chosen, margin_rejected, type, grad_scale, m, g);
    margin_stats(margin_chosen, margin_rejected, b->n_pairs, m);
    return 0;
}

void modpo_margin_rewards(double margin_beta, const float *logp_adapter, const float *logp_sft,
                          size_t n, float *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (float)(margin_beta * ((double)logp_adapter[i] - (double)logp_sft[i]));
}

void pref_loss_dlogps(const PrefLossSpec *loss, const float *logps, float *dlogps)
{
    size_t n = loss->n_pairs;
    double dz_dpi = pref_dz_dpi(&loss->form, loss->grad_scale, (double)n);
    for (size_t i = 0; i < n; i++) {
        double sc = loss->margin_chosen ? loss->margin_chosen[i] : 0.0;
        double sr = loss->margin_rejected ? loss->margin_rejected[i] : 0.0;
        pref_pair_grads(&loss->form, loss->type == PREF_LOSS_HINGE, dz_dpi, logps[i], logps[n + i],
                        loss->ref_chosen[i], loss->ref_rejected[i], sc, sr, &dlogps[i], &dlogps[n + i]);
    }
}

PrefRewardForm pref_reward_form(double beta, int is_modpo, double w)
{
    if (!is_modpo) return (PrefRewardForm){beta, 1.0, 0.0};
    return (PrefRewardForm){beta, 1.0 / w, 1.0 - w};
}

size_t pref_metrics_list(const PrefMetrics *m, int is_modpo, Metric out[PREF_METRICS_MAX])
{
    size_t k = 0;
    out[k++] = (Metric){ "rewards/chosen", m->rewards_chosen };
    out[k++] = (Metric){ "rewards/rejected", m->rewards_rejected };
    out[k++] = (Metric){ "rewards/margins", m->rewards_margins };
    out[k++] = (Metric){ "accuracy", m->accuracy };
    out[k++] = (Metric){ "logps/chosen", m->logps_chosen };
    out[k++] = (Metric){ "logps/rejected", m->logps_rejected };
    out[k++] = (Metric){ "logps/margins", m->logps_margins };
    if (!is_modpo) return k;
    out[k++] = (Metric){ "rewards/margins_raw_mean", m->margin_raw_mean };
    out[k++] = (Metric){ "rewards/margins_raw_std", m->margin_raw_std };
    out[k++] = (Metric){ "margin_rewards/chosen", m->margin_chosen };
    out[k++] = (Metric){ "margin_rewards/rejected", m->margin_rejected };
    out[k++] = (Metric){ "implicit_rewards/chosen", m->implicit_chosen };
    out[k++] = (Metric){ "implicit_rewards/rejected", m->implicit_rejected };
    out[k++] = (Metric){ "implicit_rewards/margins", m->implicit_margins };
    return k;
}

#include "sampling.h"

#include <math.h>
#include <stdlib.h>

struct SamplingPair {
    float logit;
    int32_t id;
};

void sampling_params_default(SamplingParams *p)
{
    p->do_sample = false;
    p->temperature = 1.0;
    p->top_k = 50;
    p->top_p = 1.0;
    p->repetition_penalty = 1.0;
    p->no_repeat_ngram_size = 0;
}

int sampling_params_check(const SamplingParams *p, Error *err)
{
    if (!(p->temperature > 0))
        return error_set(err, "temperature must be > 0 (use greedy decoding instead of 0), got %g",
                         p->temperature);
    if (p->top_k < 0) return error_set(err, "top_k must be >= 0 (0: off), got %d", p->top_k);
    if (!(p->top_p >= 0 && p->top_p <= 1))
        return error_set(err, "top_p must be in [0, 1], got %g", p->top_p);
    if (!(p->repetition_penalty > 0))
        return error_set(err, "repetition_penalty must be > 0 (1: off), got %g", p->repetition_penalty);
    if (p->no_repeat_ngram_size < 0)
        return error_set(err, "no_repeat_ngram_size must be >= 0 (0: off), got %d",
                         p->no_repeat_ngram_size);
    return 0;
}

int sampling_scratch_init(SamplingScratch *s, int vocab, Error *err)
{
    s->vocab = vocab;
    if (vocab <= 0) {
        s->seen = NULL, s->heap = NULL, s->pairs = NULL;
        return error_set(err, "sampling over an empty vocabulary (%d)", vocab);
    }
    s->seen = calloc((size_t)vocab, 1);
    s->heap = malloc((size_t)vocab * sizeof *s->heap);
    s->pairs = malloc((size_t)vocab * sizeof *s->pairs);
    if (!s->seen || !s->heap || !s->pairs) {
        sampling_scratch_free(s);
        return error_set(err, "out of memory for sampling scratch (vocab %d)", vocab);
    }
    return 0;
}

void sampling_scratch_free(SamplingScratch *s)
{
    free(s->seen);
    free(s->heap);
    free(s->pairs);
    s->seen = NULL, s->heap = NULL, s->pairs = NULL;
}

/* ---- processors ---------------------------------------------------------- */

void logits_repetition_penalty(float *logits, int vocab, const int32_t *context,
                               size_t n_context, float penalty, unsigned char *seen)
{
    /* Each distinct id is penalised once however often it occurs (HF gathers
     * the original score for every occurrence); seen marks the ids done and
     * is cleared again from the context, so the cost is O(n_context), not
     * O(vocab). */
    for (size_t i = 0; i < n_context; i++) {
        int32_t t = context[i];
        if (t < 0 || t >= vocab || seen[t]) continue;
        seen[t] = 1;
        float v = logits[t];
        logits[t] = v < 0 ? v * penalty : v / penalty;
    }
    for (size_t i = 0; i < n_context; i++) {
        int32_t t = context[i];
        if (t >= 0 && t < vocab) seen[t] = 0;
    }
}

/* Whether context[start .. start+len) equals the last len tokens. */
static bool matches_suffix(const int32_t *context, size_t n_context, size_t start, size_t len)
{
    const int32_t *suffix = context + n_context - len;
    for (size_t j = 0; j < len; j++)
        if (context[start + j] != suffix[j]) return false;
    return true;
}

void logits_no_repeat_ngram(float *logits, int vocab, const int32_t *context,
                            size_t n_context, int ngram_size)
{
    if (ngram_size <= 0 || n_context < (size_t)ngram_size) return;
    /* Every n-gram window whose first n-1 tokens equal the sequence's last
     * n-1 tokens bans its own last token.  The windows end at the sequence's
     * end, so the current suffix never bans its own (unknown) successor. */
    size_t n = (size_t)ngram_size;
    for (size_t start = 0; start + n <= n_context; start++) {
        int32_t banned = context[start + n - 1];
        if (banned < 0 || banned >= vocab) continue;
        if (matches_suffix(context, n_context, start, n - 1)) logits[banned] = -INFINITY;
    }
}

void logits_temperature(float *logits, int vocab, float temperature)
{
    for (int i = 0; i < vocab; i++) logits[i] /= temperature;
}

static void heap_sift_down(float *heap, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && heap[l] < heap[m]) m = l;
        if (r < n && heap[r] < heap[m]) m = r;
        if (m == i) return;
        float tmp = heap[i];
        heap[i] = heap[m];
        heap[m] = tmp;
        i = m;
    }
}

/* The k-th largest value (with repeats), by a size-k min-heap: O(vocab log k). */
static float kth_largest(const float *x, int n, int k, float *heap)
{
    for (int i = 0; i < k; i++) heap[i] = x[i];
    for (int i = k / 2 - 1; i >= 0; i--) heap_sift_down(heap, k, i);
    for (int i = k; i < n; i++) {
        if (x[i] > heap[0]) {
            heap[0] = x[i];
            heap_sift_down(heap, k, 0);
        }
    }
    return heap[0];
}

void logits_top_k(float *logits, int vocab, int top_k, float *heap)
{
    /* HF keeps every score >= the k-th largest, so ties at the boundary all
     * survive and more than k tokens may remain. */
    if (top_k <= 0 || top_k >= vocab) return;
    float kth = kth_largest(logits, vocab, top_k, heap);
    for (int i = 0; i < vocab; i++)
        if (logits[i] < kth) logits[i] = -INFINITY;
}

static int pair_ascending(const void *a, const void *b)
{
    const SamplingPair *x = a, *y = b;
    if (x->logit < y->logit) return -1;
    if (x->logit > y->logit) return 1;
    return (x->id > y->id) - (x->id < y->id);
}

void logits_top_p(float *logits, int vocab, double top_p, SamplingPair *pairs)
{
    /* Tokens already at -inf have probability 0 and would be removed anyway,
     * so only the finite ones are sorted (after top-k that is a handful). */
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (logits[i] > -INFINITY) pairs[n].logit = logits[i], pairs[n].id = i, n++;
    if (n == 0) return;
    qsort(pairs, (size_t)n, sizeof *pairs, pair_ascending);
    double max = pairs[n - 1].logit, sum = 0;
    for (int i = 0; i < n; i++) sum += exp((double)pairs[i].logit - max);
    /* Remove from the least likely up while the cumulative probability stays
     * <= 1 - top_p; the most likely token is always kept. */
    double threshold = 1.0 - top_p, cum = 0;
    for (int i = 0; i < n - 1; i++) {
        cum += exp((double)pairs[i].logit - max) / sum;
        if (cum > threshold) break;
        logits[pairs[i].id] = -INFINITY;
    }
}

/* ---- choice -------------------------------------------------------------- */

/* Independent running maxima the compiler keeps in vector registers. */
#define ARGMAX_LANES 16

/* The largest value, then its first index: two passes that vectorise.  The
 * one-pass chain (each comparison waiting on the last) took 114 us for a
 * 32k vocabulary, this 6 us -- at batch 1 a GPU decode step is ~6 ms, and
 * the host chooses between steps (bench/NOTES-gpu.md step 18). */
int32_t sampling_argmax(const float *logits, int vocab)
{
    float lane_max[ARGMAX_LANES];
    for (int k = 0; k < ARGMAX_LANES; k++) lane_max[k] = -INFINITY;
    int i = 0;
    for (; i + ARGMAX_LANES <= vocab; i += ARGMAX_LANES)
        for (int k = 0; k < ARGMAX_LANES; k++)
            lane_max[k] = logits[i + k] > lane_max[k] ? logits[i + k] : lane_max[k];
    float max = -INFINITY;
    for (int k = 0; k < ARGMAX_LANES; k++) max = lane_max[k] > max ? lane_max[k] : max;
    for (; i < vocab; i++) max = logits[i] > max ? logits[i] : max;
    for (int j = 0; j < vocab; j++)
        if (logits[j] == max) return j; /* the first, as torch.argmax */
    return 0;
}

int32_t sampling_multinomial(const float *logits, int vocab, Rng *rng)
{
    int32_t top = sampling_argmax(logits, vocab);
    float max = logits[top];
    if (!(max > -INFINITY)) return -1;
    /* Weights are exp in float like torch's float32 softmax (so a token whose
     * probability underflows to 0 there is never drawn here either); the
     * running sum is double.  Inverse CDF in id order. */
    double sum = 0;
    for (int i = 0; i < vocab; i++) sum += expf(logits[i] - max);
    double target = rng_uniform(rng) * sum, acc = 0;
    int32_t last_positive = top;
    for (int i = 0; i < vocab; i++) {
        float w = expf(logits[i] - max);
        if (w <= 0) continue;
        acc += w;
        last_positive = i;
        if (acc > target) return i;
    }
    return last_positive; /* target rounded up to the full sum */
}

void sampling_process(const SamplingParams *p, float *logits, int vocab,
                      const int32_t *context, size_t n_context, SamplingScratch *scratch)
{
    if (p->repetition_penalty != 1.0)
        logits_repetition_penalty(logits, vocab, context, n_context,
                                  (float)p->repetition_penalty, scratch->seen);
    if (p->no_repeat_ngram_size > 0)
        logits_no_repeat_ngram(logits, vocab, context, n_context, p->no_repeat_ngram_size);
    if (!p->do_sample) return;
    if (p->temperature != 1.0) logits_temperature(logits, vocab, (float)p->temperature);
    if (p->top_k > 0) logits_top_k(logits, vocab, p->top_k, scratch->heap);
    if (p->top_p < 1.0) logits_top_p(logits, vocab, p->top_p, scratch->pairs);
}

int32_t sampling_next_token(const SamplingParams *p, float *logits, int vocab,
                            const int32_t *context, size_t n_context, Rng *rng,
                            SamplingScratch *scratch)
{
    sampling_process(p, logits, vocab, context, n_context, scratch);
    return p->do_sample ? sampling_multinomial(logits, vocab, rng) : sampling_argmax(logits, vocab);
}

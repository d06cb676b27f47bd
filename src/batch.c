#include "batch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int batch_from_sequences(const Sequence *const *seqs, int n, Batch *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if (n <= 0) return error_set(err, "a batch needs at least one sequence (got %d)", n);
    int seq_len = 0;
    for (int i = 0; i < n; i++)
        if (seqs[i]->len > seq_len) seq_len = seqs[i]->len;
    size_t cells = (size_t)n * (size_t)seq_len;
    out->tokens = calloc(cells, sizeof *out->tokens);
    out->label_mask = calloc(cells, sizeof *out->label_mask);
    out->lengths = calloc((size_t)n, sizeof *out->lengths);
    if (!out->tokens || !out->label_mask || !out->lengths) {
        batch_free(out);
        return error_set(err, "out of memory for a %d x %d batch", n, seq_len);
    }
    out->n_seq = n;
    out->seq_len = seq_len;
    for (int i = 0; i < n; i++) {
        const Sequence *s = seqs[i];
        size_t row = (size_t)i * (size_t)seq_len;
        memcpy(out->tokens + row, s->tokens, (size_t)s->len * sizeof *s->tokens);
        for (int32_t t = s->completion_start; t < s->len; t++) out->label_mask[row + (size_t)t] = 1;
        out->lengths[i] = s->len;
    }
    return 0;
}

/* Collects pointers, then batches them; `pick` maps a batch row to a sequence. */
static int gather(int n_rows, const Sequence *(*pick)(const void *, int), const void *ctx,
                  Batch *out, Error *err)
{
    memset(out, 0, sizeof *out);
    if (n_rows <= 0) return error_set(err, "a batch needs at least one sequence (got %d)", n_rows);
    const Sequence **ptrs = malloc((size_t)n_rows * sizeof *ptrs);
    if (!ptrs) return error_set(err, "out of memory");
    for (int i = 0; i < n_rows; i++) {
        ptrs[i] = pick(ctx, i);
        if (!ptrs[i]) {
            free(ptrs);
            return error_set(err, "batch index out of range");
        }
    }
    int rc = batch_from_sequences(ptrs, n_rows, out, err);
    free(ptrs);
    return rc;
}

typedef struct {
    const PairSequences *ps;
    const SftSequences *ss;
    const size_t *idx;
    int n;
} Pick;

static const Sequence *pick_pair(const void *ctx, int row)
{
    const Pick *p = ctx;
    size_t k = p->idx[row % p->n];
    if (k >= p->ps->n) return NULL;
    return row < p->n ? &p->ps->chosen[k] : &p->ps->rejected[k];
}

static const Sequence *pick_sft(const void *ctx, int row)
{
    const Pick *p = ctx;
    size_t k = p->idx[row];
    return k < p->ss->n ? &p->ss->seqs[k] : NULL;
}

int batch_from_pairs(const PairSequences *ps, const size_t *idx, int n, Batch *out, Error *err)
{
    Pick p = { .ps = ps, .idx = idx, .n = n };
    return gather(2 * n, pick_pair, &p, out, err);
}

int batch_from_sft(const SftSequences *ss, const size_t *idx, int n, Batch *out, Error *err)
{
    Pick p = { .ss = ss, .idx = idx, .n = n };
    return gather(n, pick_sft, &p, out, err);
}

int batch_n_labels(const Batch *b, int i)
{
    int count = 0;
    const uint8_t *m = b->label_mask + (size_t)i * (size_t)b->seq_len;
    for (int t = 0; t < b->seq_len; t++) count += m[t];
    return count;
}

int batch_n_sums(const Batch *b)
{
    int n = b->n_seq;
    if (!b->sum_start) return n;
    for (size_t i = 0; i < (size_t)b->n_seq * (size_t)b->seq_len; i++) n += b->sum_start[i] != 0;
    return n;
}

const char *batch_check_sums(const Batch *b, char *buf, size_t cap)
{
    if (!b->sum_start) return NULL;
    for (int s = 0; s < b->n_seq; s++)
        for (int t = 0; t < b->seq_len; t++) {
            size_t i = (size_t)s * (size_t)b->seq_len + (size_t)t;
            if (b->sum_start[i] && !b->label_mask[i]) {
                snprintf(buf, cap, "sequence %d: a sum starts at position %d, which has no label",
                         s, t);
                return buf;
            }
        }
    return NULL;
}

void batch_free(Batch *b)
{
    free(b->tokens);
    free(b->lengths);
    free(b->label_mask);
    free(b->sum_start);
    memset(b, 0, sizeof *b);
}

/* Training sequences: the prompt template, BOS/EOS, completion-only label
 * masks from the common token prefix, too-long dropping, and right-padded
 * batches.  Token ids are asserted against hand-checked values: the tiny
 * tokenizer's (tests/tiny-tokenizer) and, where ../shared is present, the
 * real Llama 2 tokenizer's (ids from sentencepiece 0.2).  Then the distinct
 * sequences of a pair set, and the frozen passes that compute each of them
 * once (pair_logps_all) against computing every pair side (CPU backend). */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend.h"
#include "batch.h"
#include "lora_peft.h"
#include "model_io.h"
#include "precompute.h"
#include "sequences.h"
#include "unique_sequences.h"

#define DEFAULT_TEMPLATE "\n\nHuman:\n{raw_prompt}\n\nAssistant:\n"
#define LLAMA_MODEL "../shared/llama2-tokenizer/tokenizer.model"

static void assert_ids(const Sequence *s, const int32_t *ids, int n)
{
    ck_assert_int_eq(s->len, n);
    for (int i = 0; i < n; i++) ck_assert_msg(s->tokens[i] == ids[i], "token %d: %d != %d", i, s->tokens[i], ids[i]);
}

/* ---- template ------------------------------------------------------------ */

START_TEST(test_template)
{
    char *out;
    Error err = { "" };
    ck_assert_int_eq(prompt_template_apply(DEFAULT_TEMPLATE, "What is 2+2?", &out, &err), 0);
    ck_assert_str_eq(out, "\n\nHuman:\nWhat is 2+2?\n\nAssistant:\n");
    free(out);
    /* Every occurrence is replaced; other braces are literal (no str.format escapes). */
    ck_assert_int_eq(prompt_template_apply("{raw_prompt}|{x}|{raw_prompt}", "ab", &out, &err), 0);
    ck_assert_str_eq(out, "ab|{x}|ab");
    free(out);
    /* A prompt that itself contains the placeholder is not expanded again. */
    ck_assert_int_eq(prompt_template_apply("<{raw_prompt}>", "{raw_prompt}", &out, &err), 0);
    ck_assert_str_eq(out, "<{raw_prompt}>");
    free(out);
    ck_assert_int_eq(prompt_template_apply("Human: {prompt}", "x", &out, &err), -1);
    ck_assert_ptr_null(out);
    ck_assert_str_eq(err.msg, "prompt template must contain the placeholder {raw_prompt}");
    ck_assert_int_eq(prompt_template_check(DEFAULT_TEMPLATE, &err), 0);
}
END_TEST

/* ---- batches (no tokenizer needed) --------------------------------------- */

START_TEST(test_batch_padding_and_mask)
{
    int32_t a[] = { 1, 10, 11, 12, 2 }, b[] = { 1, 20, 2 };
    Sequence sa = { a, 5, 3 }, sb = { b, 3, 1 };
    const Sequence *seqs[] = { &sa, &sb };
    Batch batch;
    Error err = { "" };
    ck_assert_int_eq(batch_from_sequences(seqs, 2, &batch, &err), 0);
    ck_assert_int_eq(batch.n_seq, 2);
    ck_assert_int_eq(batch.seq_len, 5);
    static const int32_t tokens[] = { 1, 10, 11, 12, 2, 1, 20, 2, 0, 0 };
    static const uint8_t mask[] = { 0, 0, 0, 1, 1, 0, 1, 1, 0, 0 };
    for (int i = 0; i < 10; i++) {
        ck_assert_int_eq(batch.tokens[i], tokens[i]);
        ck_assert_int_eq(batch.label_mask[i], mask[i]);
    }
    ck_assert_int_eq(batch.lengths[0], 5);
    ck_assert_int_eq(batch.lengths[1], 3);
    ck_assert_int_eq(batch_n_labels(&batch, 0), 2);
    ck_assert_int_eq(batch_n_labels(&batch, 1), 2);
    batch_free(&batch);
    ck_assert_ptr_null(batch.tokens);
    ck_assert_int_eq(batch_from_sequences(seqs, 0, &batch, &err), -1);
}
END_TEST

START_TEST(test_batch_pairs_chosen_first)
{
    int32_t c0[] = { 1, 5, 6, 2 }, r0[] = { 1, 5, 7, 8, 2 }, c1[] = { 1, 9, 2 }, r1[] = { 1, 3, 2 };
    Sequence chosen[] = { { c0, 4, 2 }, { c1, 3, 1 } };
    Sequence rejected[] = { { r0, 5, 2 }, { r1, 3, 1 } };
    size_t source[] = { 0, 1 };
    PairSequences ps = { .n = 2, .chosen = chosen, .rejected = rejected, .source = source };
    size_t idx[] = { 1, 0 };
    Batch b;
    Error err = { "" };
    ck_assert_int_eq(batch_from_pairs(&ps, idx, 2, &b, &err), 0);
    ck_assert_int_eq(b.n_seq, 4);
    ck_assert_int_eq(b.seq_len, 5);
    /* rows: c1, c0, r1, r0 */
    static const int32_t lengths[] = { 3, 4, 3, 5 };
    static const int32_t second_token[] = { 9, 5, 3, 5 };
    for (int i = 0; i < 4; i++) {
        ck_assert_int_eq(b.lengths[i], lengths[i]);
        ck_assert_int_eq(b.tokens[i * 5 + 1], second_token[i]);
    }
    static const uint8_t mask_r0[] = { 0, 0, 1, 1, 1 };
    for (int t = 0; t < 5; t++) ck_assert_int_eq(b.label_mask[3 * 5 + t], mask_r0[t]);
    batch_free(&b);
    size_t bad[] = { 2 };
    ck_assert_int_eq(batch_from_pairs(&ps, bad, 1, &b, &err), -1);
}
END_TEST

/* ---- the tiny tokenizer (always available) -------------------------------- */

#define TINY_DIR "tests/tiny-tokenizer"

static Tokenizer *load_tiny(void)
{
    Tokenizer *tok;
    Error err = { "" };
    ck_assert_msg(tokenizer_load_dir(TINY_DIR, &tok, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(tokenizer_bos_id(tok), 1);
    ck_assert_int_eq(tokenizer_eos_id(tok), 2);
    return tok;
}

/* tokens("\n\nHuman:\nWhat is the capital of France?\n\nAssistant:\n"), 35
 * ids, from Hugging Face tokenizers on tests/tiny-tokenizer/tokenizer.json. */
static const int32_t TINY_PROMPT[35] = {
    417, 13, 13, 454, 434, 340, 426, 445, 13, 475, 425, 422, 419, 417, 282, 264, 269, 422,
    430, 423, 280, 431, 297, 417, 493, 420, 404, 327, 443, 13, 13, 444, 345, 445, 13,
};
/* + "The answer is Paris." (T he ▁answer ▁ is ▁ P a ri s .) and "It is Lyon." */
static const int32_t TINY_CHOSEN[11] = { 436, 259, 350, 417, 282, 417, 478, 422, 271, 421, 438 };
static const int32_t TINY_REJECTED[10] = { 477, 419, 417, 282, 417, 476, 432, 424, 426, 438 };

static void assert_tiny_sequence(const Sequence *s, const int32_t *completion, int n_completion)
{
    ck_assert_int_eq(s->len, 1 + 35 + n_completion + 1);
    ck_assert_int_eq(s->tokens[0], 1);
    for (int i = 0; i < 35; i++) ck_assert_int_eq(s->tokens[1 + i], TINY_PROMPT[i]);
    for (int i = 0; i < n_completion; i++) ck_assert_int_eq(s->tokens[36 + i], completion[i]);
    ck_assert_int_eq(s->tokens[s->len - 1], 2);
}

START_TEST(test_tiny_pair_and_mask)
{
    Tokenizer *tok = load_tiny();
    char *prompt;
    Error err = { "" };
    ck_assert_int_eq(prompt_template_apply(DEFAULT_TEMPLATE, "What is the capital of France?", &prompt, &err), 0);
    Sequence c, r;
    ck_assert_msg(sequence_pair_build(tok, prompt, "The answer is Paris.", "It is Lyon.", &c, &r, &err) == 0,
                  "%s", err.msg);
    assert_tiny_sequence(&c, TINY_CHOSEN, 11);
    assert_tiny_sequence(&r, TINY_REJECTED, 10);
    ck_assert_int_eq(c.completion_start, 36); /* BOS + 35 prompt tokens */
    ck_assert_int_eq(r.completion_start, 36);

    /* The batch: rows [chosen, rejected], padded to 48; labels on 36..len-1. */
    const Sequence *rows[] = { &c, &r };
    Batch b;
    ck_assert_int_eq(batch_from_sequences(rows, 2, &b, &err), 0);
    ck_assert_int_eq(b.seq_len, 48);
    ck_assert_int_eq(b.lengths[0], 48);
    ck_assert_int_eq(b.lengths[1], 47);
    for (int t = 0; t < 48; t++) {
        ck_assert_int_eq(b.label_mask[t], t >= 36);
        ck_assert_int_eq(b.label_mask[48 + t], t >= 36 && t < 47);
    }
    ck_assert_int_eq(b.tokens[48 + 46], 2);  /* rejected's EOS is labelled */
    ck_assert_int_eq(b.tokens[48 + 47], 0);  /* padding */
    ck_assert_int_eq(batch_n_labels(&b, 0), 12);
    ck_assert_int_eq(batch_n_labels(&b, 1), 11);
    batch_free(&b);

    Sequence s;
    ck_assert_int_eq(sequence_sft_build(tok, prompt, "The answer is Paris.", &s, &err), 0);
    assert_tiny_sequence(&s, TINY_CHOSEN, 11);
    ck_assert_int_eq(s.completion_start, 36);
    sequence_free(&s);
    sequence_free(&c);
    sequence_free(&r);
    free(prompt);
    tokenizer_free(tok);
}
END_TEST

/* "is t" + "he cat" tokenizes as [▁ is ▁the ▁c a t]: "▁the" spans the prompt
 * boundary, so the labels start there (prompt alone: [▁ is ▁t]). */
START_TEST(test_tiny_merge_across_boundary)
{
    Tokenizer *tok = load_tiny();
    Sequence c, r, s;
    Error err = { "" };
    ck_assert_int_eq(sequence_pair_build(tok, "is t", "he cat", "o go", &c, &r, &err), 0);
    static const int32_t cid[] = { 1, 417, 282, 264, 269, 422, 419, 2 };
    static const int32_t rid[] = { 1, 417, 282, 324, 417, 439, 424, 2 };
    assert_ids(&c, cid, 8);
    assert_ids(&r, rid, 8);
    ck_assert_int_eq(c.completion_start, 3);
    ck_assert_int_eq(r.completion_start, 3);
    ck_assert_int_eq(sequence_sft_build(tok, "is t", "he cat", &s, &err), 0);
    assert_ids(&s, cid, 8);
    ck_assert_int_eq(s.completion_start, 3);
    sequence_free(&c);
    sequence_free(&r);
    sequence_free(&s);
    tokenizer_free(tok);
}
END_TEST

/* The seed's corner case: two responses that tokenize identically share the
 * whole sequence, EOS included, so nothing is labelled. */
START_TEST(test_tiny_identical_responses)
{
    Tokenizer *tok = load_tiny();
    Sequence c, r;
    Error err = { "" };
    ck_assert_int_eq(sequence_pair_build(tok, "Q: ", "A b", "A b", &c, &r, &err), 0);
    ck_assert_int_eq(c.len, 7);
    ck_assert_int_eq(c.completion_start, 7);
    ck_assert_int_eq(r.completion_start, 7);
    /* One response a token prefix of the other: only the extra tokens and the
     * shorter one's EOS differ. */
    sequence_free(&c);
    sequence_free(&r);
    ck_assert_int_eq(sequence_pair_build(tok, "Q: ", "A b", "A b.", &c, &r, &err), 0);
    static const int32_t cid[] = { 1, 417, 498, 445, 298, 281, 2 };
    static const int32_t rid[] = { 1, 417, 498, 445, 298, 281, 438, 2 };
    assert_ids(&c, cid, 7);
    assert_ids(&r, rid, 8);
    ck_assert_int_eq(c.completion_start, 6);
    sequence_free(&c);
    sequence_free(&r);
    tokenizer_free(tok);
}
END_TEST

static void load_sample_pairs(HelpSteerData *d, PairSet *pairs)
{
    Error err = { "" };
    ck_assert_int_eq(helpsteer_load("data/helpsteer-sample/train.jsonl.gz", false, d, &err), 0);
    ck_assert_int_eq(pairs_build(d, DIM_HELPFULNESS, pairs, &err), 0);
    ck_assert_uint_eq(pairs->n, 280);
}

/* Too-long dropping on the sample's helpfulness pairs; the expected counts
 * come from Hugging Face tokenizers (per-row lengths, a pair dropped when
 * either side is longer than max_length). */
START_TEST(test_tiny_too_long)
{
    Tokenizer *tok = load_tiny();
    HelpSteerData d;
    PairSet pairs;
    load_sample_pairs(&d, &pairs);
    Error err = { "" };
    static const int max_len[] = { 256, 200, 150 };
    static const size_t pairs_dropped[] = { 4, 30, 129 }, sft_dropped[] = { 2, 29, 107 };
    for (int i = 0; i < 3; i++) {
        PairSequences ps;
        ck_assert_msg(pair_sequences_build(tok, DEFAULT_TEMPLATE, max_len[i], &pairs, &ps, &err) == 0, "%s",
                      err.msg);
        ck_assert_uint_eq(ps.n_too_long, pairs_dropped[i]);
        ck_assert_uint_eq(ps.n, 280 - pairs_dropped[i]);
        for (size_t k = 0; k < ps.n; k++) {
            ck_assert_int_le(ps.chosen[k].len, max_len[i]);
            ck_assert_int_le(ps.rejected[k].len, max_len[i]);
        }
        if (max_len[i] == 150) {
            /* pair 0 is (131, 99) tokens: kept; so is pair 1. */
            ck_assert_uint_eq(ps.source[0], 0);
            ck_assert_uint_eq(ps.source[1], 1);
            ck_assert_int_eq(ps.chosen[0].len, 131);
            ck_assert_int_eq(ps.rejected[0].len, 99);
        }
        pair_sequences_free(&ps);

        SftSet sft;
        SftSequences ss;
        ck_assert_int_eq(sft_from_pairs(&pairs, &sft, &err), 0);
        ck_assert_int_eq(sft_sequences_build(tok, DEFAULT_TEMPLATE, max_len[i], &sft, &ss, &err), 0);
        ck_assert_uint_eq(ss.n_too_long, sft_dropped[i]);
        ck_assert_uint_eq(ss.n, 280 - sft_dropped[i]);
        sft_sequences_free(&ss);
        sft_free(&sft);
    }
    pairs_free(&pairs);
    helpsteer_free(&d);
    tokenizer_free(tok);
}
END_TEST

/* The per-group token cache must give exactly what building each pair on its
 * own gives. */
START_TEST(test_tiny_set_matches_single_builds)
{
    Tokenizer *tok = load_tiny();
    HelpSteerData d;
    PairSet pairs;
    load_sample_pairs(&d, &pairs);
    Error err = { "" };
    PairSequences ps;
    ck_assert_int_eq(pair_sequences_build(tok, DEFAULT_TEMPLATE, 0, &pairs, &ps, &err), 0);
    ck_assert_uint_eq(ps.n, 280);
    ck_assert_uint_eq(ps.n_too_long, 0);
    for (size_t i = 0; i < ps.n; i++) {
        const Pair *p = &pairs.pairs[ps.source[i]];
        char *prompt;
        Sequence c, r;
        ck_assert_int_eq(prompt_template_apply(DEFAULT_TEMPLATE, p->prompt, &prompt, &err), 0);
        ck_assert_int_eq(sequence_pair_build(tok, prompt, p->chosen, p->rejected, &c, &r, &err), 0);
        ck_assert_int_eq(c.len, ps.chosen[i].len);
        ck_assert_int_eq(r.len, ps.rejected[i].len);
        ck_assert_int_eq(c.completion_start, ps.chosen[i].completion_start);
        ck_assert_int_eq(memcmp(c.tokens, ps.chosen[i].tokens, (size_t)c.len * sizeof *c.tokens), 0);
        ck_assert_int_eq(memcmp(r.tokens, ps.rejected[i].tokens, (size_t)r.len * sizeof *r.tokens), 0);
        sequence_free(&c);
        sequence_free(&r);
        free(prompt);
    }
    /* A batch of pairs 3 and 5: [c3, c5, r3, r5]. */
    size_t idx[] = { 3, 5 };
    Batch b;
    ck_assert_int_eq(batch_from_pairs(&ps, idx, 2, &b, &err), 0);
    ck_assert_int_eq(b.n_seq, 4);
    ck_assert_int_eq(b.lengths[1], ps.chosen[5].len);
    ck_assert_int_eq(b.lengths[2], ps.rejected[3].len);
    int labels = 0;
    for (int t = 0; t < b.seq_len; t++) labels += b.label_mask[2 * b.seq_len + t];
    ck_assert_int_eq(labels, ps.rejected[3].len - ps.rejected[3].completion_start);
    batch_free(&b);
    pair_sequences_free(&ps);
    pairs_free(&pairs);
    helpsteer_free(&d);
    tokenizer_free(tok);
}
END_TEST

START_TEST(test_template_error_in_set)
{
    Tokenizer *tok = load_tiny();
    HelpSteerData d;
    PairSet pairs;
    load_sample_pairs(&d, &pairs);
    Error err = { "" };
    PairSequences ps;
    ck_assert_int_eq(pair_sequences_build(tok, "Human: {prompt}", 0, &pairs, &ps, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "{raw_prompt}"));
    pairs_free(&pairs);
    helpsteer_free(&d);
    tokenizer_free(tok);
}
END_TEST

/* ---- the real Llama 2 tokenizer (skips without ../shared) ---------------- */

static Tokenizer *load_llama(void)
{
    if (access(LLAMA_MODEL, R_OK) != 0) {
        fprintf(stderr, "check_sequences: %s absent; skipping the Llama 2 checks\n", LLAMA_MODEL);
        return NULL;
    }
    Tokenizer *tok;
    Error err = { "" };
    ck_assert_msg(tokenizer_load_file(LLAMA_MODEL, &tok, &err) == 0, "%s", err.msg);
    return tok;
}

/* The default template on "What is 2+2?"; ids from sentencepiece:
 * "\n\nHuman:\nWhat is 2+2?\n\nAssistant:\n" + "It is 4." / "Four.". */
START_TEST(test_llama_pair)
{
    Tokenizer *tok = load_llama();
    if (!tok) return;
    char *prompt;
    Error err = { "" };
    ck_assert_int_eq(prompt_template_apply(DEFAULT_TEMPLATE, "What is 2+2?", &prompt, &err), 0);
    Sequence c, r;
    ck_assert_msg(sequence_pair_build(tok, prompt, "It is 4.", "Four.", &c, &r, &err) == 0, "%s", err.msg);
    static const int32_t cid[] = { 1, 29871, 13, 13, 29950, 7889, 29901, 13, 5618, 338, 29871, 29906, 29974,
                                   29906, 29973, 13, 13, 7900, 22137, 29901, 13, 3112, 338, 29871, 29946, 29889, 2 };
    static const int32_t rid[] = { 1, 29871, 13, 13, 29950, 7889, 29901, 13, 5618, 338, 29871, 29906, 29974,
                                   29906, 29973, 13, 13, 7900, 22137, 29901, 13, 29943, 473, 29889, 2 };
    assert_ids(&c, cid, 27);
    assert_ids(&r, rid, 25);
    /* BOS + the 20 prompt tokens are unlabelled. */
    ck_assert_int_eq(c.completion_start, 21);
    ck_assert_int_eq(r.completion_start, 21);
    Sequence s;
    ck_assert_int_eq(sequence_sft_build(tok, prompt, "It is 4.", &s, &err), 0);
    assert_ids(&s, cid, 27);
    ck_assert_int_eq(s.completion_start, 21);
    sequence_free(&c);
    sequence_free(&r);
    sequence_free(&s);
    free(prompt);
    tokenizer_free(tok);
}
END_TEST

/* A response that merges with the end of the prompt: "Hello wor" + "ld" is
 * [▁Hello ▁world], + "k" is [▁Hello ▁work], alone [▁Hello ▁wor].  The label
 * starts at the first token that differs, so "▁world" is labelled although it
 * carries prompt characters, exactly as in the seed. */
START_TEST(test_llama_merge_across_boundary)
{
    Tokenizer *tok = load_llama();
    if (!tok) return;
    Sequence c, r, s;
    Error err = { "" };
    ck_assert_int_eq(sequence_pair_build(tok, "Hello wor", "ld", "k", &c, &r, &err), 0);
    static const int32_t cid[] = { 1, 15043, 3186, 2 }, rid[] = { 1, 15043, 664, 2 };
    assert_ids(&c, cid, 4);
    assert_ids(&r, rid, 4);
    ck_assert_int_eq(c.completion_start, 2);
    ck_assert_int_eq(sequence_sft_build(tok, "Hello wor", "ld", &s, &err), 0);
    assert_ids(&s, cid, 4);
    ck_assert_int_eq(s.completion_start, 2); /* [▁Hello ▁wor] vs [▁Hello ▁world] */
    sequence_free(&c);
    sequence_free(&r);
    sequence_free(&s);
    tokenizer_free(tok);
}
END_TEST

/* ---- distinct sequences --------------------------------------------------- */

static uint64_t constant_hash(const Sequence *s)
{
    (void)s;
    return 42;
}

/* A: sides of p0 and p1; A2: A's tokens with an earlier label start (the
 * same sequence, a second sum); C: A's length, other tokens; B and B_copy:
 * equal values in two buffers (one sequence). */
static void check_distinct(SequenceHash hash)
{
    int32_t a[] = { 1, 5, 6, 7, 2 }, b[] = { 1, 5, 6, 9, 9, 2 }, b_copy[] = { 1, 5, 6, 9, 9, 2 };
    int32_t c[] = { 1, 5, 6, 8, 2 };
    Sequence A = { a, 5, 3 }, A2 = { a, 5, 2 }, B = { b, 6, 3 }, Bc = { b_copy, 6, 3 }, C = { c, 5, 3 };
    Sequence chosen[] = { A, A, A2, C, Bc };
    Sequence rejected[] = { B, C, Bc, Bc, A2 };
    PairSequences ps = { .n = 5, .chosen = chosen, .rejected = rejected };
    UniqueSequences u;
    Error err = { "" };
    ck_assert_msg(unique_sequences_build_hashed(&ps, hash, &u, &err) == 0, "%s", err.msg);
    /* first appearance over c0 r0 c1 r1 ...: A (c0), B (r0), C (r1); sums
     * A from 2, A from 3, B from 3, C from 3 */
    ck_assert_uint_eq(u.n, 3);
    ck_assert_uint_eq(u.n_pairs, 5);
    ck_assert_ptr_eq(u.seqs[0], &chosen[0]);
    ck_assert_ptr_eq(u.seqs[1], &rejected[0]);
    ck_assert_ptr_eq(u.seqs[2], &rejected[1]);
    ck_assert_uint_eq(u.n_sums, 4);
    static const size_t want_base[] = { 0, 2, 3, 4 };
    static const int32_t want_from[] = { 2, 3, 3, 3 };
    for (size_t d = 0; d <= 3; d++) ck_assert_uint_eq(u.sum_base[d], want_base[d]);
    for (size_t k = 0; k < 4; k++) ck_assert_int_eq(u.sum_from[k], want_from[k]);
    static const size_t want_c[] = { 1, 1, 0, 3, 2 }, want_r[] = { 2, 3, 2, 2, 0 };
    for (size_t p = 0; p < 5; p++) {
        ck_assert_msg(u.chosen[p] == want_c[p], "pair %zu chosen: %zu != %zu", p, u.chosen[p], want_c[p]);
        ck_assert_msg(u.rejected[p] == want_r[p], "pair %zu rejected: %zu != %zu", p, u.rejected[p], want_r[p]);
    }
    unique_sequences_free(&u);

    PairSequences none = { .n = 0 };
    ck_assert_int_eq(unique_sequences_build_hashed(&none, hash, &u, &err), 0);
    ck_assert_uint_eq(u.n, 0);
    unique_sequences_free(&u);
}

START_TEST(test_unique_sequences_maps)
{
    check_distinct(sequence_hash);
}
END_TEST

/* Every key in one bucket chain: only the full comparison tells them apart. */
START_TEST(test_unique_sequences_colliding_hash)
{
    check_distinct(constant_hash);
}
END_TEST

/* ---- the frozen passes over distinct sequences ---------------------------- */

#define LOGPS_MODEL "tests/fixtures/backend/mha_untied"
enum { N_GROUPS = 3, GROUP_ROWS = 4, VOCAB = 128 };

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

typedef struct {
    int32_t *rows[N_GROUPS * GROUP_ROWS]; /* BOS prompt response EOS, one per row */
    int32_t lens[N_GROUPS * GROUP_ROWS], starts[N_GROUPS * GROUP_ROWS];
    int32_t *relabelled;                  /* row 0's tokens again, in a buffer of its own */
    Sequence chosen[N_GROUPS * 6 + 1], rejected[N_GROUPS * 6 + 1];
    PairSequences ps;
} GroupedPairs;

/* HelpSteer's shape: every j < k of a group of 4 rows sharing a prompt (so
 * each row is a side of 3 pairs), sides in either order; plus one pair
 * whose chosen side has row 0's tokens but one more labelled token. */
static void grouped_pairs_make(GroupedPairs *g)
{
    uint64_t s = 2024;
    size_t n = 0;
    for (int grp = 0; grp < N_GROUPS; grp++) {
        int32_t prompt[8];
        int plen = 3 + (int)(xorshift(&s) % 4);
        for (int t = 0; t < plen; t++) prompt[t] = 3 + (int32_t)(xorshift(&s) % (VOCAB - 3));
        for (int j = 0; j < GROUP_ROWS; j++) {
            int row = grp * GROUP_ROWS + j, rlen = 2 + (int)(xorshift(&s) % 7), len = plen + rlen + 2;
            int32_t *t = malloc((size_t)len * sizeof *t);
            t[0] = 1;
            memcpy(t + 1, prompt, (size_t)plen * sizeof *t);
            for (int i = 0; i < rlen; i++) t[1 + plen + i] = 3 + (int32_t)(xorshift(&s) % (VOCAB - 3));
            t[len - 1] = 2;
            g->rows[row] = t;
            g->lens[row] = len;
            g->starts[row] = 1 + plen;
        }
        for (int j = 0; j < GROUP_ROWS; j++)
            for (int k = j + 1; k < GROUP_ROWS; k++, n++) {
                int hi = grp * GROUP_ROWS + ((xorshift(&s) & 1) ? j : k);
                int lo = grp * GROUP_ROWS + j + k - (hi - grp * GROUP_ROWS);
                g->chosen[n] = (Sequence){ g->rows[hi], g->lens[hi], g->starts[hi] };
                g->rejected[n] = (Sequence){ g->rows[lo], g->lens[lo], g->starts[lo] };
            }
    }
    g->relabelled = malloc((size_t)g->lens[0] * sizeof *g->relabelled);
    memcpy(g->relabelled, g->rows[0], (size_t)g->lens[0] * sizeof *g->relabelled);
    g->chosen[n] = (Sequence){ g->relabelled, g->lens[0], g->starts[0] - 1 };
    g->rejected[n] = (Sequence){ g->rows[1], g->lens[1], g->starts[1] };
    n++;
    g->ps = (PairSequences){ .n = n, .chosen = g->chosen, .rejected = g->rejected };
}

static void grouped_pairs_free(GroupedPairs *g)
{
    for (int i = 0; i < N_GROUPS * GROUP_ROWS; i++) free(g->rows[i]);
    free(g->relabelled);
}

/* Each pair on its own: [chosen, rejected] of a one-pair batch. */
static void logps_pair_by_pair(Backend *be, BackendAdapter *a, const PairSequences *ps, float *c, float *r)
{
    Error err = { "" };
    for (size_t p = 0; p < ps->n; p++) {
        Batch b;
        float two[2];
        ck_assert_msg(batch_from_pairs(ps, &p, 1, &b, &err) == 0, "%s", err.msg);
        ck_assert_msg(backend_logps(be, a, &b, two, 0, &err) == 0 && backend_sync(be, &err) == 0, "%s", err.msg);
        batch_free(&b);
        c[p] = two[0];
        r[p] = two[1];
    }
}

static void assert_close(const float *got, const float *want, size_t n, const char *what)
{
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(fabsf(got[i] - want[i]) <= 1e-5f * fmaxf(1.0f, fabsf(want[i])),
                      "%s[%zu]: %.7g != %.7g", what, i, got[i], want[i]);
}

/* The test must see a wrong mapping: distinct sequences have clearly
 * different logps. */
static void assert_distinct_logps_apart(const PairSequences *ps, const float *c, const float *r)
{
    UniqueSequences u;
    Error err = { "" };
    ck_assert_msg(unique_sequences_build(ps, &u, &err) == 0, "%s", err.msg);
    float *v = malloc(u.n_sums * sizeof *v);
    for (size_t p = 0; p < ps->n; p++) {
        v[u.chosen[p]] = c[p];
        v[u.rejected[p]] = r[p];
    }
    for (size_t i = 0; i < u.n_sums; i++)
        for (size_t j = i + 1; j < u.n_sums; j++)
            ck_assert_msg(fabsf(v[i] - v[j]) > 1e-3f * fmaxf(1.0f, fabsf(v[i])),
                          "distinct sums %zu and %zu: logps %.7g and %.7g too close", i, j, v[i], v[j]);
    free(v);
    unique_sequences_free(&u);
}

START_TEST(test_pair_logps_all_distinct_equals_every_side)
{
    LlamaModel model;
    LoraAdapter adapter;
    Backend *be;
    BackendAdapter *margin;
    Error err = { "" };
    ck_assert_msg(llama_model_load(LOGPS_MODEL "/model", &model, &err) == 0, "%s", err.msg);
    ck_assert_msg(lora_peft_load(LOGPS_MODEL "/adapter", &model.config, &adapter, &err) == 0, "%s", err.msg);
    ck_assert_msg(cpu_backend_create(&model, NULL, &be, &err) == 0, "%s", err.msg);
    ck_assert_msg(be->ops->adapter_bind(be, &adapter, &margin, &err) == 0, "%s", err.msg);
    GroupedPairs g;
    grouped_pairs_make(&g);
    const PairSequences *ps = &g.ps;
    UniqueSequences u;
    ck_assert_int_eq(unique_sequences_build(ps, &u, &err), 0);
    ck_assert_uint_eq(ps->n, 19);
    /* the relabelled pair's chosen side is row 0 again, scored from one
     * token earlier: one forward, two sums */
    ck_assert_uint_eq(u.n, N_GROUPS * GROUP_ROWS);
    ck_assert_uint_eq(u.n_sums, N_GROUPS * GROUP_ROWS + 1);
    unique_sequences_free(&u);

    float c[19], r[19], want_c[19], want_r[19];
    BackendAdapter *adapters[2] = { NULL, margin };
    for (int i = 0; i < 2; i++) {
        logps_pair_by_pair(be, adapters[i], ps, want_c, want_r);
        assert_distinct_logps_apart(ps, want_c, want_r);
        /* 2 pairs a batch: 4 distinct sequences a batch, the last one short */
        ck_assert_msg(pair_logps_all(NULL, be, adapters[i], ps, 2, c, r, &err) == 0, "%s", err.msg);
        assert_close(c, want_c, ps->n, "chosen");
        assert_close(r, want_r, ps->n, "rejected");
    }
    grouped_pairs_free(&g);
    be->ops->adapter_unbind(be, margin);
    backend_destroy(be);
    lora_adapter_free(&adapter);
    llama_model_free(&model);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sequences");
    TCase *tc = tcase_create("sequences");
    tcase_add_test(tc, test_template);
    tcase_add_test(tc, test_batch_padding_and_mask);
    tcase_add_test(tc, test_batch_pairs_chosen_first);
    tcase_add_test(tc, test_tiny_pair_and_mask);
    tcase_add_test(tc, test_tiny_merge_across_boundary);
    tcase_add_test(tc, test_tiny_identical_responses);
    tcase_add_test(tc, test_tiny_too_long);
    tcase_add_test(tc, test_tiny_set_matches_single_builds);
    tcase_add_test(tc, test_template_error_in_set);
    tcase_add_test(tc, test_llama_pair);
    tcase_add_test(tc, test_llama_merge_across_boundary);
    tcase_add_test(tc, test_unique_sequences_maps);
    tcase_add_test(tc, test_unique_sequences_colliding_hash);
    tcase_add_test(tc, test_pair_logps_all_distinct_equals_every_side);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

/* generate: responses of one model (the SFT model, or SFT + a MODPO adapter)
 * to the first generate.eval_size validation prompts, batched through the
 * backend's KV cache, greedy or sampled as Hugging Face's generate does. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_util.h"
#include "generation_io.h"
#include "lora_peft.h"
#include "model_session.h"
#include "run_data.h"
#include "run_layout.h"
#include "sampling.h"
#include "shuffle.h"
#include "stage.h"
#include "stages.h"

typedef struct {
    int32_t *ids;          /* prompt tokens then generated ones */
    int n_prompt, n;
    int done;
} Slot;

typedef struct {
    const Config *cfg;
    ModelSession *ms;
    BackendAdapter *adapter;
    const Tokenizer *tok;
    SamplingParams sp;
    SamplingScratch *scratch; /* one per OpenMP thread: slots are sampled in parallel */
    int n_scratch;
} Generator;

static int scratch_init(Generator *g, int vocab, Error *err)
{
    int n = omp_get_max_threads();
    g->scratch = calloc((size_t)n, sizeof *g->scratch);
    if (!g->scratch) return error_set(err, "out of memory");
    for (; g->n_scratch < n; g->n_scratch++)
        if (sampling_scratch_init(&g->scratch[g->n_scratch], vocab, err)) return -1;
    return 0;
}

static void scratch_free(Generator *g)
{
    for (int i = 0; i < g->n_scratch; i++) sampling_scratch_free(&g->scratch[i]);
    free(g->scratch);
}

/* The prompt's token ids, BOS first, keeping the last max_input_length. */
static int prompt_ids(const Generator *g, const char *raw, Slot *s, Error *err)
{
    char *text = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    if (prompt_template_apply(g->cfg->prompt_template, raw, &text, err)) return -1;
    int rc = tokenizer_encode(g->tok, text, strlen(text), &ids, &n, err);
    free(text);
    if (rc) return -1;
    size_t total = n + 1, keep = total;
    if (keep > (size_t)g->cfg->max_input_length) keep = (size_t)g->cfg->max_input_length;
    s->ids = malloc(((size_t)keep + (size_t)g->cfg->max_new_tokens) * sizeof(int32_t));
    if (!s->ids) { free(ids); return error_set(err, "out of memory"); }
    for (size_t i = 0; i < keep; i++) {
        size_t src = total - keep + i; /* index into BOS + ids */
        s->ids[i] = src == 0 ? tokenizer_bos_id(g->tok) : ids[src - 1];
    }
    s->n_prompt = s->n = (int)keep;
    free(ids);
    return 0;
}

static int max_total_len(const Generator *g, const Slot *slots, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) if (slots[i].n_prompt > m) m = slots[i].n_prompt;
    m += g->cfg->max_new_tokens;
    return m;
}

/* Picks each active slot's next token from its logits row; returns the
 * number of slots still active, or -1 when a slot has no samplable token. */
static int choose_tokens(Generator *g, Slot *slots, int n, float *logits, int32_t *next,
                         uint8_t *active, Rng *rngs, Error *err)
{
    int V = g->ms->model.config.vocab_size, n_active = 0;
    int eos = tokenizer_eos_id(g->tok);
    int limit = g->cfg->gen_max_length;
    /* Each slot has its own random stream, so the order does not matter.
     * One slot is chosen on this thread: with the team woken for it the
     * decode bench's batch-1 choice took 0.15-0.63 ms a step, on one thread
     * 0.12 (then 0.02 with the vectorised argmax; bench/NOTES-gpu.md step 18). */
#pragma omp parallel for schedule(dynamic, 1) if (n > 1)
    for (int i = 0; i < n; i++)
        if (active[i])
            next[i] = sampling_next_token(&g->sp, logits + (size_t)i * (size_t)V, V, slots[i].ids,
                                          (size_t)slots[i].n, &rngs[i],
                                          &g->scratch[omp_get_thread_num()]);
    for (int i = 0; i < n; i++) {
        if (!active[i]) continue;
        Slot *s = &slots[i];
        int32_t t = next[i];
        if (t < 0)
            return error_set(err, "prompt slot %d: every token is banned (no_repeat_ngram_size, top_p)", i);
        s->ids[s->n++] = t;
        int gen = s->n - s->n_prompt;
        if (t == eos || gen >= g->cfg->max_new_tokens || s->n >= limit) active[i] = 0;
        n_active += active[i];
    }
    return n_active;
}

static int generate_batch(Generator *g, Slot *slots, int n, size_t first_index, Error *err)
{
    Backend *b = g->ms->backend;
    int V = g->ms->model.config.vocab_size, stride = 0;
    for (int i = 0; i < n; i++) if (slots[i].n_prompt > stride) stride = slots[i].n_prompt;
    int32_t *tokens = calloc((size_t)n * (size_t)stride, sizeof *tokens);
    int32_t *lengths = malloc((size_t)n * sizeof *lengths), *next = malloc((size_t)n * sizeof *next);
    uint8_t *active = malloc((size_t)n);
    float *logits = malloc((size_t)n * (size_t)V * sizeof *logits);
    Rng *rngs = malloc((size_t)n * sizeof *rngs);
    KvCache *kv = NULL;
    int rc = (tokens && lengths && next && active && logits && rngs) ? 0 : error_set(err, "out of memory");
    for (int i = 0; rc == 0 && i < n; i++) {
        memcpy(tokens + (size_t)i * (size_t)stride, slots[i].ids, (size_t)slots[i].n_prompt * sizeof(int32_t));
        lengths[i] = slots[i].n_prompt;
        active[i] = 1;
        /* One stream per prompt: the output does not depend on the batching. */
        rng_seed_stream(&rngs[i], (uint64_t)g->cfg->seed, first_index + (size_t)i);
    }
    if (rc == 0)
        rc = b->ops->kv_create(b, n, max_total_len(g, slots, n), &kv, err) ||
             b->ops->prefill(b, kv, g->adapter, tokens, lengths, stride, logits, err) ||
             backend_sync(b, err);
    while (rc == 0) {
        int n_active = choose_tokens(g, slots, n, logits, next, active, rngs, err);
        if (n_active <= 0) { rc = n_active; break; }
        rc = b->ops->decode_step(b, kv, g->adapter, next, active, logits, err) || backend_sync(b, err);
    }
    if (kv) b->ops->kv_free(b, kv);
    free(tokens); free(lengths); free(next); free(active); free(logits); free(rngs);
    return rc ? -1 : 0;
}

static int decode(const Tokenizer *tok, const int32_t *ids, int n, char **out, Error *err)
{
    return tokenizer_decode(tok, ids, (size_t)n, out, err);
}

/* The record of a finished slot, as the seed writes it. */
static int make_record(const Generator *g, const char *raw, const Slot *s, GenRecord *r, Error *err)
{
    char *p = NULL, *full = NULL, *resp = NULL;
    int rc = decode(g->tok, s->ids, s->n_prompt, &p, err) || decode(g->tok, s->ids, s->n, &full, err) ||
             decode(g->tok, s->ids + s->n_prompt, s->n - s->n_prompt, &resp, err);
    if (rc == 0) {
        bool matched;
        const char *response = gen_pick_response(p, full, resp, &matched);
        rc = gen_record_init(r, raw, p, response, matched, err);
    }
    free(p); free(full); free(resp);
    return rc ? -1 : 0;
}

/* The first eval_size prompts of the validation split, one per prompt group. */
static size_t eval_prompts(const HelpSteerData *val, int eval_size, const char ***out)
{
    size_t n_groups = helpsteer_count_groups(val), n = 0;
    size_t want = n_groups < (size_t)eval_size ? n_groups : (size_t)eval_size;
    *out = malloc((want ? want : 1) * sizeof **out);
    if (!*out) return 0;
    for (size_t start = 0; start < val->n_rows && n < want; start = helpsteer_group_end(val, start))
        (*out)[n++] = val->rows[start].prompt;
    return n;
}

/* prompts[0..n) are the prompts offset.. of the whole list (this rank's
 * shard): the sampling stream of each is its global index, so the outputs
 * do not depend on the number of ranks. */
static int generate_all(Generator *g, const char **prompts, size_t n, size_t offset, bool show,
                        GenRecord *records, Error *err)
{
    int bs = g->cfg->gen_batch_size;
    int rc = 0;
    for (size_t start = 0; rc == 0 && start < n; start += (size_t)bs) {
        int k = (int)(n - start < (size_t)bs ? n - start : (size_t)bs);
        Slot *slots = calloc((size_t)k, sizeof *slots);
        if (!slots) return error_set(err, "out of memory");
        for (int i = 0; rc == 0 && i < k; i++) rc = prompt_ids(g, prompts[start + (size_t)i], &slots[i], err);
        if (rc == 0) rc = generate_batch(g, slots, k, offset + start, err);
        for (int i = 0; rc == 0 && i < k; i++)
            rc = make_record(g, prompts[start + (size_t)i], &slots[i], &records[start + (size_t)i], err);
        for (int i = 0; i < k; i++) free(slots[i].ids);
        free(slots);
        if (show && isatty(2))
            fprintf(stderr, "\rgenerate %zu/%zu", start + (size_t)k, n);
    }
    if (show && isatty(2)) fputc('\n', stderr);
    return rc ? -1 : 0;
}

static void sampling_from_config(const Config *c, SamplingParams *p)
{
    sampling_params_default(p);
    p->do_sample = c->do_sample;
    p->temperature = c->temperature;
    p->top_k = c->top_k;
    p->top_p = c->top_p;
    p->repetition_penalty = c->repetition_penalty;
    p->no_repeat_ngram_size = c->no_repeat_ngram_size;
}

static int load_policy(const Config *cfg, const char *model, ModelSession *ms, LoraAdapter *a,
                       BackendAdapter **h, Error *err)
{
    *h = NULL;
    if (strcmp(model, "sft") == 0) return 0;
    char dir[RUN_PATH_MAX + 16];
    snprintf(dir, sizeof dir, "%s/%s/%s/adapter", cfg->output_root, cfg->run_tag, model);
    if (lora_peft_load(dir, &ms->model.config, a, err))
        return error_prefix(err, "the %s policy (train it first): ", model);
    return model_bind_adapter(ms, a, h, err);
}

/* Rank r of the ranks takes the contiguous shard r of the prompts
 * (shard_range over whole batches) and writes it as its own NNNNN-of-NNNNN.jsonl; the reader
 * concatenates the shards in rank order, i.e. prompt order. */
static int run_generation(const Config *cfg, const DistComm *comm, const char *model, const char *dir,
                          Error *err)
{
    char sft_model[RUN_PATH_MAX];
    run_path(cfg, "sft-model", sft_model);
    RunData data;
    ModelSession ms;
    LoraAdapter a;
    memset(&a, 0, sizeof a);
    if (run_data_load(&data, cfg, sft_model, err)) return -1;
    const char **prompts = NULL;
    size_t total = eval_prompts(&data.val, cfg->eval_size, &prompts), lo, hi;
    /* whole generation batches per rank: the same batches as one process */
    dist_shard_blocks(comm, total, (size_t)cfg->gen_batch_size, &lo, &hi);
    size_t n = hi - lo;
    GenRecord *records = calloc(n ? n : 1, sizeof *records);
    Generator g = {cfg, &ms, NULL, data.tok, {0}, NULL, 0};
    sampling_from_config(cfg, &g.sp);
    int rc = (prompts && records) ? 0 : error_set(err, "out of memory");
    if (rc == 0) rc = model_session_open(&ms, cfg, sft_model, err);
    if (rc == 0) {
        rc = load_policy(cfg, model, &ms, &a, &g.adapter, err) ||
             sampling_params_check(&g.sp, err) ||
             scratch_init(&g, ms.model.config.vocab_size, err) ||
             generate_all(&g, prompts ? prompts + lo : NULL, n, lo, dist_is_root(comm), records, err) ||
             gen_write_shard(dir, dist_rank(comm), dist_size(comm), records, n, err);
        if (g.adapter) ms.backend->ops->adapter_unbind(ms.backend, g.adapter);
        scratch_free(&g);
        model_session_close(&ms);
    }
    for (size_t i = 0; records && i < n; i++) gen_record_free(&records[i]);
    free(records);
    free(prompts);
    lora_adapter_free(&a);
    run_data_free(&data);
    return rc ? -1 : 0;
}

int stage_generate(const Config *cfg, const char *model, const StageOptions *o, Error *err)
{
    static const char *const critical[] = {"model.path", "data", "lora", "sft", "dpo", "modpo.beta",
                                           "modpo.margin_beta", "generate", "run.seed", NULL};
    char dir[RUN_PATH_MAX + 64], source[RUN_PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/%s/gen/%s", cfg->output_root, cfg->run_tag, model);
    snprintf(source, sizeof source, "%s/%s/%s", cfg->output_root, cfg->run_tag, model);
    if (!stage_is_done(source))
        return error_set(err, "generate: the %s model is not trained yet (%s is not finished)", model, source);
    StageStatus st;
    if (stage_open_collective(o->comm, dir, cfg, critical, o->force, &st, err)) return -1;
    if (dist_is_root(o->comm))
        fprintf(stderr, "modpo generate %s: %s\n", model, st == STAGE_DONE ? "finished before; skipped" : "starting");
    if (st == STAGE_DONE) return 0;
    if (run_generation(cfg, o->comm, model, dir, err)) return error_prefix(err, "generate %s: ", model);
    /* DONE only once every rank's shard is written */
    if (dist_barrier(o->comm, err) || (dist_is_root(o->comm) && stage_mark_done(dir, NULL, err)))
        return -1;
    return dist_barrier(o->comm, err);
}

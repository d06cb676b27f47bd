/* The run configuration: every key modpo understands, typed, with the seed's
 * defaults, read from a libconfig file plus `--set key=value` overrides and
 * validated as a whole (config_validate lists every problem, not the first). */
#ifndef MODPO_CONFIG_H
#define MODPO_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

#include "error.h"

#define CONFIG_MAX_LIST 32
#define CONFIG_STR_MAX 4096

typedef struct {
    int steps;              /* optimizer steps */
    double learning_rate;
    double weight_decay;
    char scheduler[16];     /* cosine | linear | constant */
    double warmup_ratio;    /* used when warmup_steps == 0 */
    int warmup_steps;
    int batch_size;         /* sequences (SFT) or pairs (DPO/MODPO) per micro-batch */
    int grad_accum;
    double max_grad_norm;   /* 0 disables clipping */
    int eval_steps;
    int eval_size;          /* validation examples per evaluation */
    int save_steps;
    int save_total_limit;
    int log_steps;
} TrainConfig;

typedef struct {
    /* run */
    char output_root[CONFIG_STR_MAX];
    char run_tag[256];
    int seed;
    char device[16];        /* cpu | cuda */
    int threads;            /* 0: OpenMP's default */
    int recompute;          /* cuda: activation recomputation in the backward */
    char optimizer[16];     /* auto | host | backend: where the AdamW step runs */
    bool strict;            /* the paper config: the keys that define a run must be explicit */

    /* model */
    char model_path[CONFIG_STR_MAX];
    char model_preset[64];  /* init-model preset used when model_path does not exist */

    /* data */
    char train_path[CONFIG_STR_MAX];
    char validation_path[CONFIG_STR_MAX];
    bool skip_bad_rows;
    char prompt_template[CONFIG_STR_MAX];
    int max_length;         /* training sequences longer than this (tokens) are dropped */
    char sft_dimension[32];
    char margin_dimension[32];
    char modpo_dimension[32];

    /* lora */
    int lora_r;
    double lora_alpha;
    double lora_dropout;
    char lora_targets[CONFIG_MAX_LIST][32];
    int n_lora_targets;

    TrainConfig sft, dpo, modpo;

    /* dpo (margin adapter) */
    double dpo_beta;
    char dpo_loss[16];      /* sigmoid | hinge */

    /* modpo */
    double modpo_beta;
    double margin_beta;
    char modpo_loss[16];
    double w[CONFIG_MAX_LIST];
    int n_w;

    /* check-margin */
    int check_size;
    double min_accuracy;    /* < 0: no gate */

    /* generate */
    int eval_size;
    int gen_max_length;
    int max_input_length;
    int max_new_tokens;
    int gen_batch_size;
    bool do_sample;
    double temperature;
    int top_k;
    double top_p;
    double repetition_penalty;
    int no_repeat_ngram_size;

    /* dist (MPI runs; docs/distributed.md) */
    int dist_ranks_per_w;   /* ranks that train one w together; 0: automatic */

    /* where each key came from, for messages and for strict mode */
    char source[CONFIG_STR_MAX];
    unsigned char explicit_keys[256]; /* indexed by schema position */
} Config;

/* The seed's defaults. */
void conf_defaults(Config *cfg);

/* Reads a libconfig file (NULL: the embedded conf/tiny.cfg) over the defaults.
 * Unknown keys, wrong types and unparsable files are errors naming file:line
 * and key.  Every problem found is appended to `problems` (newline-separated);
 * returns 0 when there were none. */
int conf_load(Config *cfg, const char *path, char *problems, size_t problems_size);

/* Applies one `key=value` override; the value is parsed by the key's type
 * (lists as comma-separated values). */
int conf_set(Config *cfg, const char *assignment, Error *err);

/* Checks ranges and cross-key rules; appends every problem to `problems`.
 * Returns the number of problems found. */
int conf_validate(const Config *cfg, char *problems, size_t problems_size);

/* Writes the resolved configuration as a libconfig file that config_load reads back. */
void conf_write(const Config *cfg, FILE *out);

/* Lists every key under one of `prefixes` (NULL-terminated; "sft" matches
 * every sft.* key, "modpo.w" that key alone) whose value differs, one line
 * "  key: was X, now Y" each, into out.  Returns the number of differences. */
int conf_diff(const Config *saved, const Config *now, const char *const *prefixes, char *out,
              size_t size);

/* Writes `key: description (default)` for every key, for --help. */
void conf_describe_keys(FILE *out);

/* The text of the embedded default configuration. */
const char *conf_embedded_default(void);

#endif

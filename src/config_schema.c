#include "config_schema.h"

#include <float.h>
#include <limits.h>
#include <string.h>

#define F(field) offsetof(Config, field)
#define BIG 1e300
#define INT_KEY(p, field, lo, req, h) {p, KEY_INT, F(field), 0, 0, lo, INT_MAX, 0, 0, NULL, req, h}
#define FLOAT_KEY(p, field, lo, hi, lo_open, hi_open, req, h) \
    {p, KEY_FLOAT, F(field), 0, 0, lo, hi, lo_open, hi_open, NULL, req, h}
#define BOOL_KEY(p, field, h) {p, KEY_BOOL, F(field), 0, 0, 0, 0, 0, 0, NULL, 0, h}
#define STR_KEY(p, field, req, h) {p, KEY_STRING, F(field), sizeof(((Config *)0)->field), 0, 0, 0, 0, 0, NULL, req, h}
#define CHOICE_KEY(p, field, ch, h) \
    {p, KEY_CHOICE, F(field), sizeof(((Config *)0)->field), 0, 0, 0, 0, 0, ch, 0, h}

#define DIMENSIONS "helpfulness|correctness|coherence|complexity|verbosity|overall"

/* The keys shared by the three training stages (sft, dpo, modpo). */
#define TRAIN_KEYS(sec, t)                                                                      \
    INT_KEY(sec ".steps", t.steps, 1, 0, "optimizer steps"),                                    \
    FLOAT_KEY(sec ".learning_rate", t.learning_rate, 0, 1, 1, 0, 0, "peak learning rate"),      \
    FLOAT_KEY(sec ".weight_decay", t.weight_decay, 0, 1, 0, 0, 0, "AdamW decoupled weight decay"), \
    CHOICE_KEY(sec ".scheduler", t.scheduler, "cosine|linear|constant", "learning-rate schedule"), \
    FLOAT_KEY(sec ".warmup_ratio", t.warmup_ratio, 0, 1, 0, 0, 0, "warmup as a fraction of steps (when warmup_steps = 0)"), \
    INT_KEY(sec ".warmup_steps", t.warmup_steps, 0, 0, "warmup steps (0: use warmup_ratio)"),  \
    INT_KEY(sec ".batch_size", t.batch_size, 1, 0, "examples (SFT) or pairs per micro-batch"), \
    INT_KEY(sec ".grad_accum", t.grad_accum, 1, 0, "micro-batches per optimizer step"),         \
    FLOAT_KEY(sec ".max_grad_norm", t.max_grad_norm, 0, BIG, 0, 0, 0, "global grad-norm clip (0: off)"), \
    INT_KEY(sec ".eval_steps", t.eval_steps, 1, 0, "evaluate every this many steps"),           \
    INT_KEY(sec ".eval_size", t.eval_size, 1, 0, "validation examples per evaluation"),         \
    INT_KEY(sec ".save_steps", t.save_steps, 1, 0, "checkpoint every this many steps"),         \
    INT_KEY(sec ".save_total_limit", t.save_total_limit, 1, 0, "checkpoints kept"),             \
    INT_KEY(sec ".log_steps", t.log_steps, 1, 0, "metrics line every this many steps")

const KeySpec config_schema[] = {
    STR_KEY("run.output_root", output_root, 1, "directory that receives every stage's outputs"),
    STR_KEY("run.run_tag", run_tag, 1, "name of this run (a subdirectory of output_root)"),
    INT_KEY("run.seed", seed, 0, 0, "seed for shuffling, LoRA init and sampling"),
    CHOICE_KEY("run.device", device, "cpu|cuda", "compute backend"),
    INT_KEY("run.threads", threads, 0, 0, "CPU threads (0: OpenMP's default)"),
    BOOL_KEY("run.recompute", recompute,
             "cuda: keep only each layer's input and recompute its activations in the backward "
             "(long sequences; one more forward a step)"),
    CHOICE_KEY("run.optimizer", optimizer, "auto|host|backend",
               "where the clip + AdamW step runs: backend (on the GPU with the gradients, all "
               "moments on every rank), host (gradients to the host, moments sharded over the "
               "ranks, ZeRO-1), auto (backend on GPUs and in one CPU process, host with several CPU "
               "ranks)"),
    BOOL_KEY("run.strict", strict, "require the keys that define a run to be set explicitly"),

    STR_KEY("model.path", model_path, 0, "Hugging Face Llama directory of the base model"),
    CHOICE_KEY("model.preset", model_preset, "tiny|small-100m|llama2-7b",
               "init-model preset used to create model.path when it does not exist"),

    STR_KEY("data.train", train_path, 0, "HelpSteer train split (.jsonl or .jsonl.gz)"),
    STR_KEY("data.validation", validation_path, 0, "HelpSteer validation split"),
    BOOL_KEY("data.skip_bad_rows", skip_bad_rows, "skip and count malformed rows instead of failing"),
    STR_KEY("data.prompt_template", prompt_template, 0, "prompt template containing {raw_prompt}"),
    INT_KEY("data.max_length", max_length, 1, 1, "training sequences longer than this are dropped"),
    CHOICE_KEY("data.sft_dimension", sft_dimension, DIMENSIONS "|all",
               "pairs whose chosen side SFT trains on (all: every row)"),
    CHOICE_KEY("data.margin_dimension", margin_dimension, DIMENSIONS, "dimension of the margin adapter"),
    CHOICE_KEY("data.modpo_dimension", modpo_dimension, DIMENSIONS, "dimension MODPO optimizes"),

    INT_KEY("lora.r", lora_r, 1, 0, "LoRA rank"),
    FLOAT_KEY("lora.alpha", lora_alpha, 0, BIG, 1, 0, 0, "LoRA alpha (scale = alpha / r)"),
    FLOAT_KEY("lora.dropout", lora_dropout, 0, 0, 0, 0, 0, "LoRA dropout (off: only 0 is supported)"),
    {"lora.targets", KEY_CHOICE_LIST, F(lora_targets), sizeof(((Config *)0)->lora_targets[0]),
     F(n_lora_targets), 0, 0, 0, 0, "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj", 0,
     "projections that get LoRA"},

    TRAIN_KEYS("sft", sft),
    TRAIN_KEYS("dpo", dpo),
    FLOAT_KEY("dpo.beta", dpo_beta, 0, BIG, 1, 0, 0, "DPO beta of the margin adapter"),
    CHOICE_KEY("dpo.loss", dpo_loss, "sigmoid|hinge", "DPO loss"),
    TRAIN_KEYS("modpo", modpo),
    FLOAT_KEY("modpo.beta", modpo_beta, 0, BIG, 1, 0, 1, "MODPO beta"),
    FLOAT_KEY("modpo.margin_beta", margin_beta, -BIG, BIG, 0, 0, 1,
              "scale of the margin adapter's implicit reward (> 0: a cost, < 0: a reward)"),
    CHOICE_KEY("modpo.loss", modpo_loss, "sigmoid|hinge", "MODPO loss"),
    {"modpo.w", KEY_FLOAT_LIST, F(w), sizeof(double), F(n_w), 0, 1, 1, 1, NULL, 1,
     "grid of trade-off weights, each strictly between 0 and 1"},

    INT_KEY("margin.check_size", check_size, 1, 0, "validation pairs for check-margin"),
    FLOAT_KEY("margin.min_accuracy", min_accuracy, -1, 1, 0, 0, 0,
              "check-margin fails below this accuracy (negative: no gate)"),

    INT_KEY("generate.eval_size", eval_size, 1, 1, "validation prompts to generate for"),
    INT_KEY("generate.max_length", gen_max_length, 1, 1, "prompt + response tokens at most"),
    INT_KEY("generate.max_input_length", max_input_length, 1, 1, "prompt tokens kept (left-truncated)"),
    INT_KEY("generate.max_new_tokens", max_new_tokens, 1, 0, "response tokens at most"),
    INT_KEY("generate.batch_size", gen_batch_size, 1, 0, "prompts decoded together"),
    BOOL_KEY("generate.do_sample", do_sample, "sample instead of greedy decoding"),
    FLOAT_KEY("generate.temperature", temperature, 0, BIG, 1, 0, 0, "sampling temperature"),
    INT_KEY("generate.top_k", top_k, 0, 0, "sampling keeps the k most likely tokens (0: off; HF's default 50)"),
    FLOAT_KEY("generate.top_p", top_p, 0, 1, 1, 0, 0, "nucleus sampling mass"),
    FLOAT_KEY("generate.repetition_penalty", repetition_penalty, 0, BIG, 1, 0, 0,
              "Hugging Face repetition penalty (1: off)"),
    INT_KEY("generate.no_repeat_ngram_size", no_repeat_ngram_size, 0, 0, "forbid repeating n-grams of this size (0: off)"),

    INT_KEY("dist.ranks_per_w", dist_ranks_per_w, 0, 0,
            "MPI ranks that train one MODPO w together (0: automatic from the ranks and the grid)"),
};

const size_t config_schema_len = sizeof config_schema / sizeof config_schema[0];

const KeySpec *config_schema_find(const char *path)
{
    for (size_t i = 0; i < config_schema_len; i++)
        if (strcmp(config_schema[i].path, path) == 0) return &config_schema[i];
    return NULL;
}

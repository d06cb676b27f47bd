/* modpo init-model --preset NAME --out DIR: a randomly initialised Llama in
 * Hugging Face's format, with a tokenizer, so the pipeline has a model where
 * nothing can be downloaded.  The work is model_init_from_preset's; this file
 * is the command line. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "model_config.h"
#include "model_init.h"
#include "model_io.h"
#include "model_presets.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: modpo init-model --preset NAME --out DIR [--seed N] [--dtype f32|bf16]\n"
            "                        [--tokenizer PATH] [--max-shard-mb N]\n"
            "Writes a randomly initialised Llama (normal(0, 0.02), norms 1) as a Hugging Face\n"
            "directory DIR (config.json, model.safetensors or shards, generation_config.json,\n"
            "tokenizer.json ...).  DIR must not exist or be empty.  Weights are generated\n"
            "tensor by tensor while writing, so llama2-7b needs little memory.\n"
            "  --preset        one of:\n");
    for (size_t i = 0; i < llama_preset_count(); i++)
        fprintf(fp, "                    %-11s %s\n", llama_preset_at(i)->name,
                llama_preset_at(i)->summary);
    fprintf(fp,
            "  --seed          random seed (default 1234)\n"
            "  --dtype         weights on disk (default f32; bf16 for llama2-7b)\n"
            "  --tokenizer     tokenizer directory or file (default "
            MODEL_INIT_DEFAULT_TOKENIZER ",\n"
            "                  relative to the current directory)\n"
            "  --max-shard-mb  shard size limit in MB (default 5000; 0: one file)\n");
}

/* 1: --help, 0: options parsed, -1: error (printed). */
static int parse_args(int argc, char **argv, ModelInitOptions *o)
{
    model_init_options_default(o, NULL, NULL);
    for (int i = 1; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(k, "--help") == 0 || strcmp(k, "-h") == 0) return 1;
        if (!v || k[0] != '-') {
            fprintf(stderr, "modpo init-model: unexpected argument '%s' (see --help)\n", k);
            return -1;
        }
        i++;
        if (strcmp(k, "--preset") == 0) o->preset = v;
        else if (strcmp(k, "--out") == 0) o->out = v;
        else if (strcmp(k, "--tokenizer") == 0) o->tokenizer = v;
        else if (strcmp(k, "--seed") == 0) o->seed = strtoull(v, &end, 10);
        else if (strcmp(k, "--max-shard-mb") == 0)
            o->max_shard_bytes = (size_t)strtoull(v, &end, 10) * 1000000u;
        else if (strcmp(k, "--dtype") == 0 && strcmp(v, "f32") == 0) o->dtype = ST_F32;
        else if (strcmp(k, "--dtype") == 0 && strcmp(v, "bf16") == 0) o->dtype = ST_BF16;
        else {
            fprintf(stderr, "modpo init-model: bad option or value '%s %s' (see --help)\n", k, v);
            return -1;
        }
        if (end && (*end || v[0] == '-' || v[0] == '\0')) {
            fprintf(stderr, "modpo init-model: %s needs a non-negative number, not '%s'\n", k, v);
            return -1;
        }
    }
    if (!o->preset || !o->out) {
        usage(stderr);
        return -1;
    }
    return 0;
}

int cmd_init_model(int argc, char **argv)
{
    ModelInitOptions o;
    int rc = parse_args(argc, argv, &o);
    if (rc > 0) usage(stdout);
    if (rc) return rc > 0 ? 0 : 1;
    Error err = {{0}};
    if (model_init_from_preset(&o, &err)) {
        fprintf(stderr, "modpo init-model: %s\n", err.msg);
        return 1;
    }
    /* Report what was written, read back from the directory itself. */
    char path[PATH_MAX], dtype[32] = "";
    LlamaConfig c;
    snprintf(path, sizeof path, "%s/config.json", o.out);
    if (llama_config_load(path, &c, &err) || llama_config_read_dtype(path, dtype, sizeof dtype, &err)) {
        fprintf(stderr, "modpo init-model: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: preset %s, %zu parameters, vocab %d, %s, seed %llu\n", o.out, o.preset,
           llama_param_count(&c), c.vocab_size, dtype, (unsigned long long)o.seed);
    return 0;
}

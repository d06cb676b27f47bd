/* modpo init-model --preset NAME --out DIR: a randomly initialised Llama in
 * Hugging Face's format, with a tokenizer, so the pipeline has a model where
 * nothing can be downloaded. */
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "commands.h"
#include "fs_util.h"
#include "model_io.h"
#include "model_presets.h"
#include "tokenizer.h"

#define DEFAULT_TOKENIZER "tests/tiny-tokenizer"

typedef struct {
    const char *preset, *out, *tokenizer;
    uint64_t seed;
    SafetensorsDtype dtype; /* ST_N_DTYPES: the preset's default */
    long shard_mb;
} InitArgs;

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
            "  --tokenizer     tokenizer directory or file (default " DEFAULT_TOKENIZER ",\n"
            "                  relative to the current directory)\n"
            "  --max-shard-mb  shard size limit in MB (default 5000; 0: one file)\n");
}

static int parse_args(int argc, char **argv, InitArgs *a)
{
    *a = (InitArgs){NULL, NULL, DEFAULT_TOKENIZER, 1234, ST_N_DTYPES, 5000};
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (strcmp(o, "--help") == 0 || strcmp(o, "-h") == 0) return 1;
        if (!v || o[0] != '-') {
            fprintf(stderr, "modpo init-model: unexpected argument '%s' (see --help)\n", o);
            return -1;
        }
        i++;
        if (strcmp(o, "--preset") == 0) a->preset = v;
        else if (strcmp(o, "--out") == 0) a->out = v;
        else if (strcmp(o, "--tokenizer") == 0) a->tokenizer = v;
        else if (strcmp(o, "--seed") == 0) a->seed = strtoull(v, &end, 10);
        else if (strcmp(o, "--max-shard-mb") == 0) a->shard_mb = strtol(v, &end, 10);
        else if (strcmp(o, "--dtype") == 0 && strcmp(v, "f32") == 0) a->dtype = ST_F32;
        else if (strcmp(o, "--dtype") == 0 && strcmp(v, "bf16") == 0) a->dtype = ST_BF16;
        else {
            fprintf(stderr, "modpo init-model: bad option or value '%s %s' (see --help)\n", o, v);
            return -1;
        }
        if (end && (*end || v[0] == '-' || v[0] == '\0')) {
            fprintf(stderr, "modpo init-model: %s needs a non-negative number, not '%s'\n", o, v);
            return -1;
        }
    }
    if (!a->preset || !a->out) {
        usage(stderr);
        return -1;
    }
    return 0;
}

static int load_tokenizer(const char *path, Tokenizer **tok, Error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return error_set(err, "tokenizer %s not found (run from the repository root or pass "
                         "--tokenizer PATH)", path);
    return S_ISDIR(st.st_mode) ? tokenizer_load_dir(path, tok, err)
                               : tokenizer_load_file(path, tok, err);
}

/* The preset's shape with the tokenizer's vocabulary and special ids. */
static int model_config(const LlamaPreset *p, const Tokenizer *tok, LlamaConfig *c, Error *err)
{
    *c = p->config;
    int tv = tokenizer_vocab_size(tok);
    if (c->vocab_size == 0) c->vocab_size = tv;
    if (c->vocab_size < tv)
        return error_set(err, "preset %s has vocab_size %d but the tokenizer has %d pieces",
                         p->name, c->vocab_size, tv);
    c->bos_token_id = tokenizer_bos_id(tok);
    c->eos_token_id = tokenizer_eos_id(tok);
    return 0;
}

/* Builds DIR.tmp-<pid> and renames it, so DIR appears complete or not at all. */
static int write_dir(const InitArgs *a, const LlamaConfig *c, const Tokenizer *tok, Error *err)
{
    bool empty;
    if (fs_dir_is_empty(a->out, &empty, err)) return -1;
    if (!empty) return error_set(err, "%s is not empty: refusing to overwrite it", a->out);
    char tmp[PATH_MAX], parent[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, a->out, err) || fs_remove_tree(tmp, err)) return -1;
    if (llama_model_write_random(tmp, c, a->seed, a->dtype, (size_t)a->shard_mb * 1000000u, err) ||
        tokenizer_save_hf(tok, tmp, err))
        goto fail;
    if (rename(tmp, a->out) != 0) {
        error_set_errno(err, "rename %s to %s", tmp, a->out);
        goto fail;
    }
    if (fs_dirname(parent, sizeof parent, a->out, err)) return -1;
    return fs_fsync_dir(parent, err);
fail:
    fs_remove_tree(tmp, NULL);
    return -1;
}

int cmd_init_model(int argc, char **argv)
{
    InitArgs a;
    int rc = parse_args(argc, argv, &a);
    if (rc > 0) usage(stdout);
    if (rc) return rc > 0 ? 0 : 1;
    const LlamaPreset *p = llama_preset_find(a.preset);
    if (!p) {
        fprintf(stderr, "modpo init-model: unknown preset '%s'; known:", a.preset);
        for (size_t i = 0; i < llama_preset_count(); i++)
            fprintf(stderr, " %s", llama_preset_at(i)->name);
        fprintf(stderr, "\n");
        return 1;
    }
    if (a.dtype == ST_N_DTYPES) a.dtype = strcmp(p->name, "llama2-7b") == 0 ? ST_BF16 : ST_F32;
    Error err = {{0}};
    Tokenizer *tok = NULL;
    LlamaConfig c;
    rc = load_tokenizer(a.tokenizer, &tok, &err);
    if (rc == 0) rc = model_config(p, tok, &c, &err);
    if (rc == 0) rc = write_dir(&a, &c, tok, &err);
    tokenizer_free(tok);
    if (rc) {
        fprintf(stderr, "modpo init-model: %s\n", err.msg);
        return 1;
    }
    printf("wrote %s: preset %s, %zu parameters, vocab %d, %s, seed %llu\n", a.out, p->name,
           llama_param_count(&c), c.vocab_size, a.dtype == ST_BF16 ? "bf16" : "f32",
           (unsigned long long)a.seed);
    return 0;
}

/* modpo merge MODEL_DIR ADAPTER_DIR --out DIR: fold a PEFT LoRA adapter into
 * its base model and write a full Hugging Face model directory. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "merge.h"

static void usage(FILE *fp)
{
    fprintf(fp,
            "usage: modpo merge MODEL_DIR ADAPTER_DIR --out DIR [--dtype f32|bf16]\n"
            "                   [--max-shard-mb N]\n"
            "Folds the LoRA adapter in ADAPTER_DIR (PEFT format) into the Llama model in\n"
            "MODEL_DIR (W += alpha/r * B A, in fp32) and writes DIR: config.json, the\n"
            "weights, generation_config.json and the base's tokenizer files, loadable by\n"
            "transformers.  DIR must not exist or be empty.\n"
            "  --dtype         weights on disk (default: the base's dtype in config.json)\n"
            "  --max-shard-mb  split the weights into shards of at most N MB (default\n"
            "                  5000; 0 writes one model.safetensors)\n");
}

static int parse_dtype(const char *s, SafetensorsDtype *d)
{
    if (strcmp(s, "f32") == 0 || strcmp(s, "float32") == 0) *d = ST_F32;
    else if (strcmp(s, "bf16") == 0 || strcmp(s, "bfloat16") == 0) *d = ST_BF16;
    else return -1;
    return 0;
}

int cmd_merge(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *out = NULL;
    SafetensorsDtype dtype = ST_N_DTYPES;
    long shard_mb = 5000;
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        int has_value = i + 1 < argc;
        char *end;
        if (strcmp(a, "--out") == 0 && has_value) {
            out = argv[++i];
        } else if (strcmp(a, "--dtype") == 0 && has_value) {
            if (parse_dtype(argv[++i], &dtype)) {
                fprintf(stderr, "modpo merge: --dtype must be f32 or bf16, not '%s'\n", argv[i]);
                return 1;
            }
        } else if (strcmp(a, "--max-shard-mb") == 0 && has_value) {
            shard_mb = strtol(argv[++i], &end, 10);
            if (*end || shard_mb < 0) {
                fprintf(stderr, "modpo merge: --max-shard-mb needs a number >= 0\n");
                return 1;
            }
        } else if (a[0] == '-' || n_pos == 2) {
            fprintf(stderr, "modpo merge: unexpected argument '%s' (see --help)\n", a);
            return 1;
        } else {
            pos[n_pos++] = a;
        }
    }
    if (n_pos != 2 || !out) {
        usage(stderr);
        return 1;
    }
    Error err = {{0}};
    if (merge_model_dir(pos[0], pos[1], out, dtype, (size_t)shard_mb * 1000000u, &err)) {
        fprintf(stderr, "modpo merge: %s\n", err.msg);
        return 1;
    }
    printf("merged %s into %s: wrote %s\n", pos[1], pos[0], out);
    return 0;
}

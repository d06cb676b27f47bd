#include "model_init.h"

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "fs_util.h"
#include "model_io.h"
#include "model_presets.h"
#include "tokenizer.h"

void model_init_options_default(ModelInitOptions *o, const char *preset, const char *out)
{
    *o = (ModelInitOptions){preset, out, MODEL_INIT_DEFAULT_TOKENIZER, 1234, ST_N_DTYPES, 5000000000u};
}

static int load_tokenizer(const char *path, Tokenizer **tok, Error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return error_set(err, "tokenizer %s not found (run from the repository root or pass "
                              "--tokenizer PATH)", path);
    return S_ISDIR(st.st_mode) ? tokenizer_load_dir(path, tok, err) : tokenizer_load_file(path, tok, err);
}

/* The preset's shape with the tokenizer's vocabulary and special ids. */
static int preset_config(const LlamaPreset *p, const Tokenizer *tok, LlamaConfig *c, Error *err)
{
    *c = p->config;
    int tv = tokenizer_vocab_size(tok);
    if (c->vocab_size == 0) c->vocab_size = tv;
    if (c->vocab_size < tv)
        return error_set(err, "preset %s has vocab_size %d but the tokenizer has %d pieces", p->name,
                         c->vocab_size, tv);
    c->bos_token_id = tokenizer_bos_id(tok);
    c->eos_token_id = tokenizer_eos_id(tok);
    return 0;
}

/* Builds OUT.tmp-<pid> and renames it, so OUT appears complete or not at all. */
static int write_dir(const ModelInitOptions *o, SafetensorsDtype dtype, const LlamaConfig *c,
                     const Tokenizer *tok, Error *err)
{
    bool empty;
    if (fs_dir_is_empty(o->out, &empty, err)) return -1;
    if (!empty) return error_set(err, "%s is not empty: refusing to overwrite it", o->out);
    char tmp[PATH_MAX], parent[PATH_MAX];
    if (fs_tmp_name(tmp, sizeof tmp, o->out, err) || fs_remove_tree(tmp, err)) return -1;
    if (fs_dirname(parent, sizeof parent, o->out, err) || fs_mkdir_p(parent, err)) return -1;
    if (llama_model_write_random(tmp, c, o->seed, dtype, o->max_shard_bytes, err) ||
        tokenizer_save_hf(tok, tmp, err))
        goto fail;
    if (rename(tmp, o->out) != 0) {
        error_set_errno(err, "rename %s to %s", tmp, o->out);
        goto fail;
    }
    return fs_fsync_dir(parent, err);
fail:
    fs_remove_tree(tmp, NULL);
    return -1;
}

int model_init_from_preset(const ModelInitOptions *o, Error *err)
{
    const LlamaPreset *p = llama_preset_find(o->preset);
    if (!p) {
        char known[256] = "";
        for (size_t i = 0; i < llama_preset_count(); i++) {
            strncat(known, " ", sizeof known - strlen(known) - 1);
            strncat(known, llama_preset_at(i)->name, sizeof known - strlen(known) - 1);
        }
        return error_set(err, "unknown preset '%s'; known:%s", o->preset, known);
    }
    SafetensorsDtype dtype = o->dtype;
    if (dtype == ST_N_DTYPES) dtype = strcmp(p->name, "llama2-7b") == 0 ? ST_BF16 : ST_F32;
    Tokenizer *tok = NULL;
    LlamaConfig c;
    int rc = load_tokenizer(o->tokenizer, &tok, err) || preset_config(p, tok, &c, err) ||
             write_dir(o, dtype, &c, tok, err);
    tokenizer_free(tok);
    return rc ? -1 : 0;
}

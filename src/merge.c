#include "merge.h"

#include <cblas.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fs_util.h"
#include "lora_peft.h"
#include "model_config.h"
#include "model_io.h"

/* The base weight a target adapts, and its [out, in] shape. */
static float *target_weight(LlamaModel *m, int layer, LoraTarget t, int *out, int *in)
{
    const LlamaConfig *c = &m->config;
    LlamaLayerWeights *w = &m->weights.layers[layer];
    int d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    switch (t) {
    case LORA_Q_PROJ: *out = d; *in = d; return w->q_proj;
    case LORA_K_PROJ: *out = kv; *in = d; return w->k_proj;
    case LORA_V_PROJ: *out = kv; *in = d; return w->v_proj;
    case LORA_O_PROJ: *out = d; *in = d; return w->o_proj;
    case LORA_GATE_PROJ: *out = f; *in = d; return w->gate_proj;
    case LORA_UP_PROJ: *out = f; *in = d; return w->up_proj;
    case LORA_DOWN_PROJ: *out = d; *in = f; return w->down_proj;
    default: return NULL;
    }
}

/* W += scale * (B @ A), with the product formed first and then scaled, the
 * order PEFT's get_delta_weight uses, so merged weights match it to the ulp
 * rather than to a re-association. */
static void merge_one(float *w, const float *a, const float *b, int out, int in, int r,
                      float scale, float *delta)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, out, in, r, 1.0f, b, r, a, in, 0.0f,
                delta, in);
    long long n = (long long)out * in;
#pragma omp parallel for if (n > 65536) schedule(static)
    for (long long i = 0; i < n; i++) w[i] += delta[i] * scale;
}

/* Checks every adapted projection before touching any, so a mismatched
 * adapter leaves the model as it was. */
static int check_shapes(LlamaModel *m, const LoraAdapter *a, size_t *max_elems, Error *err)
{
    if (a->n_layers != m->config.num_hidden_layers)
        return error_set(err, "merge: adapter has %d layers, model %d", a->n_layers,
                         m->config.num_hidden_layers);
    *max_elems = 1;
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            int out, in;
            if (!s || !target_weight(m, l, (LoraTarget)t, &out, &in)) continue;
            if (s->out_features != out || s->in_features != in)
                return error_set(err, "merge: layer %d %s: adapter is [%d, %d], model [%d, %d]",
                                 l, lora_target_name((LoraTarget)t), s->out_features,
                                 s->in_features, out, in);
            if ((size_t)out * (size_t)in > *max_elems) *max_elems = (size_t)out * (size_t)in;
        }
    }
    return 0;
}

int lora_merge_into(LlamaModel *m, const LoraAdapter *a, Error *err)
{
    size_t max_elems = 1;
    if (check_shapes(m, a, &max_elems, err)) return -1;
    float *delta = malloc(max_elems * sizeof *delta);
    if (!delta) return error_set(err, "merge: out of memory");
    float scale = lora_scale(&a->spec);
    for (int l = 0; l < a->n_layers; l++) {
        for (int t = 0; t < LORA_N_TARGETS; t++) {
            const LoraSlot *s = lora_slot(a, l, (LoraTarget)t);
            int out, in;
            float *w = s ? target_weight(m, l, (LoraTarget)t, &out, &in) : NULL;
            if (!w) continue;
            merge_one(w, a->params + s->a_offset, a->params + s->b_offset, out, in,
                      a->spec.rank, scale, delta);
        }
    }
    free(delta);
    return 0;
}

/* ST_N_DTYPES: the precision config.json declares for the base. */
static int resolve_dtype(const char *model_dir, SafetensorsDtype *dtype, Error *err)
{
    if (*dtype != ST_N_DTYPES) return 0;
    char path[PATH_MAX], name[32];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    if (llama_config_read_dtype(path, name, sizeof name, err)) return -1;
    *dtype = strcmp(name, "bfloat16") == 0 ? ST_BF16 : ST_F32;
    return 0;
}

/* Writes the merged model and the base's tokenizer into `tmp`, then renames
 * it to `out`: the output directory appears complete or not at all. */
static int publish_dir(const LlamaModel *m, const char *model_dir, const char *tmp,
                       const char *out, SafetensorsDtype dtype, size_t max_shard_bytes,
                       Error *err)
{
    if (fs_remove_tree(tmp, err) || llama_model_save(tmp, m, dtype, max_shard_bytes, err) ||
        llama_copy_tokenizer_files(model_dir, tmp, err) < 0)
        goto fail;
    if (rename(tmp, out) != 0) { /* an empty `out` is replaced */
        error_set_errno(err, "rename %s to %s", tmp, out);
        goto fail;
    }
    char parent[PATH_MAX];
    if (fs_dirname(parent, sizeof parent, out, err)) return -1;
    return fs_fsync_dir(parent, err);
fail:
    fs_remove_tree(tmp, NULL);
    return -1;
}

int merge_model_dir(const char *model_dir, const char *adapter_dir, const char *out_dir,
                    SafetensorsDtype dtype, size_t max_shard_bytes, Error *err)
{
    char out[PATH_MAX], tmp[PATH_MAX];
    size_t len = strlen(out_dir);
    while (len > 1 && out_dir[len - 1] == '/') len--; /* "dir/" -> "dir" */
    if (len >= sizeof out) return error_set(err, "%s: path too long", out_dir);
    memcpy(out, out_dir, len);
    out[len] = '\0';
    bool empty;
    if (fs_dir_is_empty(out, &empty, err)) return -1;
    if (!empty) return error_set(err, "%s is not empty: refusing to overwrite it", out);
    if (fs_tmp_name(tmp, sizeof tmp, out, err) || resolve_dtype(model_dir, &dtype, err))
        return -1;
    LlamaModel m;
    LoraAdapter a;
    if (llama_model_load(model_dir, &m, err)) return -1;
    int rc = lora_peft_load(adapter_dir, &m.config, &a, err);
    if (rc) {
        llama_model_free(&m);
        return -1;
    }
    rc = lora_merge_into(&m, &a, err);
    if (rc == 0) rc = publish_dir(&m, model_dir, tmp, out, dtype, max_shard_bytes, err);
    lora_adapter_free(&a);
    llama_model_free(&m);
    return rc;
}

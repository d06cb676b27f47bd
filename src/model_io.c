#include "model_io.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fs_util.h"
#include "model_config.h"

/* ------------------------------------------------------- tensor catalogue */

enum { LAYER_TENSORS = 9 };

static const struct {
    const char *suffix;
    size_t offset; /* into LlamaLayerWeights */
} layer_tensors[LAYER_TENSORS] = {
    {"input_layernorm.weight", offsetof(LlamaLayerWeights, input_layernorm)},
    {"self_attn.q_proj.weight", offsetof(LlamaLayerWeights, q_proj)},
    {"self_attn.k_proj.weight", offsetof(LlamaLayerWeights, k_proj)},
    {"self_attn.v_proj.weight", offsetof(LlamaLayerWeights, v_proj)},
    {"self_attn.o_proj.weight", offsetof(LlamaLayerWeights, o_proj)},
    {"post_attention_layernorm.weight", offsetof(LlamaLayerWeights, post_attention_layernorm)},
    {"mlp.gate_proj.weight", offsetof(LlamaLayerWeights, gate_proj)},
    {"mlp.up_proj.weight", offsetof(LlamaLayerWeights, up_proj)},
    {"mlp.down_proj.weight", offsetof(LlamaLayerWeights, down_proj)},
};

size_t llama_tensor_count(const LlamaConfig *c)
{
    return 2 + (size_t)c->num_hidden_layers * LAYER_TENSORS + (c->tie_word_embeddings ? 0 : 1);
}

static void set_shape(LlamaTensorInfo *t, int64_t rows, int64_t cols)
{
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->n_elements = (size_t)rows * (size_t)(cols ? cols : 1);
}

static void layer_tensor_info(const LlamaConfig *c, int layer, int k, LlamaTensorInfo *t)
{
    int64_t d = c->hidden_size, kv = llama_kv_dim(c), f = c->intermediate_size;
    static const int is_norm[LAYER_TENSORS] = {1, 0, 0, 0, 0, 1, 0, 0, 0};
    snprintf(t->name, sizeof t->name, "model.layers.%d.%s", layer, layer_tensors[k].suffix);
    t->layer = layer;
    t->is_norm = is_norm[k];
    switch (k) {
    case 0: case 5: set_shape(t, d, 0); break;
    case 1: case 4: set_shape(t, d, d); break;
    case 2: case 3: set_shape(t, kv, d); break;
    case 6: case 7: set_shape(t, f, d); break;
    default: set_shape(t, d, f); break;
    }
}

void llama_tensor_info(const LlamaConfig *c, size_t i, LlamaTensorInfo *t)
{
    size_t n_layer = (size_t)c->num_hidden_layers * LAYER_TENSORS;
    memset(t, 0, sizeof *t);
    t->layer = -1;
    if (i == 0) {
        snprintf(t->name, sizeof t->name, "model.embed_tokens.weight");
        set_shape(t, c->vocab_size, c->hidden_size);
    } else if (i <= n_layer) {
        layer_tensor_info(c, (int)((i - 1) / LAYER_TENSORS), (int)((i - 1) % LAYER_TENSORS), t);
    } else if (i == n_layer + 1) {
        snprintf(t->name, sizeof t->name, "model.norm.weight");
        set_shape(t, c->hidden_size, 0);
        t->is_norm = 1;
    } else {
        snprintf(t->name, sizeof t->name, "lm_head.weight");
        set_shape(t, c->vocab_size, c->hidden_size);
    }
}

float **llama_tensor_slot(LlamaWeights *w, const LlamaConfig *c, size_t i)
{
    size_t n_layer = (size_t)c->num_hidden_layers * LAYER_TENSORS;
    if (i == 0) return &w->embed_tokens;
    if (i <= n_layer) {
        LlamaLayerWeights *lw = &w->layers[(i - 1) / LAYER_TENSORS];
        return (float **)((char *)lw + layer_tensors[(i - 1) % LAYER_TENSORS].offset);
    }
    if (i == n_layer + 1) return &w->norm;
    return &w->lm_head;
}

size_t llama_param_count(const LlamaConfig *c)
{
    size_t total = 0, n = llama_tensor_count(c);
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        total += t.n_elements;
    }
    return total;
}

/* ------------------------------------------------------------ allocation */

enum { ALIGN_FLOATS = 16 }; /* each tensor starts on a 64-byte boundary */

static size_t padded(size_t n) { return (n + ALIGN_FLOATS - 1) / ALIGN_FLOATS * ALIGN_FLOATS; }

void llama_model_free(LlamaModel *m)
{
    if (!m) return;
    free(m->storage);
    free(m->weights.layers);
    memset(m, 0, sizeof *m);
}

/* A 7B model is 27 GB of fp32.  Zeroing it from one thread on 4 KB pages
 * was what made loading slow (15 s on the GPU machine), not the reading: on
 * 2 MB pages (where the kernel grants them) it takes 13k page faults instead
 * of 6.6M, and every thread zeroes its share. */
#define HUGE_PAGE ((size_t)2 << 20)

static void *storage_alloc(size_t bytes)
{
    size_t rounded = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    void *p = aligned_alloc(bytes >= HUGE_PAGE ? HUGE_PAGE : ALIGN_FLOATS * sizeof(float),
                            bytes >= HUGE_PAGE ? rounded : bytes);
#ifdef MADV_HUGEPAGE
    if (p && bytes >= HUGE_PAGE) madvise(p, rounded, MADV_HUGEPAGE);
#endif
    return p;
}

static void zero_in_parallel(void *p, size_t bytes)
{
    const size_t chunk = (size_t)64 << 20;
    long n_chunks = (long)((bytes + chunk - 1) / chunk);
#pragma omp parallel for if (n_chunks > 1) schedule(static)
    for (long i = 0; i < n_chunks; i++) {
        size_t off = (size_t)i * chunk, len = bytes - off < chunk ? bytes - off : chunk;
        memset((char *)p + off, 0, len);
    }
}

int llama_model_alloc(LlamaModel *m, const LlamaConfig *c, Error *err)
{
    memset(m, 0, sizeof *m);
    if (llama_config_validate(c, err)) return -1;
    m->config = *c;
    size_t n = llama_tensor_count(c), total = 0;
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        total += padded(t.n_elements);
    }
    m->storage_bytes = total * sizeof(float);
    m->storage = storage_alloc(m->storage_bytes);
    m->weights.layers = calloc((size_t)c->num_hidden_layers, sizeof *m->weights.layers);
    if (!m->storage || !m->weights.layers) {
        llama_model_free(m);
        return error_set(err, "out of memory for a model of %zu parameters", total);
    }
    zero_in_parallel(m->storage, m->storage_bytes);
    float *p = m->storage;
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        *llama_tensor_slot(&m->weights, c, i) = p;
        p += padded(t.n_elements);
    }
    if (c->tie_word_embeddings) m->weights.lm_head = m->weights.embed_tokens;
    return 0;
}

/* --------------------------------------------------------- random values */

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t name_seed(uint64_t seed, const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    return mix64(seed ^ mix64(h));
}

/* Elements 2p and 2p+1 of a normal(0, std) tensor: both Box-Muller outputs
 * of uniform pair p.  A pure function of (stream, p), so chunks can be
 * produced in any order and in parallel. */
static void normal_pair(uint64_t stream, uint64_t p, float std, float out[2])
{
    uint64_t a = mix64(stream + (2 * p + 1) * 0x9E3779B97F4A7C15ull);
    uint64_t b = mix64(stream + (2 * p + 2) * 0x9E3779B97F4A7C15ull);
    double u1 = ((double)(a >> 11) + 1.0) * (1.0 / 9007199254740992.0); /* (0, 1] */
    double u2 = (double)(b >> 11) * (1.0 / 9007199254740992.0);
    double r = std * sqrt(-2.0 * log(u1)), t = 6.283185307179586 * u2;
    out[0] = (float)(r * cos(t));
    out[1] = (float)(r * sin(t));
}

typedef struct {
    uint64_t stream;
    int is_norm;
} RandomTensor;

/* HF's LlamaPreTrainedModel._init_weights: normal(0, initializer_range 0.02)
 * for Linear and Embedding, ones for RMSNorm. */
static int fill_random(void *ctx, size_t start, size_t count, float *dst, Error *err)
{
    (void)err;
    const RandomTensor *r = ctx;
    if (count == 0) return 0;
    if (r->is_norm) {
        for (size_t i = 0; i < count; i++) dst[i] = 1.0f;
        return 0;
    }
    long long first = (long long)(start / 2), last = (long long)((start + count - 1) / 2);
#pragma omp parallel for if (last - first > 8192) schedule(static)
    for (long long p = first; p <= last; p++) {
        float z[2];
        normal_pair(r->stream, (uint64_t)p, 0.02f, z);
        for (int k = 0; k < 2; k++) {
            size_t i = 2 * (size_t)p + (size_t)k;
            if (i >= start && i < start + count) dst[i - start] = z[k];
        }
    }
    return 0;
}

static RandomTensor random_tensor(uint64_t seed, const LlamaTensorInfo *t)
{
    RandomTensor r = {name_seed(seed, t->name), t->is_norm};
    return r;
}

int llama_model_init_random(LlamaModel *m, const LlamaConfig *c, uint64_t seed, Error *err)
{
    if (llama_model_alloc(m, c, err)) return -1;
    size_t n = llama_tensor_count(c);
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        RandomTensor r = random_tensor(seed, &t);
        fill_random(&r, 0, t.n_elements, *llama_tensor_slot(&m->weights, c, i), err);
    }
    return 0;
}

/* --------------------------------------------------------------- loading */

static char *path_join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The weight files of a directory: one model.safetensors, or the shards an
 * index names, each opened once. */
typedef struct {
    json_t *weight_map;      /* NULL for a single file */
    char *index_path;
    SafetensorsFile **files;
    size_t n_files;
} WeightFiles;

static void weight_files_close(WeightFiles *wf)
{
    for (size_t i = 0; i < wf->n_files; i++) safetensors_close(wf->files[i]);
    free(wf->files);
    free(wf->index_path);
    json_decref(wf->weight_map);
    memset(wf, 0, sizeof *wf);
}

static int open_shard(WeightFiles *wf, const char *dir, const char *name, Error *err)
{
    char *path = path_join(dir, name);
    if (!path) return error_set(err, "out of memory");
    for (size_t i = 0; i < wf->n_files; i++) {
        if (strcmp(safetensors_path(wf->files[i]), path) == 0) {
            free(path);
            return 0; /* already open: most shards hold many tensors */
        }
    }
    SafetensorsFile *f;
    int rc = safetensors_open(path, &f, err);
    free(path);
    if (rc) return -1;
    wf->files[wf->n_files++] = f;
    return 0;
}

static int open_index(WeightFiles *wf, const char *dir, Error *err)
{
    json_error_t jerr;
    json_t *root = json_load_file(wf->index_path, 0, &jerr);
    if (!root)
        return error_set(err, "%s: malformed JSON (line %d: %s)", wf->index_path, jerr.line,
                         jerr.text);
    json_t *map = json_object_get(root, "weight_map");
    if (!json_is_object(map)) {
        json_decref(root);
        return error_set(err, "%s: missing object \"weight_map\"", wf->index_path);
    }
    wf->weight_map = json_incref(map);
    json_decref(root);
    wf->files = calloc(json_object_size(map) + 1, sizeof *wf->files);
    if (!wf->files) return error_set(err, "out of memory");
    const char *name;
    json_t *file;
    json_object_foreach(map, name, file) {
        if (!json_is_string(file) || strchr(json_string_value(file), '/'))
            return error_set(err, "%s: weight_map entry for '%s' is not a file name in the "
                             "directory", wf->index_path, name);
        if (open_shard(wf, dir, json_string_value(file), err)) return -1;
    }
    return 0;
}

static int weight_files_open(WeightFiles *wf, const char *dir, Error *err)
{
    memset(wf, 0, sizeof *wf);
    wf->index_path = path_join(dir, "model.safetensors.index.json");
    if (!wf->index_path) return error_set(err, "out of memory");
    if (file_exists(wf->index_path)) {
        if (open_index(wf, dir, err)) goto fail;
        return 0;
    }
    char *single = path_join(dir, "model.safetensors");
    if (!single) return error_set(err, "out of memory");
    if (!file_exists(single)) {
        error_set(err, "%s: neither model.safetensors nor model.safetensors.index.json", dir);
        free(single);
        goto fail;
    }
    wf->files = calloc(1, sizeof *wf->files);
    int rc = wf->files ? safetensors_open(single, &wf->files[0], err)
                       : error_set(err, "out of memory");
    free(single);
    if (rc) goto fail;
    wf->n_files = 1;
    return 0;
fail:
    weight_files_close(wf);
    return -1;
}

/* The open file that holds tensor `name`. */
static const SafetensorsFile *file_for(const WeightFiles *wf, const char *dir, const char *name,
                                       Error *err)
{
    if (!wf->weight_map) return wf->files[0];
    json_t *file = json_object_get(wf->weight_map, name);
    if (!file) {
        error_set(err, "%s: missing tensor '%s' (not in weight_map)", wf->index_path, name);
        return NULL;
    }
    char *path = path_join(dir, json_string_value(file));
    for (size_t i = 0; path && i < wf->n_files; i++) {
        if (strcmp(safetensors_path(wf->files[i]), path) == 0) {
            free(path);
            return wf->files[i];
        }
    }
    free(path);
    error_set(err, "%s: shard for '%s' not opened", wf->index_path, name);
    return NULL;
}

static int load_tensors(LlamaModel *m, const WeightFiles *wf, const char *dir, Error *err)
{
    size_t n = llama_tensor_count(&m->config);
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(&m->config, i, &t);
        const SafetensorsFile *f = file_for(wf, dir, t.name, err);
        if (!f) return -1;
        float *dst = *llama_tensor_slot(&m->weights, &m->config, i);
        if (safetensors_read_f32(f, t.name, dst, t.ndim, t.shape, err)) return -1;
    }
    return 0;
}

int llama_model_load(const char *dir, LlamaModel *m, Error *err)
{
    memset(m, 0, sizeof *m);
    char *config_path = path_join(dir, "config.json");
    if (!config_path) return error_set(err, "out of memory");
    LlamaConfig c;
    int rc = llama_config_load(config_path, &c, err);
    free(config_path);
    if (rc) return -1;
    WeightFiles wf;
    if (weight_files_open(&wf, dir, err)) return -1;
    rc = llama_model_alloc(m, &c, err);
    if (rc == 0) rc = load_tensors(m, &wf, dir, err);
    weight_files_close(&wf);
    if (rc) llama_model_free(m);
    return rc;
}

/* --------------------------------------------------------------- saving */

/* Where each tensor's values come from while writing: a model in memory or
 * the random generator. */
typedef struct {
    const LlamaModel *model; /* NULL: random */
    RandomTensor *random;    /* [n tensors] when model is NULL */
} TensorSource;

static int add_tensor(SafetensorsWriter *w, const LlamaConfig *c, size_t i,
                      const TensorSource *src, SafetensorsDtype dtype, Error *err)
{
    LlamaTensorInfo t;
    llama_tensor_info(c, i, &t);
    if (src->model) {
        const float *data = *llama_tensor_slot((LlamaWeights *)&src->model->weights, c, i);
        return safetensors_writer_add(w, t.name, dtype, t.ndim, t.shape, data, err);
    }
    return safetensors_writer_add_fill(w, t.name, dtype, t.ndim, t.shape, fill_random,
                                       &src->random[i], err);
}

/* Plans shards: shard_of[i] for each tensor, returns the shard count. */
static size_t plan_shards(const LlamaConfig *c, size_t elem, size_t max_bytes, size_t *shard_of)
{
    size_t n = llama_tensor_count(c), shard = 0, used = 0;
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        size_t b = t.n_elements * elem;
        if (max_bytes && used > 0 && used + b > max_bytes) {
            shard++;
            used = 0;
        }
        used += b;
        shard_of[i] = shard;
    }
    return shard + 1;
}

static void shard_name(char *buf, size_t size, size_t k, size_t n)
{
    if (n == 1) snprintf(buf, size, "model.safetensors");
    else snprintf(buf, size, "model-%05zu-of-%05zu.safetensors", k + 1, n);
}

static int write_shard(const char *dir, const LlamaConfig *c, const TensorSource *src,
                       SafetensorsDtype dtype, const size_t *shard_of, size_t k, size_t n_shards,
                       json_t *weight_map, Error *err)
{
    char name[64];
    shard_name(name, sizeof name, k, n_shards);
    SafetensorsWriter *w = safetensors_writer_new();
    if (!w) return error_set(err, "out of memory");
    int rc = 0;
    size_t n = llama_tensor_count(c);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (shard_of[i] != k) continue;
        rc = add_tensor(w, c, i, src, dtype, err);
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        if (rc == 0 && weight_map) json_object_set_new(weight_map, t.name, json_string(name));
    }
    char *path = path_join(dir, name);
    if (rc == 0) rc = path ? safetensors_writer_write(w, path, err) : error_set(err, "out of memory");
    free(path);
    safetensors_writer_free(w);
    return rc;
}

static int write_index(const char *dir, json_t *weight_map, size_t total_bytes, size_t n_params,
                       Error *err)
{
    json_t *root = json_pack("{s:{s:I, s:I}, s:O}", "metadata", "total_parameters",
                             (json_int_t)n_params, "total_size", (json_int_t)total_bytes,
                             "weight_map", weight_map);
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    char *path = path_join(dir, "model.safetensors.index.json");
    int rc = text && path ? fs_write_atomic(path, text, strlen(text), err)
                          : error_set(err, "out of memory");
    free(text);
    free(path);
    return rc;
}

static int write_configs(const char *dir, const LlamaConfig *c, SafetensorsDtype dtype, Error *err)
{
    char *gen = path_join(dir, "generation_config.json");
    char *cfg = path_join(dir, "config.json");
    int rc = gen && cfg ? 0 : error_set(err, "out of memory");
    if (rc == 0) rc = llama_generation_config_save(gen, c, err);
    if (rc == 0)
        rc = llama_config_save(cfg, c, dtype == ST_BF16 ? "bfloat16" : "float32", err);
    free(gen);
    free(cfg);
    return rc;
}

static int write_model(const char *dir, const LlamaConfig *c, const TensorSource *src,
                       SafetensorsDtype dtype, size_t max_shard_bytes, Error *err)
{
    if (dtype != ST_F32 && dtype != ST_BF16)
        return error_set(err, "model weights can be written as F32 or BF16, not %s",
                         safetensors_dtype_name(dtype));
    if (llama_config_validate(c, err) || fs_mkdir_p(dir, err)) return -1;
    size_t n = llama_tensor_count(c), elem = safetensors_dtype_size(dtype);
    size_t *shard_of = calloc(n, sizeof *shard_of);
    json_t *weight_map = json_object();
    if (!shard_of || !weight_map) {
        free(shard_of);
        json_decref(weight_map);
        return error_set(err, "out of memory");
    }
    size_t n_shards = plan_shards(c, elem, max_shard_bytes, shard_of);
    int rc = 0;
    for (size_t k = 0; rc == 0 && k < n_shards; k++)
        rc = write_shard(dir, c, src, dtype, shard_of, k, n_shards,
                         n_shards > 1 ? weight_map : NULL, err);
    if (rc == 0 && n_shards > 1)
        rc = write_index(dir, weight_map, llama_param_count(c) * elem, llama_param_count(c), err);
    if (rc == 0) rc = write_configs(dir, c, dtype, err);
    json_decref(weight_map);
    free(shard_of);
    return rc;
}

int llama_model_save(const char *dir, const LlamaModel *m, SafetensorsDtype dtype,
                     size_t max_shard_bytes, Error *err)
{
    TensorSource src = {m, NULL};
    return write_model(dir, &m->config, &src, dtype, max_shard_bytes, err);
}

int llama_model_write_random(const char *dir, const LlamaConfig *c, uint64_t seed,
                             SafetensorsDtype dtype, size_t max_shard_bytes, Error *err)
{
    if (llama_config_validate(c, err)) return -1;
    size_t n = llama_tensor_count(c);
    TensorSource src = {NULL, calloc(n, sizeof(RandomTensor))};
    if (!src.random) return error_set(err, "out of memory");
    for (size_t i = 0; i < n; i++) {
        LlamaTensorInfo t;
        llama_tensor_info(c, i, &t);
        src.random[i] = random_tensor(seed, &t);
    }
    int rc = write_model(dir, c, &src, dtype, max_shard_bytes, err);
    free(src.random);
    return rc;
}

/* ------------------------------------------------------ tokenizer files */

static int copy_file(const char *src_dir, const char *dst_dir, const char *name, Error *err)
{
    char *src = path_join(src_dir, name), *dst = path_join(dst_dir, name);
    char *data = NULL;
    size_t n = 0;
    int rc = src && dst ? 0 : error_set(err, "out of memory");
    if (rc == 0 && !file_exists(src)) rc = 1; /* nothing to copy */
    if (rc == 0) rc = fs_read_file(src, &data, &n, err);
    if (rc == 0) rc = fs_write_atomic(dst, data, n, err);
    free(data);
    free(src);
    free(dst);
    return rc;
}

int llama_copy_tokenizer_files(const char *src_dir, const char *dst_dir, Error *err)
{
    static const char *const names[] = {
        "tokenizer.json", "tokenizer.model", "tokenizer_config.json",
        "special_tokens_map.json", "added_tokens.json",
    };
    int copied = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        int rc = copy_file(src_dir, dst_dir, names[i], err);
        if (rc < 0) return -1;
        copied += rc == 0;
    }
    if (copy_file(src_dir, dst_dir, "generation_config.json", err) < 0) return -1;
    return copied;
}

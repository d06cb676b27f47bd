#include "model_session.h"

#include <cblas.h>
#include <omp.h>
#include <string.h>

#include "model_io.h"
#ifdef MODPO_CUDA
#include "cuda_backend.h"
#endif

static int create_backend(ModelSession *s, const Config *cfg, Error *err)
{
    if (strcmp(cfg->device, "cpu") == 0) return cpu_backend_create(&s->model, NULL, &s->backend, err);
#ifdef MODPO_CUDA
    if (strcmp(cfg->device, "cuda") == 0) {
        if (cuda_backend_create(&s->model, cuda_backend_default_device(), &s->backend, err))
            return -1;
        cuda_backend_set_recompute(s->backend, cfg->recompute);
        return 0;
    }
#endif
    return error_set(err, "run.device = \"%s\": this build has no %s backend (use run.device = \"cpu\")",
                     cfg->device, cfg->device);
}

/* run.threads bounds both thread pools the CPU backend uses: OpenMP's and
 * OpenBLAS's own, which would otherwise each take every core. */
static void set_threads(int threads)
{
    if (threads <= 0) return;
    omp_set_num_threads(threads);
    openblas_set_num_threads(threads);
}

int model_session_open(ModelSession *s, const Config *cfg, const char *model_dir, Error *err)
{
    memset(s, 0, sizeof *s);
    set_threads(cfg->threads);
    if (llama_model_load(model_dir, &s->model, err)) return -1;
    if (create_backend(s, cfg, err)) {
        llama_model_free(&s->model);
        return -1;
    }
    return 0;
}

void model_session_close(ModelSession *s)
{
    backend_destroy(s->backend);
    llama_model_free(&s->model);
    memset(s, 0, sizeof *s);
}

int model_new_adapter(const Config *cfg, const LlamaConfig *mc, uint64_t seed, LoraAdapter *a,
                      Error *err)
{
    LoraSpec spec = {cfg->lora_r, (float)cfg->lora_alpha, 0};
    for (int i = 0; i < cfg->n_lora_targets; i++) {
        int t = lora_target_from_name(cfg->lora_targets[i]);
        if (t < 0) return error_set(err, "lora.targets: unknown projection '%s'", cfg->lora_targets[i]);
        spec.target_mask |= 1u << t;
    }
    if (lora_adapter_init(a, mc, spec, err)) return -1;
    lora_adapter_randomize(a, seed);
    return 0;
}

int model_bind_adapter(ModelSession *s, LoraAdapter *host, BackendAdapter **out, Error *err)
{
    return s->backend->ops->adapter_bind(s->backend, host, out, err);
}

/* A model ready to compute: weights loaded from a HF directory and a backend
 * (run.device) built on them. */
#ifndef MODPO_MODEL_SESSION_H
#define MODPO_MODEL_SESSION_H

#include "backend.h"
#include "config.h"
#include "llama.h"

typedef struct {
    LlamaModel model;
    Backend *backend;
} ModelSession;

int model_session_open(ModelSession *s, const Config *cfg, const char *model_dir, Error *err);
void model_session_close(ModelSession *s);

/* A fresh policy adapter (lora.* of the config), A random from seed, B zero. */
int model_new_adapter(const Config *cfg, const LlamaConfig *mc, uint64_t seed, LoraAdapter *a,
                      Error *err);

/* Binds `host` to the session's backend. */
int model_bind_adapter(ModelSession *s, LoraAdapter *host, BackendAdapter **out, Error *err);

#endif

/* The base model of a run: model.path, created from model.preset with
 * init-model's defaults when it does not exist (the tiny run needs no
 * download). */
#include <stdio.h>

#include "fs_util.h"
#include "model_init.h"
#include "stages.h"

int stage_ensure_base_model(const Config *cfg, Error *err)
{
    char config_json[CONFIG_STR_MAX + 16];
    snprintf(config_json, sizeof config_json, "%s/config.json", cfg->model_path);
    if (fs_exists(config_json)) return 0;
    if (fs_exists(cfg->model_path))
        return error_set(err, "model.path %s exists but has no config.json", cfg->model_path);
    fprintf(stderr, "modpo: %s does not exist; creating it from preset '%s'\n", cfg->model_path,
            cfg->model_preset);
    ModelInitOptions o;
    model_init_options_default(&o, cfg->model_preset, cfg->model_path);
    o.seed = (uint64_t)cfg->seed;
    return model_init_from_preset(&o, err);
}

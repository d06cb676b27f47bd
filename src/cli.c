#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROBLEMS_MAX 16384

static int is_config_path(const char *arg)
{
    return arg[0] != '-';
}

int cli_load_config(int argc, char **argv, Config *cfg, CliArgs *args)
{
    memset(args, 0, sizeof *args);
    args->rest = calloc((size_t)argc + 1, sizeof *args->rest);
    if (!args->rest) { fprintf(stderr, "modpo: out of memory\n"); return 1; }
    const char *sets[256];
    int n_sets = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            args->help = true;
        } else if (strcmp(argv[i], "--set") == 0) {
            if (i + 1 >= argc) { fprintf(stderr, "modpo %s: --set needs key=value\n", argv[0]); return 1; }
            if (n_sets == 256) { fprintf(stderr, "modpo %s: too many --set options\n", argv[0]); return 1; }
            sets[n_sets++] = argv[++i];
        } else if (strncmp(argv[i], "--set=", 6) == 0) {
            if (n_sets == 256) { fprintf(stderr, "modpo %s: too many --set options\n", argv[0]); return 1; }
            sets[n_sets++] = argv[i] + 6;
        } else if (!args->config_path && args->n_rest == 0 && is_config_path(argv[i])) {
            args->config_path = argv[i];
        } else {
            args->rest[args->n_rest++] = argv[i];
        }
    }
    if (args->help) return 0;

    char *problems = calloc(1, PROBLEMS_MAX);
    if (!problems) { fprintf(stderr, "modpo: out of memory\n"); return 1; }
    conf_defaults(cfg);
    int n = conf_load(cfg, args->config_path, problems, PROBLEMS_MAX);
    for (int i = 0; i < n_sets; i++) {
        Error err;
        if (conf_set(cfg, sets[i], &err)) {
            size_t used = strlen(problems);
            snprintf(problems + used, PROBLEMS_MAX - used, "%s\n", err.msg);
            n++;
        }
    }
    n += conf_validate(cfg, problems, PROBLEMS_MAX);
    if (n) fprintf(stderr, "modpo %s: %d configuration problem%s:\n%s", argv[0], n, n == 1 ? "" : "s",
                   problems);
    free(problems);
    return n ? 1 : 0;
}

void cli_args_free(CliArgs *args)
{
    free(args->rest);
    memset(args, 0, sizeof *args);
}

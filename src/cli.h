/* The command-line shape shared by every command that takes a configuration:
 *     modpo COMMAND [CONFIG] [--set key=value ...] [command options]
 * Without CONFIG the embedded conf/tiny.cfg is used. */
#ifndef MODPO_CLI_H
#define MODPO_CLI_H

#include <stdbool.h>

#include "config.h"

typedef struct {
    const char *config_path; /* NULL: embedded default */
    bool help;
    int n_rest;              /* arguments the command must interpret itself */
    char **rest;             /* points into a malloc'd array; free with cli_args_free */
} CliArgs;

/* Splits argv (argv[0] is the command name) into CONFIG, --set overrides and the
 * rest.  Loads and validates the configuration; prints every problem to stderr
 * and returns non-zero when there is any. */
int cli_load_config(int argc, char **argv, Config *cfg, CliArgs *args);
void cli_args_free(CliArgs *args);

#endif

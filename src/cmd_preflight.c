/* modpo preflight CONFIG: validate a configuration and print it resolved. */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"
#include "commands.h"

int cmd_preflight(int argc, char **argv)
{
    Config *cfg = malloc(sizeof *cfg);
    if (!cfg) { fprintf(stderr, "modpo preflight: out of memory\n"); return 1; }
    CliArgs args;
    int rc = cli_load_config(argc, argv, cfg, &args);
    if (rc == 0 && args.help) {
        printf("usage: modpo preflight [CONFIG] [--set key=value ...]\n"
               "Checks every key of CONFIG (default: the embedded conf/tiny.cfg) and prints the\n"
               "resolved configuration, or every problem found (exit status 1).\n");
    } else if (rc == 0 && args.n_rest > 0) {
        fprintf(stderr, "modpo preflight: unexpected argument '%s'\n", args.rest[0]);
        rc = 2;
    } else if (rc == 0) {
        printf("# modpo resolved configuration (from %s)\n", cfg->source);
        conf_write(cfg, stdout);
    }
    cli_args_free(&args);
    free(cfg);
    return rc;
}

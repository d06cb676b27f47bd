/* modpo: the HelpSteer MODPO pipeline.  `main` only finds the command. */
#include <hdf5.h>
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "config.h"
#include "dist/dist_world.h"

#define MODPO_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out, "usage: modpo <command> [CONFIG] [--set key=value ...] [options]\n"
                 "       modpo <command> --help\n"
                 "       modpo --help-config   (every configuration key with its default)\n\n"
                 "commands:\n");
    for (const Command *c = modpo_commands; c->name; c++)
        fprintf(out, "  %-12s %s\n", c->name, c->summary);
    fprintf(out, "\nWithout CONFIG a command uses the embedded conf/tiny.cfg.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) { usage(stderr); return 2; }
    /* Our checkpoint code turns HDF5 failures into messages; HDF5's own
     * stack dumps (and 1.10's "infinite loop closing library" after a
     * rejected corrupt file) would only bury them. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) { printf("modpo %s\n", MODPO_VERSION); return 0; }
    if (strcmp(argv[1], "--help-config") == 0) {
        printf("configuration keys (libconfig groups; override with --set key=value):\n");
        conf_describe_keys(stdout);
        return 0;
    }
    for (const Command *c = modpo_commands; c->name; c++) {
        if (strcmp(argv[1], c->name) != 0) continue;
        /* One MPI world around the command: under mpirun/srun every rank
         * runs it; alone, a singleton world of one rank. */
        DistWorld world;
        Error err;
        if (dist_world_init(&world, &argc, &argv, &err)) {
            dist_fail("modpo", err.msg, 1);
            return 1;
        }
        int rc = c->run(argc - 1, argv + 1);
        dist_world_finalize(&world);
        return rc;
    }
    fprintf(stderr, "modpo: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}

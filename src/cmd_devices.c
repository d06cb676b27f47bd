/* modpo devices: which compute devices this build can use. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#ifdef MODPO_CUDA
#include "cuda/cuda_devices.h"
#endif

int cmd_devices(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        printf("usage: modpo devices\nLists the GPUs the CUDA build sees (CPU builds say so).\n");
        return 0;
    }
#ifdef MODPO_CUDA
    char msg[512];
    int n = cuda_describe_devices(stdout, msg, sizeof msg);
    if (n < 0) {
        fprintf(stderr, "modpo devices: %s\n", msg);
        return 1;
    }
    return 0;
#else
    printf("cpu (this binary was built without CUDA; rebuild with `make CUDA=1`)\n");
    return 0;
#endif
}

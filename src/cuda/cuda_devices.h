/* What the CUDA build can see: devices, and the cuBLAS/NCCL it linked. */
#ifndef MODPO_CUDA_DEVICES_H
#define MODPO_CUDA_DEVICES_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Prints one line per visible GPU and the library versions; returns the number
 * of GPUs, or -1 with a message in `err_msg` when the CUDA runtime fails. */
int cuda_describe_devices(FILE *out, char *err_msg, size_t err_size);

#ifdef __cplusplus
}
#endif

#endif

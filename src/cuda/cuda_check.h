/* Error checking for the CUDA backend: every CUDA runtime and cuBLAS call is
 * checked and a failure becomes an Error (file, line, call, message) that the
 * enclosing function returns as -1.  Nothing here exits.  The macros assume
 * an `Error *err` in scope. */
#ifndef MODPO_CUDA_CHECK_H
#define MODPO_CUDA_CHECK_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "error.h"
}

#define CU_TRY(call)                                                                       \
    do {                                                                                   \
        cudaError_t e_ = (call);                                                           \
        if (e_ != cudaSuccess)                                                             \
            return error_set(err, "%s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                             cudaGetErrorString(e_));                                      \
    } while (0)

#define CUBLAS_TRY(call)                                                                   \
    do {                                                                                   \
        cublasStatus_t s_ = (call);                                                        \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                   \
            return error_set(err, "%s:%d: %s: %s", __FILE__, __LINE__, #call,              \
                             cublasGetStatusString(s_));                                   \
    } while (0)

/* After a kernel launch: launch-configuration errors show up here;
 * asynchronous faults surface at a later call or at sync. */
#define CU_LAUNCHED() CU_TRY(cudaGetLastError())

/* Propagates a -1 from a helper that already filled err. */
#define TRY(expr)                                                                          \
    do {                                                                                   \
        if ((expr) != 0) return -1;                                                        \
    } while (0)

#endif

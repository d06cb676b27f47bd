#include "cuda_devices.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <nccl.h>

extern "C" int cuda_describe_devices(FILE *out, char *err_msg, size_t err_size)
{
    int n = 0;
    cudaError_t rc = cudaGetDeviceCount(&n);
    if (rc != cudaSuccess) {
        snprintf(err_msg, err_size, "cudaGetDeviceCount: %s", cudaGetErrorString(rc));
        return -1;
    }
    int runtime = 0, driver = 0, nccl = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    ncclGetVersion(&nccl);
    fprintf(out, "CUDA runtime %d, driver %d, cuBLAS %d, NCCL %d\n", runtime, driver,
            (int)cublasGetCudartVersion(), nccl);
    for (int i = 0; i < n; i++) {
        cudaDeviceProp p;
        rc = cudaGetDeviceProperties(&p, i);
        if (rc != cudaSuccess) {
            snprintf(err_msg, err_size, "cudaGetDeviceProperties(%d): %s", i, cudaGetErrorString(rc));
            return -1;
        }
        fprintf(out, "GPU %d: %s, sm_%d%d, %.1f GiB, %d SMs\n", i, p.name, p.major, p.minor,
                (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p.multiProcessorCount);
    }
    return n;
}

/* Stream-ordered bump allocation for the CUDA backend (cuda_kernels.cuh). */
#include "cuda/cuda_kernels.cuh"

#include <stdlib.h>

#define ALIGN 256
#define MIN_BLOCK ((size_t)16 << 20)

struct CuBlock {
    CuBlock *next;
    char *base;
    size_t cap, used;
};

void *cu_arena_alloc(CuArena *a, size_t bytes)
{
    if (a->failed) return NULL;
    bytes = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    if (bytes == 0) bytes = ALIGN;
    CuBlock *b = a->head;
    if (!b || b->cap - b->used < bytes) {
        b = (CuBlock *)calloc(1, sizeof *b);
        if (!b) {
            a->failed = 1;
            a->error = cudaErrorMemoryAllocation;
            return NULL;
        }
        b->cap = bytes > MIN_BLOCK ? bytes : MIN_BLOCK;
        cudaError_t e = cudaMallocAsync((void **)&b->base, b->cap, a->stream);
        if (e != cudaSuccess) {
            (void)cudaGetLastError(); /* clear the sticky-less allocation error */
            free(b);
            a->failed = 1;
            a->error = e;
            return NULL;
        }
        b->next = a->head;
        a->head = b;
    }
    void *p = b->base + b->used;
    /* Testing: 0xFF bytes are NaN in bf16 and fp32, so a read of anything
     * not written since the allocation shows in the results. */
    if (a->poison && cudaMemsetAsync(p, 0xFF, bytes, a->stream) != cudaSuccess) {
        a->failed = 1;
        a->error = cudaGetLastError();
        return NULL;
    }
    b->used += bytes;
    a->total += bytes;
    return p;
}

int cu_arena_check(CuArena *a, const char *what, Error *err)
{
    if (!a->failed) return 0;
    return error_set(err, "out of device memory for %s (%zu bytes in use): %s", what, a->total,
                     cudaGetErrorString(a->error));
}

static int free_blocks(CuArena *a, Error *err)
{
    cudaError_t first = cudaSuccess;
    while (a->head) {
        CuBlock *b = a->head;
        a->head = b->next;
        cudaError_t e = cudaFreeAsync(b->base, a->stream);
        if (e != cudaSuccess && first == cudaSuccess) first = e;
        free(b);
    }
    if (first != cudaSuccess)
        return error_set(err, "cudaFreeAsync: %s", cudaGetErrorString(first));
    return 0;
}

int cu_arena_reset(CuArena *a, Error *err)
{
    size_t total = a->total;
    int several = a->head && a->head->next;
    a->total = 0;
    a->failed = 0;
    if (!several) {
        if (a->head) a->head->used = 0;
        return 0;
    }
    /* The pass needed several blocks: one block of the total from now on. */
    TRY(free_blocks(a, err));
    if (cu_arena_alloc(a, total) == NULL) return cu_arena_check(a, "an arena", err);
    a->head->used = 0;
    a->total = 0;
    return 0;
}

const void *cu_arena_base(const CuArena *a)
{
    return a->head ? a->head->base : NULL;
}

void cu_arena_free(CuArena *a)
{
    free_blocks(a, NULL);
    a->total = 0;
}

/* Bump allocation for one pass of the CPU backend (see cpu_kernels.h). */
#include "cpu_kernels.h"

#include <stdlib.h>

/* 64 bytes: a cache line, and enough for any SIMD load BLAS does. */
#define ARENA_ALIGN 64

struct CpuBlock {
    CpuBlock *next;
    size_t cap, used;
    unsigned char *mem;
};

static CpuBlock *block_new(size_t cap)
{
    CpuBlock *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->mem = aligned_alloc(ARENA_ALIGN, cap);
    if (!b->mem) {
        free(b);
        return NULL;
    }
    b->next = NULL;
    b->cap = cap;
    b->used = 0;
    return b;
}

void *cpu_arena_alloc(CpuArena *a, size_t bytes)
{
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (bytes == 0) bytes = ARENA_ALIGN;
    CpuBlock *h = a->head;
    if (!h || h->cap - h->used < bytes) {
        size_t cap = h ? 2 * h->cap : (size_t)1 << 20;
        if (cap < bytes) cap = bytes;
        CpuBlock *nb = block_new(cap);
        if (!nb) {
            a->failed = 1;
            return NULL;
        }
        nb->next = h;
        a->head = h = nb;
    }
    void *p = h->mem + h->used;
    h->used += bytes;
    a->total += bytes;
    return p;
}

float *cpu_arena_floats(CpuArena *a, size_t n)
{
    return cpu_arena_alloc(a, n * sizeof(float));
}

static void free_blocks(CpuBlock *b)
{
    while (b) {
        CpuBlock *next = b->next;
        free(b->mem);
        free(b);
        b = next;
    }
}

void cpu_arena_reset(CpuArena *a)
{
    if (a->head && a->head->next) {
        /* The pass needed several blocks: next time one block holds it all. */
        size_t total = a->total;
        free_blocks(a->head);
        a->head = block_new(total);
    }
    if (a->head) a->head->used = 0;
    a->total = 0;
    a->failed = 0;
}

void cpu_arena_free(CpuArena *a)
{
    free_blocks(a->head);
    a->head = NULL;
    a->total = 0;
    a->failed = 0;
}

/* Decode steps replayed as one CUDA graph (MODPO_CUDA_GRAPHS, default on).
 *
 * A decode step of a 7B model is a few hundred launches.  Replayed as one
 * graph, batch 8 and 64 steps took 16-22% less time on an H100; batch 1
 * did not change, its GPU work being the limit (bench/NOTES-gpu.md step
 * 15).  A step's
 * launches depend on nothing but the number of rows and the addresses of
 * the buffers it uses -- positions, tokens and cache rows are device arrays
 * uploaded before the step (cuda_decode.cu) -- so one captured step can be
 * replayed for every later step with the same key.
 *
 * Capturing must not allocate: a captured cudaMallocAsync would belong to
 * the graph.  So a key is captured only on its second consecutive use, when
 * the first, ordinary run has sized the scratch arena and the workspaces;
 * the key includes their addresses, and a capture that moved any of them is
 * refused as an internal error. */
#include "cuda/cuda_kernels.cuh"

#include <string.h>

static void key_of(const CuState *st, const KvCache *kv, const BackendAdapter *a, int n_rows,
                   CuDecodeKey *key)
{
    memset(key, 0, sizeof *key);
    key->cache = kv->impl;
    key->cache_keys = ((const CuKv *)kv->impl)->k;
    key->n_slots = kv->n_slots;
    key->max_len = kv->max_len;
    key->adapter = a;
    key->adapter_params = a ? ((const CuAdapter *)a->impl)->pbf : NULL;
    key->scratch = cu_arena_base(&st->scratch);
    key->rope = st->rope_cos;
    key->split_ws = st->split_ws;
    key->attn_ws = st->attn_ws;
    key->n_rows = n_rows;
}

static int key_equal(const CuDecodeKey *x, const CuDecodeKey *y)
{
    return memcmp(x, y, sizeof *x) == 0;
}

void cu_decode_graph_drop(CuState *st)
{
    CuDecodeGraph *g = &st->graph;
    if (g->exec) {
        cudaStreamSynchronize(st->stream); /* a queued replay may still run it */
        cudaGraphExecDestroy(g->exec);
    }
    long launches = g->launches;
    memset(g, 0, sizeof *g);
    g->launches = launches;
}

static int launch(CuState *st, float **logits, Error *err)
{
    CU_TRY(cudaGraphLaunch(st->graph.exec, st->stream));
    st->graph.launches++;
    *logits = st->graph.logits;
    return 0;
}

static int capture(CuState *st, const KvCache *kv, CuStepBody body, void *ctx, float **logits,
                   Error *err)
{
    CuDecodeGraph *g = &st->graph;
    CU_TRY(cudaStreamBeginCapture(st->stream, cudaStreamCaptureModeThreadLocal));
    int rc = body(st, ctx, logits, err);
    cudaGraph_t graph = NULL;
    cudaError_t e = cudaStreamEndCapture(st->stream, &graph);
    if (rc == 0 && e != cudaSuccess)
        rc = error_set(err, "capturing a decode step: %s", cudaGetErrorString(e));
    CuDecodeKey after;
    key_of(st, kv, g->key.adapter, g->key.n_rows, &after);
    if (rc == 0 && !key_equal(&after, &g->key))
        rc = error_set(err, "capturing a decode step: a buffer moved during the capture "
                       "(internal error; MODPO_CUDA_GRAPHS=0 avoids graphs)");
    if (rc == 0) {
        e = cudaGraphInstantiate(&g->exec, graph, 0);
        if (e != cudaSuccess)
            rc = error_set(err, "instantiating a decode graph: %s", cudaGetErrorString(e));
    }
    if (graph) cudaGraphDestroy(graph);
    if (rc) {
        (void)cudaGetLastError();
        g->exec = NULL;
        g->seen = 0;
        return -1;
    }
    g->logits = *logits;
    return 0;
}

int cu_decode_graph_run(CuState *st, const KvCache *kv, const BackendAdapter *a, int n_rows,
                        CuStepBody body, void *ctx, float **logits, Error *err)
{
    if (!st->graphs || st->prof) return body(st, ctx, logits, err);
    CuDecodeGraph *g = &st->graph;
    CuDecodeKey key;
    key_of(st, kv, a, n_rows, &key);
    if (g->exec && key_equal(&key, &g->key)) return launch(st, logits, err);
    if (!g->seen || !key_equal(&key, &g->key)) { /* first use: an ordinary run sizes the buffers */
        cu_decode_graph_drop(st);
        g->key = key;
        g->seen = 1;
        return body(st, ctx, logits, err);
    }
    TRY(capture(st, kv, body, ctx, logits, err));
    return launch(st, logits, err);
}

/* Row-major GEMMs on cuBLAS: bf16 operands, fp32 compute, bf16 or fp32
 * output.  cuBLAS is column-major; a row-major C = op(A) op(B) is the
 * column-major C^T = op(B)^T op(A)^T, so the operands swap and keep their
 * transpose flags and leading dimensions. */
#include "cuda/cuda_kernels.cuh"
#include "cuda/cuda_reduce.cuh"

int cu_gemm(CuState *st, int ta, int tb, int m, int n, int k, float alpha, const bf16 *A,
            int lda, const bf16 *B, int ldb, float beta, void *C, int c_f32, int ldc,
            Error *err)
{
    if (m <= 0 || n <= 0) return 0;
    CUBLAS_TRY(cublasGemmEx(st->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                            n, m, k, &alpha, B, CUDA_R_16BF, ldb, A, CUDA_R_16BF, lda, &beta, C,
                            c_f32 ? CUDA_R_32F : CUDA_R_16BF, ldc, CUBLAS_COMPUTE_32F,
                            CUBLAS_GEMM_DEFAULT));
    return 0;
}

int cu_gemm_strided(CuState *st, int ta, int tb, int m, int n, int k, float alpha, const bf16 *A,
                    int lda, long long stride_a, const bf16 *B, int ldb, long long stride_b,
                    float beta, void *C, int c_f32, int ldc, long long stride_c, int batch,
                    Error *err)
{
    if (m <= 0 || n <= 0 || batch <= 0) return 0;
    CUBLAS_TRY(cublasGemmStridedBatchedEx(
        st->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha,
        B, CUDA_R_16BF, ldb, stride_b, A, CUDA_R_16BF, lda, stride_a, &beta, C,
        c_f32 ? CUDA_R_32F : CUDA_R_16BF, ldc, stride_c, batch, CUBLAS_COMPUTE_32F,
        CUBLAS_GEMM_DEFAULT));
    return 0;
}

/* ---- decode: a few rows times a weight matrix, at memory speed ----
 * y[r, o] = beta * y[r, o] + alpha * sum_k x[r, k] W[o, k] for n <= GEMV_MAX_ROWS
 * rows.  cuBLAS tiles such a product over the outputs only and leaves most of
 * the card idle; here a warp owns one output, reads W's row once with 16-byte
 * loads and applies it to every row of x (which stays in L1/L2).  Several
 * products that read the same x (q/k/v, gate/up) go in one launch: a decode
 * step reads every weight once, and fewer, longer kernels keep more of the
 * card streaming. */
#define GEMV_WARPS 8

struct GemvLaunch {
    CuNormedX norm; /* with XS == 2: x is RMSNorm(norm.x rows) */
    CuGluX glu;     /* with XS == 3: x is SwiGLU(glu.gate, glu.up) */
    int dependent;  /* launched as a programmatic dependent (st->pdl) */
    int trigger_early; /* dependents may launch at this one's start (st->pdl == 2), else at each block's end */
    int trigger_last;  /* ... or once each block starts its last round of rows (st->pdl == 3) */
    int prefetch;   /* first rows into L2 before x is formed (st->gemv_prefetch) */
    const bf16 *up_w; /* with GLU: part 0 is gate's rows into act, these are up's */
    CuGemvPart part[GEMV_MAX_PARTS];
    int first_block[GEMV_MAX_PARTS + 1]; /* part p owns blocks [first_block[p], first_block[p+1]) */
    int count;
};

/* Lane 0's dot products of one weight row with each of x's NR rows.  W is
 * read once per token, so its loads stream past L1 (__ldcs) and leave the
 * cache to x. */
template <int NR>
__device__ __forceinline__ void row_dots(const bf16 *__restrict__ w, int in, const bf16 *__restrict__ x,
                                         int lane, float *acc)
{
#pragma unroll
    for (int r = 0; r < NR; r++) acc[r] = 0.0f;
#pragma unroll 4
    for (int k = lane * 8; k < in; k += 32 * 8) {
        uint4 wr = __ldcs((const uint4 *)(w + k));
        const __nv_bfloat162 *wh = (const __nv_bfloat162 *)&wr;
#pragma unroll
        for (int r = 0; r < NR; r++) {
            uint4 xr = *(const uint4 *)(x + (size_t)r * in + k);
            const __nv_bfloat162 *xh = (const __nv_bfloat162 *)&xr;
#pragma unroll
            for (int j = 0; j < 4; j++) {
                float2 a = __bfloat1622float2(wh[j]), b = __bfloat1622float2(xh[j]);
                acc[r] += a.x * b.x + a.y * b.y;
            }
        }
    }
#pragma unroll
    for (int r = 0; r < NR; r++)
        for (int off = 16; off > 0; off >>= 1) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], off);
}

/* What a GEMV writes for a dot product v over the y it had. */
__device__ __forceinline__ float gemv_value(float alpha, float beta, float prev, float v)
{
    return beta * prev + alpha * v;
}

/* One warp's output row `o` of part p. */
template <int NR, class Y>
__device__ __forceinline__ void gemv_row(const CuGemvPart &part, int o, int in, const bf16 *__restrict__ x,
                                         float alpha, float beta, int lane)
{
    float acc[NR];
    row_dots<NR>(part.w + (size_t)o * in, in, x, lane, acc);
    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < NR; r++) {
        Y *dst = (Y *)part.y + (size_t)r * part.out + o;
        float prev = beta != 0.0f ? (float)*dst : 0.0f;
        *dst = (Y)gemv_value(alpha, beta, prev, acc[r]);
    }
}

/* Row o of SwiGLU(gate, up): part.w is gate's weights, up_w up's, part.y
 * the bf16 act.  gate and up are rounded to bf16 as the GEMV into them
 * would store them (alpha 1, beta 0), so act has the SwiGLU kernel's bits. */
template <int NR>
__device__ __forceinline__ void gemv_row_glu(const CuGemvPart &part, const bf16 *__restrict__ up_w, int o,
                                             int in, const bf16 *__restrict__ x, int lane)
{
    float g[NR], u[NR];
    row_dots<NR>(part.w + (size_t)o * in, in, x, lane, g);
    row_dots<NR>(up_w + (size_t)o * in, in, x, lane, u);
    if (lane != 0) return;
#pragma unroll
    for (int r = 0; r < NR; r++)
        ((bf16 *)part.y)[(size_t)r * part.out + o] =
            swiglu_one(__float2bfloat16(gemv_value(1.0f, 0.0f, 0.0f, g[r])),
                       __float2bfloat16(gemv_value(1.0f, 0.0f, 0.0f, u[r])));
}

/* The launch's blocks each cover GEMV_WARPS rows of one part; the grid is
 * a few blocks per SM that walk them in strides, so every warp streams
 * weights to the end instead of a last partial wave.  With XS, x is staged
 * in shared memory first. */
/* Bytes of its first row each warp asks into L2 before waiting on the
 * kernel before (pdl_wait) or forming x (the norm or SwiGLU prologue, when
 * no weight load is in flight otherwise): at 4 blocks of 8 warps per SM
 * about 17 MB, a third of an H100's L2. */
#define GEMV_PREFETCH_BYTES 4096

/* The weights this block reads first, into L2, while the kernel before may
 * still be running or x is being formed; then the wait for that kernel. */
__device__ __forceinline__ void gemv_prefetch_then_wait(const GemvLaunch &g, int in, int warp,
                                                        int lane)
{
    int b = blockIdx.x, p = 0;
    if ((g.dependent || g.prefetch) && lane == 0 && b < g.first_block[g.count]) {
        while (p + 1 < g.count && b >= g.first_block[p + 1]) p++;
        int o = (b - g.first_block[p]) * GEMV_WARPS + warp;
        unsigned row = (unsigned)in * sizeof(bf16);
        if (o < g.part[p].out)
            prefetch_l2(g.part[p].w + (size_t)o * in, row < GEMV_PREFETCH_BYTES ? row : GEMV_PREFETCH_BYTES);
    }
    pdl_wait();
}

/* x's n 16-byte pieces into shared memory as asynchronous copies, all in
 * flight at once: one load and store at a time, down_proj's 11008-wide x
 * took six round trips to L2 before its first weight load, and with the
 * loads batched into registers the compiler still paired each store with
 * the next load.  The caller's __syncthreads follows. */
__device__ __forceinline__ void stage_x(uint4 *__restrict__ xs, const uint4 *__restrict__ x, int n)
{
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        unsigned dst = (unsigned)__cvta_generic_to_shared(xs + i);
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(x + i) : "memory");
    }
    asm volatile("cp.async.wait_all;\n" ::: "memory");
}

/* x: XS 0 read from global memory, 1 copied to shared memory, 2 normalised
 * into shared memory from g.norm, 3 formed there from g.glu.  GLU: part 0
 * pairs gate's rows with g.up_w's into SwiGLU (gemv_row_glu). */
template <int NR, int XS, class Y, bool GLU = false>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
    gemv_kernel(GemvLaunch g, int in, const bf16 *__restrict__ x, float alpha, float beta)
{
    extern __shared__ uint4 xs[];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, total = g.first_block[g.count];
    gemv_prefetch_then_wait(g, in, warp, lane);
    if (g.trigger_early) pdl_trigger();
    if (XS == 1) {
        stage_x(xs, (const uint4 *)x, NR * in / 8);
        __syncthreads();
    }
    if (XS == 2) {
        __shared__ float red[32];
#pragma unroll 1
        for (int r = 0; r < NR; r++) /* rmsnorm_fwd_kernel's rows, with its 256 threads */
            rmsnorm_row(g.norm.x + (size_t)(g.norm.rows ? g.norm.rows[r] : r) * in, g.norm.w, in,
                        g.norm.eps, (bf16 *)xs + (size_t)r * in, red);
        __syncthreads();
    }
    if (XS == 3) { /* as swiglu_fwd_kernel, two values a thread */
        const __nv_bfloat162 *g2 = (const __nv_bfloat162 *)g.glu.gate, *u2 = (const __nv_bfloat162 *)g.glu.up;
        __nv_bfloat162 *x2 = (__nv_bfloat162 *)xs;
        const int n2 = NR * in / 2, step = blockDim.x;
        for (int i0 = threadIdx.x; i0 < n2; i0 += ROW_BATCH * step) { /* loads in flight together */
            __nv_bfloat162 gv[ROW_BATCH], uv[ROW_BATCH];
#pragma unroll
            for (int u = 0; u < ROW_BATCH; u++)
                if (i0 + u * step < n2) {
                    gv[u] = g2[i0 + u * step];
                    uv[u] = u2[i0 + u * step];
                }
#pragma unroll
            for (int u = 0; u < ROW_BATCH; u++)
                if (i0 + u * step < n2) x2[i0 + u * step] = swiglu_pair(gv[u], uv[u]);
        }
        __syncthreads();
    }
    const bf16 *xx = XS ? (const bf16 *)xs : x;
    for (int b = blockIdx.x; b < total; b += gridDim.x) {
        int p = 0;
        while (p + 1 < g.count && b >= g.first_block[p + 1]) p++;
        const int o = (b - g.first_block[p]) * GEMV_WARPS + warp;
        /* The next kernel's blocks then prefetch while this round streams. */
        if (g.trigger_last && b + (int)gridDim.x >= total) pdl_trigger();
        const bf16 *px = g.part[p].x ? g.part[p].x : xx;
        if (o >= g.part[p].out) continue;
        if (GLU) gemv_row_glu<NR>(g.part[p], g.up_w, o, in, px, lane);
        else gemv_row<NR, Y>(g.part[p], o, in, px, alpha, beta, lane);
    }
    /* Once every block is here the next kernel's blocks may take the SMs
     * this launch's tail leaves idle, and ask their weights into L2. */
    pdl_trigger();
}

static int aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

/* What the kernel can do, whatever the GEMV is chosen for. */
static int gemv_shape_ok(int n, int in) { return n >= 1 && n <= GEMV_MAX_ROWS && in % 8 == 0; }

int cu_gemv_usable(const CuState *st, int n, int in) { return n <= st->gemv_max_rows && gemv_shape_ok(n, in); }

/* Measured on an H200 (bench/NOTES-gpu.md step 11): 4 blocks of 8 warps
 * per SM stream the 7B decode weights fastest (3.08 TB/s, 2.60 with one
 * block per 8 rows). */
#define GEMV_BLOCKS_PER_SM 4
#define GEMV_SMEM_MAX (48 * 1024) /* x staged only when it fits the default limit */

/* With st->pdl the launch may overlap the kernel before it (pdl_wait). */
template <class Kernel>
static cudaError_t gemv_start(CuState *st, Kernel kernel, int grid, size_t smem, const GemvLaunch &g,
                              int in, const bf16 *x, float alpha, float beta)
{
    CuLaunch l;
    cu_launch_init(&l, st, dim3(grid), dim3(GEMV_WARPS * 32), smem);
    return cudaLaunchKernelEx(&l.cfg, kernel, g, in, x, alpha, beta);
}

template <class Y, int XS, bool GLU = false>
static cudaError_t gemv_run(CuState *st, int n, int in, const bf16 *x, const GemvLaunch &g,
                            float alpha, float beta, int grid, size_t smem)
{
    switch (n) {
#define CASE(k) case k: return gemv_start(st, gemv_kernel<k, XS, Y, GLU>, grid, smem, g, in, x, alpha, beta);
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8)
#undef CASE
    }
    return cudaErrorInvalidValue;
}

template <class Y>
static int gemv_launch(CuState *st, int n, int in, const bf16 *x, const GemvLaunch &g, float alpha,
                       float beta, Error *err)
{
    int total = g.first_block[g.count], cap = GEMV_BLOCKS_PER_SM * st->n_sms;
    /* As many rounds as the resident blocks need, shared evenly: 2752 row
     * groups (gate/up) on 528 blocks are 5.2 rounds, and in the last one
     * most blocks would idle; 459 blocks do exactly 6 each (H100: a batch-1
     * step 6.33 -> 6.23 ms, NOTES-gpu.md step 17). */
    int rounds = cap > 0 ? (total + cap - 1) / cap : 1;
    int grid = (total + rounds - 1) / rounds;
    size_t smem = (size_t)n * in * sizeof(bf16);
    cudaError_t e = g.up_w             ? gemv_run<bf16, 2, true>(st, n, in, NULL, g, alpha, beta, grid, smem)
                    : g.norm.x           ? gemv_run<Y, 2>(st, n, in, NULL, g, alpha, beta, grid, smem)
                    : g.glu.gate                 ? gemv_run<Y, 3>(st, n, in, NULL, g, alpha, beta, grid, smem)
                    : x && smem <= GEMV_SMEM_MAX ? gemv_run<Y, 1>(st, n, in, x, g, alpha, beta, grid, smem)
                                                 : gemv_run<Y, 0>(st, n, in, x, g, alpha, beta, grid, 0);
    CU_TRY(e);
    CU_LAUNCHED();
    return 0;
}

int cu_gemv_staged_usable(const CuState *st, int n, int in)
{
    return cu_gemv_usable(st, n, in) && (size_t)n * in * sizeof(bf16) <= GEMV_SMEM_MAX;
}

/* x, or nx, or glu: where the launch's x comes from; up_w: SwiGLU in the
 * epilogue (cu_gemv_glu_normed). */
static int gemv_many(CuState *st, int n, int in, const bf16 *x, const CuNormedX *nx,
                     const CuGluX *glu, const bf16 *up_w, const CuGemvPart *parts, int count,
                     float alpha, float beta, int y_f32, Error *err)
{
    if (count < 1 || count > GEMV_MAX_PARTS)
        return error_set(err, "gemv: %d products in one launch (1 to %d)", count, GEMV_MAX_PARTS);
    if (!gemv_shape_ok(n, in))
        return error_set(err, "gemv: %d rows of %d (need <= %d rows, a multiple of 8 wide)", n, in,
                         GEMV_MAX_ROWS);
    int staged = nx || glu;
    if (staged && (size_t)n * in * sizeof(bf16) > GEMV_SMEM_MAX)
        return error_set(err, "gemv: %d rows of %d formed in shared memory do not fit it", n, in);
    if (glu && (in % 2 || !aligned16(glu->gate) || !aligned16(glu->up)))
        return error_set(err, "gemv: SwiGLU rows of %d not in aligned pairs", in);
    if (up_w && (!nx || count != 1 || y_f32 || !aligned16(up_w)))
        return error_set(err, "gemv: SwiGLU epilogue needs normed x, one part, bf16 out, aligned up_proj");
    GemvLaunch g = {};
    g.up_w = up_w;
    g.count = count;
    g.dependent = st->pdl != 0;
    g.trigger_early = st->pdl == 2;
    g.trigger_last = st->pdl == 3;
    g.prefetch = st->gemv_prefetch;
    if (nx) g.norm = *nx;
    if (glu) g.glu = *glu;
    for (int p = 0; p < count; p++) {
        const bf16 *px = parts[p].x ? parts[p].x : x;
        if ((!px && !staged) || (px && !aligned16(px)) || !aligned16(parts[p].w))
            return error_set(err, "gemv: part %d's x or weights missing or not 16-byte aligned", p);
        g.part[p] = parts[p];
        g.first_block[p + 1] = g.first_block[p] + (parts[p].out + GEMV_WARPS - 1) / GEMV_WARPS;
    }
    if (y_f32) return gemv_launch<float>(st, n, in, x, g, alpha, beta, err);
    return gemv_launch<bf16>(st, n, in, x, g, alpha, beta, err);
}

int cu_gemv_many(CuState *st, int n, int in, const bf16 *x, const CuGemvPart *parts, int count,
                 float alpha, float beta, int y_f32, Error *err)
{
    return gemv_many(st, n, in, x, NULL, NULL, NULL, parts, count, alpha, beta, y_f32, err);
}

int cu_gemv_many_normed(CuState *st, int n, int in, const CuNormedX *nx, const CuGemvPart *parts,
                        int count, float alpha, float beta, int y_f32, Error *err)
{
    return gemv_many(st, n, in, NULL, nx, NULL, NULL, parts, count, alpha, beta, y_f32, err);
}

int cu_gemv_many_glu(CuState *st, int n, int in, const CuGluX *glu, const CuGemvPart *parts,
                     int count, float alpha, float beta, int y_f32, Error *err)
{
    return gemv_many(st, n, in, NULL, NULL, glu, NULL, parts, count, alpha, beta, y_f32, err);
}

int cu_gemv_glu_normed(CuState *st, int n, int in, const CuNormedX *nx, const bf16 *gate_w,
                       const bf16 *up_w, int out, bf16 *act, Error *err)
{
    CuGemvPart gate = {gate_w, act, out, NULL};
    return gemv_many(st, n, in, NULL, nx, NULL, up_w, &gate, 1, 1.0f, 0.0f, 0, err);
}

int cu_gemv(CuState *st, int n, int out, int in, const bf16 *x, const bf16 *W, float beta, void *y,
            int y_f32, Error *err)
{
    CuGemvPart part = {W, y, out, NULL};
    return cu_gemv_many(st, n, in, x, &part, 1, 1.0f, beta, y_f32, err);
}

/* ---- batched decode: split-K for some tens of rows ---- */

#define SPLIT_MAX_ROWS 256
#define SPLIT_TARGET_TILES 264 /* two 128 x 128 tiles per SM of an H100 */
#define SPLIT_MIN_K 256

int cu_gemm_split_k(const CuState *st, int n, int out, int in)
{
    if (n <= st->gemv_max_rows || n > SPLIT_MAX_ROWS) return 1;
    int tiles = ((n + 127) / 128) * ((out + 127) / 128), parts = 1;
    while (parts < 16 && tiles * parts * 2 <= SPLIT_TARGET_TILES && in % (parts * 2 * 8) == 0 &&
           in / (parts * 2) >= SPLIT_MIN_K)
        parts *= 2;
    return parts;
}

/* y = beta y + sum of the parts' [n x out] fp32 partials. */
template <class Y>
__global__ void sum_parts_kernel(size_t count, int parts, const float *__restrict__ part, float beta,
                                 Y *__restrict__ y)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= count) return;
    float s = beta != 0.0f ? beta * (float)y[i] : 0.0f;
    for (int p = 0; p < parts; p++) s += part[(size_t)p * count + i];
    y[i] = (Y)s;
}

int cu_gemm_rows_split(CuState *st, int n, int out, int in, const bf16 *x, const bf16 *W,
                       float beta, void *y, int y_f32, int parts, Error *err)
{
    size_t count = (size_t)n * out, need = (size_t)parts * count * sizeof(float);
    if (need > st->split_ws_bytes) {
        if (st->split_ws) CU_TRY(cudaFreeAsync(st->split_ws, st->stream));
        st->split_ws = NULL;
        st->split_ws_bytes = 0;
        CU_TRY(cudaMallocAsync((void **)&st->split_ws, need, st->stream));
        st->split_ws_bytes = need;
    }
    int k = in / parts; /* part p: x[:, p k ..] W[:, p k ..]^T */
    TRY(cu_gemm_strided(st, 0, 1, n, out, k, 1.0f, x, in, k, W, in, k, 0.0f, st->split_ws, 1, out,
                        (long long)count, parts, err));
    unsigned blocks = cu_blocks(count, 256);
    if (y_f32)
        sum_parts_kernel<float><<<blocks, 256, 0, st->stream>>>(count, parts, st->split_ws, beta, (float *)y);
    else
        sum_parts_kernel<bf16><<<blocks, 256, 0, st->stream>>>(count, parts, st->split_ws, beta, (bf16 *)y);
    CU_LAUNCHED();
    return 0;
}

/* Row-major GEMMs on cuBLAS: bf16 operands, fp32 compute, bf16 or fp32
 * output.  cuBLAS is column-major; a row-major C = op(A) op(B) is the
 * column-major C^T = op(B)^T op(A)^T, so the operands swap and keep their
 * transpose flags and leading dimensions. */
#include "cuda/cuda_kernels.cuh"

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

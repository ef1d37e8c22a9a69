/* The output stage of library GEMMs whose output or bias dtype cuBLASLt
 * cannot write directly (bf16 y from f16/f32 inputs, bf16 y with an f32
 * bias): cuBLASLt writes f32, this adds the bias in f32 and rounds once. */
#ifndef TGEMM_CUDA_CUDA_CONVERT_CUH
#define TGEMM_CUDA_CUDA_CONVERT_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* y[i, j] = src[i, j] + bias[j] for i < rows, j < cols, rounded to y_dtype
 * (bf16 or f32) to nearest even.  src is f32 with row stride ld_src; bias
 * (bf16 or f32, may be NULL) has cols elements.  Asynchronous on stream;
 * returns the launch status. */
cudaError_t tgemm__cuda_store_f32_rows(const float *src, int64_t ld_src, int64_t rows,
                                       int64_t cols, const void *bias, tgemm_dtype bias_dtype,
                                       void *y, tgemm_dtype y_dtype, int64_t ldy,
                                       cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

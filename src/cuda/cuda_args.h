/* Raw arguments of one GPU linear call, shared by every CUDA kernel family
 * (skinny_bf16, mxfp4_quant, w4a16, w4a4) and the cuBLASLt wrapper.
 * Plain C so that both .c and .cu files include it.
 *
 * Each kernel family exposes, in its own .cuh:
 *   int tgemm__<family>_candidates(const tgemm__shape *shape, int sm_count,
 *                                  tgemm__kernel *out, int cap);
 *   cudaError_t tgemm__<family>_run(const tgemm__kernel *kernel,
 *                                   const tgemm__cuda_gemm_args *args);
 * A run never allocates, never synchronizes and never reads device memory
 * from the host, so that it can be captured in a CUDA graph. */
#ifndef TGEMM_CUDA_CUDA_ARGS_H
#define TGEMM_CUDA_CUDA_ARGS_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "core/backend.h"

typedef struct tgemm__cuda_gemm_args {
  int64_t m, n, k;
  const void *x; /* [m, k], x_dtype, row stride ldx elements */
  int64_t ldx;
  tgemm_dtype x_dtype;
  const void *w; /* dense weight [n, k], w_dtype, row stride ldw (or NULL) */
  int64_t ldw;
  tgemm_dtype w_dtype;
  const uint8_t *w_packed; /* MXFP4 weight [n, ceil(k/32)*16] (or NULL) */
  int64_t ldw_packed;
  int w_paired; /* 1: w_packed is in the paired nibble order (mxfp4_pair.cuh), in which the
                 * W4A16 stream kernels skip x's byte permutes; 0: the standard order.  Every
                 * MXFP4 kernel and the reference read both */
  const uint8_t *w_scales; /* [n, ceil(k/32)] */
  int64_t ldw_scales;
  const void *bias; /* [n] of bias_dtype, or NULL */
  tgemm_dtype bias_dtype;
  void *y; /* [m, n], y_dtype (bf16 or f32), row stride ldy */
  int64_t ldy;
  tgemm_dtype y_dtype;
  void *workspace; /* scratch allocated once by the backend */
  size_t workspace_bytes;
  tgemm_scale_mode scale_mode; /* activation quantization (W4A4) */
  int sm_count;
  cudaStream_t stream;
} tgemm__cuda_gemm_args;

#endif

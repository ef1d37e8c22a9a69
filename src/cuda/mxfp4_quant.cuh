/* The GPU MXFP4 quantizer and dequantizer (DESIGN.md §3): byte-identical to
 * tgemm_mxfp4_quantize_row_ref for every input, all three scale modes.
 * Memory-bound: four lanes share one 32-value block (16-byte loads, quad
 * shuffles for the block maximum, 4-byte code stores that coalesce into
 * 128-byte lines).  Plain C interface so the backend's .c files include it. */
#ifndef TGEMM_CUDA_MXFP4_QUANT_CUH
#define TGEMM_CUDA_MXFP4_QUANT_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Quantize a dense [rows, cols] matrix (f32, f16 or bf16, row stride ld
 * elements) into packed codes [rows, ceil(cols/32)*16] (row stride packed_ld
 * bytes) and E8M0 scales [rows, ceil(cols/32)] (row stride scales_ld bytes).
 * Any strides and alignments are accepted (misaligned ones take a slower
 * scalar-load path).  Asynchronous on stream; never allocates or
 * synchronizes.  Returns cudaErrorInvalidValue for a bad dtype, mode,
 * negative size or stride too small, else the launch status. */
cudaError_t tgemm__mxfp4_quantize_cuda(const void *src, tgemm_dtype dtype, int64_t rows,
                                       int64_t cols, int64_t ld, uint8_t *packed,
                                       int64_t packed_ld, uint8_t *scales, int64_t scales_ld,
                                       tgemm_scale_mode mode, cudaStream_t stream);

/* dst[i, j] = e2m1(code) · 2^(scale-127) (NaN where the scale byte is 0xFF),
 * rounded to dtype (f32, f16, bf16) to nearest even. */
cudaError_t tgemm__mxfp4_dequantize_cuda(const uint8_t *packed, int64_t packed_ld,
                                         const uint8_t *scales, int64_t scales_ld, int64_t rows,
                                         int64_t cols, void *dst, tgemm_dtype dtype, int64_t ld,
                                         cudaStream_t stream);

/* Internal to the W4A4 family: dst (bf16, row stride dst_ld elements) =
 * dequantize(quantize(src)), the activations exactly as an MXFP4 GEMM sees
 * them (bf16 holds every e2m1·2^s).  Same rule and bytes as above. */
cudaError_t tgemm__mxfp4_fake_quant_bf16_cuda(const void *src, tgemm_dtype dtype, int64_t rows,
                                              int64_t cols, int64_t ld, uint16_t *dst,
                                              int64_t dst_ld, tgemm_scale_mode mode,
                                              cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

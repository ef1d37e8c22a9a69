/* The GPU reference route: y = x·Wᵀ + bias with one thread per output and
 * f64 accumulation.  Slow and plainly correct; every faster GPU kernel is
 * compared against the same double-precision truth. */
#ifndef TGEMM_CUDA_REFERENCE_GEMM_CUH
#define TGEMM_CUDA_REFERENCE_GEMM_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Reads the dense weight (args->w) when present, else the MXFP4 weight
 * (args->w_packed/w_scales, dequantized exactly; a 0xFF scale gives NaN).
 * x, dense W and bias may be f32, f16 or bf16; y is bf16 or f32, rounded
 * once from the double sum.  Asynchronous on args->stream; returns the
 * launch status. */
cudaError_t tgemm__reference_gemm_cuda(const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

/* W4A4: y[M,N] = x̂·Ŵᵀ (+ bias), where x̂ is x (bf16, f16 or f32) quantized
 * to MXFP4 on every call with args->scale_mode (the same bytes as
 * tgemm__mxfp4_quantize_cuda) and Ŵ the MXFP4 weight.  H100 has no FP4
 * tensor cores, so both operands are decoded exactly to bf16 (every
 * e2m1·2^s is a bf16) and multiplied with f32 accumulation: the result is
 * the exact product of the dequantized operands up to f32 rounding.
 *
 * Kernels, the measured default first (params[0] = tile, params[1] =
 * split-K factor for the mma ones):
 * - "w4a4_xq_<stream kernel>" (M <= 16, when w4a16_stream.cu is built): a
 *   small launch writes x̂ = dequantize(quantize(x)) to the workspace as
 *   bf16 (M*round_up(K, 8)*2 bytes), then the streaming W4A16 decode kernel
 *   runs on it (params are the stream kernel's).
 * - "w4a4_prequant_<tile>_s<S>": a quantize launch writes x̂ to the
 *   workspace as MXFP4 (M*(ceil(K/32)*16 + round_up(ceil(K/32), 16)) bytes
 *   plus 256-byte alignment), then the tensor-core GEMM reads the 4.25-bit
 *   activations.  When the workspace cannot hold all M rows, rows are
 *   processed in chunks (still no allocation); cudaErrorInvalidValue when
 *   it cannot hold even one tile of rows.  The backend's default 128 MiB
 *   workspace holds M = 8192 at K = 16384 in one chunk.
 * - "w4a4_fused_<tile>_s<S>": one launch; each CTA quantizes its x tile
 *   in shared memory as it streams the weights (the 16x128 tile is its
 *   M <= 16 form).  Workspace: none, except split-K factors above 8
 *   (S*M*N*4 bytes of partials; fewer splits when it does not fit).
 *
 * Plain C interface. */
#ifndef TGEMM_CUDA_W4A4_CUH
#define TGEMM_CUDA_W4A4_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Candidates for shape (x f32/f16/bf16, y bf16/f32), the default first. */
int tgemm__w4a4_candidates(const tgemm__shape *shape, int sm_count, tgemm__kernel *out, int cap);

/* Runs one candidate on args->stream.  Needs args->w_packed / w_scales and,
 * for the prequant kernels, args->workspace.  Never allocates or
 * synchronizes. */
cudaError_t tgemm__w4a4_run(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

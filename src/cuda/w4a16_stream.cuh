/* Streaming W4A16 decode GEMM: y[M,N] = x[M,K]·dequant(W)ᵀ (+ bias) for
 * M = 1..16, with W in MXFP4 (packed E2M1 pairs + one E8M0 scale per 32 k)
 * and bf16 x, f32 accumulation, bf16 or f32 output.  Built like the skinny
 * BF16 kernels (skinny_bf16.cuh): each 16-byte weight load is one whole
 * MXFP4 block, decoded exactly to bf16 in registers (E2M1 bits placed in a
 * bf16, then exact power-of-two multiplies by the scale) and multiplied on
 * the tensor cores.  The result equals the exact product of the dequantized
 * operands up to f32 rounding (a 0xFF scale gives NaN in its row).
 *
 * The colleague family `w4a16` (w4a16.cuh) offers these as part of its own
 * candidates for small M.  Kernel names:
 * "w4a16_stream_w<warps>_t<tiles>_u<unroll>_p<stages>_s<split>[_xr]", with
 * params[0..5] = warps per block, 16-row tiles per warp, 4-block steps per
 * batch, cluster split of K, depth of the per-warp cp.async ring, and 1
 * ("_xr") when that ring also carries x. */
#ifndef TGEMM_CUDA_W4A16_STREAM_CUH
#define TGEMM_CUDA_W4A16_STREAM_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest M the streaming kernels take. */
#define TGEMM__W4A16_STREAM_MAX_M 16

/* Candidates for shape (x bf16, y bf16 or f32, 1 <= M <= 16), the tuned
 * default first; at most cap; 0 when the shape does not qualify. */
int tgemm__w4a16_stream_candidates(const tgemm__shape *shape, int sm_count,
                                   tgemm__kernel *out, int cap);

/* Runs one candidate on args->stream.  Needs args->w_packed/w_scales
 * (MXFP4, ldw_packed >= ceil(k/32)*16, ldw_scales >= ceil(k/32); the packed
 * bytes in the standard order, or in the paired one with args->w_paired,
 * which saves four byte permutes per x load: mxfp4_pair.cuh), bf16 x,
 * bf16/f32 y, bias NULL or bf16/f16/f32.  When x or the packed weight
 * (pointer or leading dimension) is not 16-byte aligned, or the scales not
 * 4-byte aligned, the run silently uses a scalar-load kernel (same result
 * up to f32 rounding, slower).  Returns
 * cudaErrorInvalidValue for an unknown kernel or unsupported shape or
 * dtype, else the launch status.  Never allocates, synchronizes or touches
 * the workspace (cudaFuncSetAttribute for > 48 KB of shared memory is not a
 * stream operation: graph capture is fine).  x must be bf16: an f16 x would
 * need an inexact conversion. */
cudaError_t tgemm__w4a16_stream_run(const tgemm__kernel *kernel,
                                    const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

/* Skinny BF16 decode GEMM: y[M,N] = x[M,K]·Wᵀ (+ bias) for M = 1..16, bf16
 * x and W, f32 accumulation, bf16 or f32 output.  Memory-bound: W is
 * streamed once with 16-byte evict-first loads and multiplied on the tensor
 * cores (mma.m16n8k16, W rows as the MMA's M side, tokens as its N side),
 * so that the arithmetic never limits the stream.  When N alone cannot fill
 * the GPU, K is split across the blocks of a thread-block cluster and
 * reduced through distributed shared memory: one launch, no workspace, no
 * atomics, graph-replayable.
 *
 * Kernel names: "skinny_bf16_w<warps>_t<tiles>_u<unroll>_p<stages>_s<split>[_xr]",
 * params[0..5] = warps per block, 16-row tiles per warp, 32-wide K steps
 * per batch, cluster split of K, the depth of the per-warp cp.async ring
 * in shared memory (0: a register double buffer instead), and 1 ("_xr")
 * when that ring also carries x.  Parameters change speed only; results
 * differ between them by f32 rounding alone. */
#ifndef TGEMM_CUDA_SKINNY_BF16_CUH
#define TGEMM_CUDA_SKINNY_BF16_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest M the skinny kernels take; M = 17 and up get no candidates. */
#define TGEMM__SKINNY_MAX_M 16

/* Candidates for shape (x and W bf16, y bf16 or f32, 1 <= M <= 16), the
 * tuned default first.  Returns how many were written (at most cap); 0 when
 * the shape does not qualify. */
int tgemm__skinny_bf16_candidates(const tgemm__shape *shape, int sm_count,
                                  tgemm__kernel *out, int cap);

/* Runs one candidate on args->stream.  Needs args->w (dense bf16), bf16 x,
 * bf16/f32 y, and bias NULL or bf16/f16/f32.  When x, W or their leading
 * dimensions are not 16-byte aligned, the vector kernel cannot be used and
 * the run silently switches to a scalar-load kernel (same result up to f32
 * rounding, slower).  Returns cudaErrorInvalidValue for an unknown kernel
 * name/params or an unsupported shape or dtype, else the launch status.
 * Never allocates, synchronizes or touches the workspace; kernels that need
 * more than 48 KB of shared memory get cudaFuncSetAttribute first (not a
 * stream operation, so graph capture is fine). */
cudaError_t tgemm__skinny_bf16_run(const tgemm__kernel *kernel,
                                   const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

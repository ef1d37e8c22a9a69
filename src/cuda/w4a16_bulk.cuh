/* Bulk-copy W4A16 decode GEMM for M = 1..16: the streaming kernel's math
 * (w4a16_decode.cuh: exact E2M1 -> bf16 in registers, bf16 tensor cores,
 * f32 sums) fed by fewer instructions.
 * - x is staged once per block in shared memory, already in the word order
 *   the MMA wants (so it is read from L2 once per block, not once per warp
 *   and batch, and never regrouped again);
 * - each warp owns whole 16T-row tiles over the full K, so it needs no
 *   reduction with other warps, and walks its tiles persistently (the grid
 *   stays resident), prefetching the next tiles into a ring of ST stages;
 * - a stage is filled by one cp.async.bulk per weight row and per scale row
 *   and completes on an mbarrier, instead of a 16-byte cp.async per lane
 *   and block.
 * Kernel names: "w4a16_bulk_w<warps>_t<tiles>_u1_p<stages>_s1_xr" (the
 * naming of the streaming kernels: params[0..5] = warps, tiles, 1, split 1,
 * stages, 1).
 *
 * Listed only where a stage and x fit in shared memory and ceil(K/32) is a
 * multiple of 16 (weights made by the library then have 16-byte scale
 * rows).  A run whose packed weight or scales are not 16-byte aligned
 * (pointer or leading dimension) uses the streaming kernels' default
 * instead, with the same result up to f32 rounding. */
#ifndef TGEMM_CUDA_W4A16_BULK_CUH
#define TGEMM_CUDA_W4A16_BULK_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Candidates for shape (x bf16, y bf16 or f32, 1 <= M <= 16), at most cap;
 * 0 when none fits. */
int tgemm__w4a16_bulk_candidates(const tgemm__shape *shape, tgemm__kernel *out, int cap);

/* Runs one candidate on args->stream (never allocates or synchronizes).
 * cudaErrorInvalidValue for an unknown kernel, an unsupported shape or
 * dtype, or a shape it was not listed for; else the launch status. */
cudaError_t tgemm__w4a16_bulk_run(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

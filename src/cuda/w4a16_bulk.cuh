/* Bulk-copy W4A16 decode GEMM: the same product as the streaming kernels
 * (w4a16_stream.cuh) for M = 1..16, fed differently.  One producer warp per
 * block copies whole chunks of its rows (16·T rows × KC MXFP4 blocks, with
 * their scales) into a ring of shared-memory stages with the bulk copy
 * engine (cp.async.bulk, completion counted on an mbarrier), as many stages
 * ahead as the ring holds.  The consumer warps decode from shared memory
 * exactly as the streaming kernels do.  A block loops over row groups
 * (persistent: at most one block per SM), so the next group's chunks arrive
 * while the current one finishes.
 *
 * Why: the streaming kernels keep at most a few 512-byte batches per warp in
 * flight, so the first wave of loads and the per-warp refills set a call's
 * time on layers with few 16-row tiles per SM (q_a: one tile per SM, the
 * whole 61 KB of it fits in a ring).
 *
 * Kernel names "w4a16_bulk_w<warps>_t<tiles>_c<chunk blocks>_p<stages>",
 * params[0..3] = consumer warps, 16-row tiles per group, MXFP4 blocks per
 * row per chunk, ring stages. */
#ifndef TGEMM_CUDA_W4A16_BULK_CUH
#define TGEMM_CUDA_W4A16_BULK_CUH

#include "cuda/cuda_args.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest M the bulk kernels take. */
#define TGEMM__W4A16_BULK_MAX_M 16

/* Candidates for shape (x bf16, y bf16 or f32, 1 <= M <= 16, K a multiple
 * of 512 so that every chunk's scale row is whole 16-byte pieces); at most
 * cap; 0 when the shape does not qualify. */
int tgemm__w4a16_bulk_candidates(const tgemm__shape *shape, int sm_count, tgemm__kernel *out,
                                 int cap);

/* Runs one candidate on args->stream.  The bulk copies need 16-byte
 * aligned rows: x (pointer, ldx % 8), packed weight and scales (pointers,
 * ldw_packed and ldw_scales % 16) and K % 512 == 0.  Otherwise the run
 * uses the streaming kernels' built-in choice for the shape (same result
 * up to f32 rounding).  cudaErrorInvalidValue for an unknown kernel or an
 * unsupported shape or dtype, else the launch status.  Never allocates or
 * synchronizes. */
cudaError_t tgemm__w4a16_bulk_run(const tgemm__kernel *kernel, const tgemm__cuda_gemm_args *args);

#ifdef __cplusplus
}
#endif

#endif

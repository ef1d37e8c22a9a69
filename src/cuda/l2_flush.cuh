/* Evicting the L2 before a timed run by reading a buffer larger than it.
 * Unlike a memset, a read leaves the L2 holding clean lines, so the timed
 * kernel pays no write-back of the flush's own data: its reads of cold
 * weights are measured alone, as in a model where the previous kernels
 * mostly read (weights, KV cache) and wrote little. */
#ifndef TGEMM_CUDA_L2_FLUSH_CUH
#define TGEMM_CUDA_L2_FLUSH_CUH

#include <stddef.h>

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Read every 16-byte word of buf (bytes a multiple of 16) with `blocks`
 * blocks.  Its first word is overwritten only when a thread's XOR of its
 * words hits one arbitrary value, so the reads cannot be elided and the
 * buffer's contents do not matter.  Asynchronous on stream; returns the
 * launch status. */
cudaError_t tgemm__cuda_l2_flush_read(void *buf, size_t bytes, int blocks, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif

/* One-instruction global -> shared copies (cp.async.bulk, the TMA's 1-D
 * form) and the mbarrier that counts their bytes.  A warp arms a barrier
 * with the bytes it expects, a few lanes copy whole rows with one
 * instruction each, and every lane waits on the barrier's phase: far fewer
 * instructions per byte than 16-byte cp.async copies.  sm_90, CUDA C++. */
#ifndef TGEMM_CUDA_BULK_COPY_CUH
#define TGEMM_CUDA_BULK_COPY_CUH

#include <cuda_runtime.h>

namespace tgemm_bulk {

__device__ __forceinline__ unsigned smem_addr(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

/* A barrier that completes a phase on one arrival plus its expected bytes. */
__device__ __forceinline__ void barrier_init(unsigned long long *bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_addr(bar)) : "memory");
}

/* Makes initialized barriers visible to the copy engine (async proxy). */
__device__ __forceinline__ void barrier_init_fence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

/* Orders this thread's earlier shared-memory accesses before the copies it
 * issues next: a stage is refilled only after every lane has read it. */
__device__ __forceinline__ void async_proxy_fence() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

/* The one arrival of a phase, announcing `bytes` to come. */
__device__ __forceinline__ void barrier_expect(unsigned long long *bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(bar)),
               "r"(bytes)
               : "memory");
}

/* Waits until the barrier has completed the phase of parity `phase`. */
__device__ __forceinline__ void barrier_wait(unsigned long long *bar, unsigned phase) {
  const unsigned addr = smem_addr(bar);
  unsigned done;
  do {
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2; "
        "selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(addr), "r"(phase)
        : "memory");
  } while (!done);
}

/* bytes (a multiple of 16; both addresses 16-byte aligned) from global to
 * shared, counted on bar, with an L2 policy (evict-first for weights read
 * once). */
__device__ __forceinline__ void copy(void *dst, const void *src, unsigned bytes,
                                     unsigned long long *bar, unsigned long long policy) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint "
      "[%0], [%1], %2, [%3], %4;" ::"r"(smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar)), "l"(policy)
      : "memory");
}

}  // namespace tgemm_bulk

#endif

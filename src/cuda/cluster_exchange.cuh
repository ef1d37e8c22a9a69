/* How the blocks of a decode kernel's cluster (split > 1: the blocks share
 * one row group and split its K) combine their partial sums, without a
 * cluster-wide barrier at the end.
 *
 * Each block owns TOKENS / split of the tile's tokens.  When its loop is
 * done, a block holds its partial for every token in shared memory (`part`,
 * [token][row] with rows padded to `stride`); it sends each other block the
 * tokens that block owns with one bulk copy into that block's exchange
 * area, which counts the bytes on the receiver's mbarrier.  Then it waits
 * for its own tokens from every other block and sums them in rank order.
 * A block exits only after everything sent to it has arrived, and after
 * its own copies have read their source, so no shared memory is touched
 * after its block has gone.  The mbarriers are set up at the kernel's
 * start, and a cluster barrier arrived at there (and waited on only before
 * the first copy) orders that set-up before any copy.
 *
 * (The sums used to be read from the other blocks' shared memory between
 * two cluster barriers.  Those barriers and remote reads took about 1.9 µs
 * of a call: BENCHMARKS.md.)  CUDA C++ only, sm_90. */
#ifndef TGEMM_CUDA_CLUSTER_EXCHANGE_CUH
#define TGEMM_CUDA_CLUSTER_EXCHANGE_CUH

#include <cuda_runtime.h>
#include <stddef.h>

namespace tgemm_decode {

/* Floats between the rows of two tokens in a partial: 16·tiles rows, padded
 * by 4 so that a warp's fragment-ordered writes fall in distinct banks, and
 * so that every token's rows start 16-byte aligned. */
__host__ __device__ constexpr int partial_stride(int tiles) { return 16 * tiles + 4; }

/* Bytes of a block's exchange area: a partial of every token (slot b of
 * TOKENS / split tokens holds what block b sent), then the mbarrier. */
__host__ __device__ constexpr size_t exchange_bytes(int tiles, int mt) {
  return (size_t)8 * mt * partial_stride(tiles) * sizeof(float) + 16;
}

__device__ __forceinline__ unsigned smem_u32(const void *p) {
  return (unsigned)__cvta_generic_to_shared(p);
}

/* The exchange area's mbarrier. */
template <int T, int MT>
__device__ __forceinline__ unsigned exchange_barrier(const unsigned char *area) {
  return smem_u32(area + exchange_bytes(T, MT) - 16);
}

/* Kernel start (split > 1; every thread of the block): the exchange
 * mbarrier expects this block's tokens from the split - 1 other blocks, and
 * the block arrives at the cluster barrier that exchange_and_sum waits on. */
template <int T, int MT>
__device__ __forceinline__ void exchange_begin(unsigned char *area, int split) {
  if (threadIdx.x == 0) {
    const unsigned bar = exchange_barrier<T, MT>(area);
    const unsigned bytes =
        (unsigned)((split - 1) * (8 * MT / split) * partial_stride(T) * sizeof(float));
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(bar) : "memory");
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes)
                 : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  }
  asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
}

/* Sends the other blocks their tokens of this block's partial `part`
 * (written by this thread and the block's others before the call), waits
 * for this block's own tokens, and calls store(token, row, sums) for every
 * 8 rows of them that land in y (token < m, row0 + row < n): sums[i] is
 * the cluster's total of row + i, added in rank order.  Every thread of the
 * block calls it. */
template <int WARPS, int T, int MT, typename Store>
__device__ __forceinline__ void exchange_and_sum(const float *part, unsigned char *area, int split,
                                                 int rank, int row0, int m, int n, Store store) {
  constexpr int STRIDE = partial_stride(T), ROWS = 16 * T, TOKENS = 8 * MT;
  const int owned = TOKENS / split; /* tokens per block */
  const unsigned slice = (unsigned)(owned * STRIDE * sizeof(float));
  const float *recv = reinterpret_cast<const float *>(area);
  const unsigned bar = exchange_barrier<T, MT>(area);
  /* The bulk copies read `part` through the async proxy. */
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
  __syncthreads();
  asm volatile("barrier.cluster.wait.aligned;" ::: "memory"); /* every mbarrier is set up */
  if (threadIdx.x == 0) {
    for (int b = 0; b < split; b++) {
      if (b == rank) continue;
      unsigned dst, dst_bar;
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;"
                   : "=r"(dst)
                   : "r"(smem_u32(recv) + rank * slice), "r"(b));
      asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(dst_bar) : "r"(bar), "r"(b));
      asm volatile(
          "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, "
          "[%3];" ::"r"(dst),
          "r"(smem_u32(part) + b * slice), "r"(slice), "r"(dst_bar)
          : "memory");
    }
    asm volatile("cp.async.bulk.commit_group;" ::: "memory");
  }
  for (unsigned done = 0; !done;)
    asm volatile(
        "{ .reg .pred p; mbarrier.try_wait.parity.shared::cta.b64 p, [%1], 0; selp.u32 %0, 1, 0, p; }"
        : "=r"(done)
        : "r"(bar)
        : "memory");
  constexpr int PIECES_PER_TOKEN = ROWS / 8;
  for (int p = (int)threadIdx.x; p < owned * PIECES_PER_TOKEN; p += WARPS * 32) {
    const int t = p / PIECES_PER_TOKEN, row = p % PIECES_PER_TOKEN * 8;
    const int token = rank * owned + t;
    if (token >= m || row0 + row >= n) continue;
    float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (int b = 0; b < split; b++) {
      const float *f = b == rank ? part + token * STRIDE + row : recv + (b * owned + t) * STRIDE + row;
      const float4 lo = reinterpret_cast<const float4 *>(f)[0], hi = reinterpret_cast<const float4 *>(f)[1];
      s[0] += lo.x, s[1] += lo.y, s[2] += lo.z, s[3] += lo.w;
      s[4] += hi.x, s[5] += hi.y, s[6] += hi.z, s[7] += hi.w;
    }
    store(token, row, s);
  }
  if (threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
}

}  // namespace tgemm_decode

#endif

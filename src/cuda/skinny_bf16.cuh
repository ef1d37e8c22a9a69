/* Skinny BF16 decode GEMM: y[M,N] = x[M,K]·Wᵀ (+ bias) for M = 1..16, bf16
 * x and W, f32 accumulation, bf16 or f32 output.  Memory-bound: W is
 * streamed once with 16-byte evict-first loads and multiplied on the tensor
 * cores (mma.m16n8k16, W rows as the MMA's M side, tokens as its N side),
 * so that the arithmetic never limits the stream.  When N alone cannot fill
 * the GPU, K is split across the blocks of a thread-block cluster and
 * reduced through distributed shared memory: one launch, no workspace, no
 * atomics, graph-replayable.
 *
 * Kernel names: "skinny_bf16_w<warps>_t<tiles>_u<unroll>_p<stages>_s<split>",
 * params[0..4] = warps per block, 16-row tiles per warp, 32-wide K steps
 * per batch, cluster split of K, and the depth of the per-warp cp.async
 * ring in shared memory (0: a register double buffer instead).  Parameters
 * change speed only; results differ between them by f32 rounding alone. */
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

#if defined(__CUDACC__)
/* ---- Device pieces shared by skinny_bf16.cu and w4a16_stream.cu ------- */
#include <cooperative_groups.h>

namespace tgemm_decode {

/* Where the finished sums go. */
struct epilogue {
  const void *bias; /* [n] or NULL */
  int bias_dtype;   /* tgemm_dtype */
  void *y;          /* [m, n] with row stride ldy */
  long long ldy;
  int y_f32;        /* 1: f32 y, 0: bf16 y */
  int m, n;
};

/* An L2 policy that evicts the weights first: they are read exactly once. */
__device__ __forceinline__ unsigned long long evict_first_policy() {
  unsigned long long policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

/* 16-byte weight load: read-only path, no L1 allocation, L2 evict-first,
 * and a 256-byte L2 prefetch so that DRAM serves whole bursts. */
__device__ __forceinline__ uint4 load_stream16(const void *ptr, unsigned long long policy) {
  uint4 v;
  asm("ld.global.nc.L1::no_allocate.L2::cache_hint.L2::256B.v4.u32 {%0,%1,%2,%3}, [%4], %5;"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(ptr), "l"(policy));
  return v;
}

/* 16-byte global -> shared copy that bypasses L1, evicts first from L2 and
 * prefetches 256 bytes into L2: the weight stream of the ring kernels. */
__device__ __forceinline__ void cp_async16_stream(void *smem, const void *gmem,
                                                  unsigned long long policy) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2;" ::"r"(dst),
               "l"(gmem), "l"(policy)
               : "memory");
}

/* 16-byte global -> shared copy through L2 only (activations that other
 * blocks read too) of the first `bytes` (16 or 0) of gmem, zero-filled. */
__device__ __forceinline__ void cp_async16_fill(void *smem, const void *gmem, unsigned bytes) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(gmem), "r"(bytes)
               : "memory");
}

/* 4-byte global -> shared copy (MXFP4 scales). */
__device__ __forceinline__ void cp_async4(void *smem, const void *gmem) {
  const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(dst), "l"(gmem) : "memory");
}

__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;" ::: "memory");
}

/* Wait until at most N of this thread's copy groups are still in flight. */
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

/* d += A·B for one m16n8k16 bf16 tile with f32 accumulation.  A: 16 weight
 * rows × 16 k, B: 16 k × 8 tokens (PTX fragment layout). */
__device__ __forceinline__ void mma_bf16(float (&d)[4], unsigned a0, unsigned a1, unsigned a2,
                                         unsigned a3, unsigned b0, unsigned b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
      "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

/* 8 consecutive bf16 (as raw bits) of which the first `avail` are read and
 * the rest are zero: for the K tail and for unaligned rows. */
__device__ __forceinline__ uint4 load8_scalar(const unsigned short *p, long long avail) {
  unsigned h[8];
#pragma unroll
  for (int i = 0; i < 8; i++) h[i] = i < avail ? (unsigned)__ldg(p + i) : 0u;
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

__device__ __forceinline__ float load_bias(const void *bias, int dtype, int row) {
  if (dtype == TGEMM_F32) return static_cast<const float *>(bias)[row];
  unsigned short h = static_cast<const unsigned short *>(bias)[row];
  if (dtype == TGEMM_BF16) return __uint_as_float((unsigned)h << 16);
  float f;
  asm("{ .reg .b16 t; mov.b16 t, %1; cvt.f32.f16 %0, t; }" : "=f"(f) : "h"(h));
  return f;
}

/* Element e of the fragment-ordered accumulator array (register r = e / 32
 * of lane e % 32) holds, for the m16n8 tile (r / 4) = tile * MT +
 * token_group: row g (+8 when r % 4 >= 2) and token 2c + (r % 2), with
 * g = lane / 4, c = lane % 4. */
template <int MT>
__device__ __forceinline__ void element_at(int row0, int e, int *row, int *token) {
  const int r = e >> 5, lane = e & 31;
  const int i = r & 3, tile_group = r >> 2;
  const int group = tile_group % MT, tile = tile_group / MT;
  *row = row0 + 16 * tile + (lane >> 2) + ((i & 2) ? 8 : 0);
  *token = 8 * group + 2 * (lane & 3) + (i & 1);
}

/* Does element e land in y (a real row and token)?  At M = 1 only one
 * element in eight does, so the reductions skip the rest. */
template <int MT>
__device__ __forceinline__ bool element_used(const epilogue &ep, int row0, int e) {
  int row, token;
  element_at<MT>(row0, e, &row, &token);
  return row < ep.n && token < ep.m;
}

/* Writes one finished sum (element e, see element_at). */
template <int MT>
__device__ __forceinline__ void store_one(const epilogue &ep, int row0, int e, float sum) {
  int row, token;
  element_at<MT>(row0, e, &row, &token);
  if (row >= ep.n || token >= ep.m) return;
  if (ep.bias) sum += load_bias(ep.bias, ep.bias_dtype, row);
  long long at = (long long)token * ep.ldy + row;
  if (ep.y_f32) {
    static_cast<float *>(ep.y)[at] = sum;
  } else {
    unsigned u = __float_as_uint(sum), h;
    if ((u & 0x7fffffffu) > 0x7f800000u)
      h = (u >> 16) | 0x40u; /* NaN stays NaN */
    else
      h = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16; /* nearest even */
    static_cast<unsigned short *>(ep.y)[at] = (unsigned short)h;
  }
}

/* Sums the R accumulators of every warp of the block, then (split > 1) of
 * every block of the cluster through distributed shared memory, and writes
 * y.  red: shared memory of WARPS * R * 32 floats (elements that land
 * outside y are neither stored nor summed).  Fixed summation order: the
 * result does not depend on timing. */
template <int WARPS, int R, int MT>
__device__ __forceinline__ void reduce_and_store(const float (&acc)[R], float *red, int split,
                                                 int row0, const epilogue &ep) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  constexpr int E = R * 32;
#pragma unroll
  for (int r = 0; r < R; r++)
    if (element_used<MT>(ep, row0, r * 32 + lane)) red[(warp * R + r) * 32 + lane] = acc[r];
  __syncthreads();
  if (split == 1) {
    for (int e = threadIdx.x; e < E; e += WARPS * 32) {
      if (!element_used<MT>(ep, row0, e)) continue;
      float s = red[e];
#pragma unroll
      for (int w = 1; w < WARPS; w++) s += red[w * E + e];
      store_one<MT>(ep, row0, e, s);
    }
    return;
  }
  for (int e = threadIdx.x; e < E; e += WARPS * 32) {
    if (!element_used<MT>(ep, row0, e)) continue;
    float s = red[e];
#pragma unroll
    for (int w = 1; w < WARPS; w++) s += red[w * E + e];
    red[e] = s;
  }
  namespace cg = cooperative_groups;
  cg::cluster_group cluster = cg::this_cluster();
  cluster.sync(); /* every block's partial sums are in its shared memory */
  const int rank = (int)cluster.block_rank();
  const int per = (E + split - 1) / split;
  const int lo = rank * per, hi = min(E, lo + per);
  for (int e = lo + (int)threadIdx.x; e < hi; e += WARPS * 32) {
    if (!element_used<MT>(ep, row0, e)) continue;
    float s = 0.0f;
    for (int b = 0; b < split; b++) s += cluster.map_shared_rank(red, b)[e];
    store_one<MT>(ep, row0, e, s);
  }
  cluster.sync(); /* keep this block's shared memory alive for the others */
}

}  // namespace tgemm_decode
#endif /* __CUDACC__ */

#endif

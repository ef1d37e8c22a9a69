/* Pieces shared by the decode GEMM kernels (skinny_bf16.cu, w4a16_stream.cu)
 * and the bench harnesses: weight streaming loads and cp.async copies, the
 * bf16 MMA, x through a warp's cp.async ring, and the host side of a
 * launch (the epilogue is in decode_epilogue.cuh).  CUDA C++ only. */
#ifndef TGEMM_CUDA_DECODE_COMMON_CUH
#define TGEMM_CUDA_DECODE_COMMON_CUH

#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/cuda_args.h"
#include "cuda/decode_epilogue.cuh"
#include "cuda/smem_limit.cuh"

namespace tgemm_decode {

/* The most dynamic shared memory a block may opt in to on sm_90. */
constexpr size_t kMaxSmem = 227 * 1024;

/* An L2 policy that evicts the weights first: they are read exactly once. */
__device__ __forceinline__ unsigned long long evict_first_policy() {
  unsigned long long policy;
  asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}

/* Pins a value a loop only reads in a register: after the empty asm the
 * value is opaque, so the compiler cannot recompute it inside the loop from
 * the thread index (in the W4A16 ring loop it did: ~80 of ~340
 * instructions a batch, on a kernel that issues on 60% of its cycles).
 * Pin shared-memory offsets, not pointers: an opaque pointer is no longer
 * known to point into shared memory. */
__device__ __forceinline__ void keep(int &v) { asm volatile("" : "+r"(v)); }
__device__ __forceinline__ void keep(unsigned &v) { asm volatile("" : "+r"(v)); }
__device__ __forceinline__ void keep(long long &v) { asm volatile("" : "+l"(v)); }

/* Where a block works: its row group and its rank among the `split` blocks
 * of its cluster (blockIdx.x = group * split + rank, the cluster's own
 * rank order).  split is one of kSplits, a power of two, so a shift and a
 * mask do it: dividing blockIdx.x by split cost every warp ~25
 * instructions before its first copy. */
__device__ __forceinline__ void block_place(int split, int *group, int *rank) {
  const unsigned shift = (unsigned)(__ffs(split) - 1);
  *group = (int)(blockIdx.x >> shift);
  *rank = (int)(blockIdx.x & (unsigned)(split - 1));
}

/* A call's whole batches dealt round robin to its workers (the warps of a
 * cluster): worker w takes batches w, w + workers, ...  Dealt on the host
 * (deal_batches): the 64-bit division on the device cost every warp ~30
 * instructions before its first copy. */
struct deal {
  int full;  /* batches entirely inside K */
  int per;   /* full / workers: what every worker takes */
  int extra; /* full % workers: workers below it take one more, and worker
              * `extra` also takes the partial batch, if K has one */
  __device__ __forceinline__ int count(int worker) const { return per + (worker < extra); }
};

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

/* Programmatic dependent launch (sm_90).  The decode kernels are launched
 * so that they may start while the kernel before them on the stream is
 * still running (see launch).  Each block lets the next kernel launch at
 * once, issues the loads that no earlier kernel writes (weights, scales),
 * and waits for the earlier kernel to finish, its writes visible, before
 * it reads x or writes y.  Without the launch attribute both are no-ops. */
__device__ __forceinline__ void allow_next_launch() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void wait_for_previous() {
#if __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
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

/* x through a warp's cp.async ring (the "_xr" kernels), so that it arrives
 * with the weights, stages ahead, instead of from L2 right before its MMAs.
 * A ring stage holds the batch's x as MT groups of 8 tokens, XCH 16-byte
 * pieces per token.  Lane L copies pieces L + 32i (i < XCH/4) of each group:
 * token (L + 32i) / XCH, piece L % XCH; pieces of tokens past m are
 * zero-filled without a memory read.  The kernel picks where piece p of
 * token r is stored (swizzle(r, p), inside the token's XCH pieces) so that
 * its own reads avoid bank conflicts. */
template <int MT, int XCH>
struct x_ring_copy {
  static_assert(XCH >= 4 && 32 % XCH == 0, "a token's pieces must tile a warp evenly");
  int src[MT][XCH / 4];       /* element offset of the piece's token row (x_offsets_fit) */
  int dst[XCH / 4];           /* stored piece index inside a token group */
  unsigned bytes[MT][XCH / 4]; /* 16 for a token below m, else 0 (zero fill) */

  template <typename Swizzle>
  __device__ __forceinline__ void init(int lane, int m, long long ldx, Swizzle swizzle) {
#pragma unroll
    for (int i = 0; i < XCH / 4; i++) {
      const int r = lane / XCH + 32 * i / XCH, p = lane % XCH;
      dst[i] = r * XCH + swizzle(r, p);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        src[mt][i] = min(8 * mt + r, m - 1) * (int)ldx;
        bytes[mt][i] = 8 * mt + r < m ? 16u : 0u;
      }
    }
  }
  /* Pins the copy plan in registers for a loop (see keep). */
  __device__ __forceinline__ void keep_in_registers() {
#pragma unroll
    for (int i = 0; i < XCH / 4; i++) {
      keep(dst[i]);
#pragma unroll
      for (int mt = 0; mt < MT; mt++) keep(src[mt][i]), keep(bytes[mt][i]);
    }
  }
  /* Copies one batch into a stage; xin points at token 0 of the batch plus
   * this lane's piece (8 * (lane % XCH) elements). */
  __device__ __forceinline__ void issue(uint4 *stage, const unsigned short *xin) const {
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int i = 0; i < XCH / 4; i++)
        cp_async16_fill(stage + mt * 8 * XCH + dst[i], xin + src[mt][i], bytes[mt][i]);
  }
};

}  // namespace tgemm_decode

/* ---- Host side: configurations, candidates, launch --------------------- */

namespace tgemm_decode {

/* Where a decode kernel's blocks let the next kernel on the stream launch
 * (see allow_next_launch).  At the start, the next kernel's blocks take
 * the SMs' spare room at once; after the main loop, they are placed as
 * this kernel's blocks finish.  Which is faster depends on the kernel and
 * the shape (under graph timing on the H100, o_proj TP8's W4A16 kernel
 * ran 6.48 µs with the first and 5.08 with the second, kv_b's 4.93 and
 * 5.88: BENCHMARKS.md), so both are candidates. */
enum trigger { kTriggerAtStart = 0, kTriggerAfterLoop = 1 };

/* One decode kernel: warps per block, 16-row tiles per warp, k steps per
 * batch, cp.async ring depth (0: register double buffer), cluster split
 * of K, x through the ring, and where the next kernel may launch. */
struct config {
  int warps, tiles, unroll, stages, split, x_ring;
  int trigger; /* enum trigger */
};

/* The cluster splits every instantiated kernel is offered with (powers of
 * two: block_place relies on it). */
constexpr int kSplits[] = {1, 2, 4, 8};
static_assert(sizeof kSplits / sizeof kSplits[0] == 4 && kSplits[3] == 8,
              "cluster_exchange.cuh: every block of a split-8 cluster owns one of 8 tokens; a "
              "larger split would leave blocks without tokens");

/* A kernel's name, "<prefix>_w<warps>_t<tiles>_u<unroll>_p<stages>_s<split>"
 * plus "_xr" with x in the ring and "_tl" with the trigger after the loop,
 * and its params[0..6] = warps, tiles, unroll, split, stages, x_ring,
 * trigger (tables written before the trigger existed hold 0 there: the
 * start, as those kernels had). */
static inline void fill_kernel(tgemm__kernel *out, tgemm_route route, const char *prefix,
                               config cfg) {
  memset(out, 0, sizeof *out);
  out->route = route;
  snprintf(out->name, sizeof out->name, "%s_w%d_t%d_u%d_p%d_s%d%s%s", prefix, cfg.warps,
           cfg.tiles, cfg.unroll, cfg.stages, cfg.split, cfg.x_ring ? "_xr" : "",
           cfg.trigger == kTriggerAfterLoop ? "_tl" : "");
  out->params[0] = cfg.warps;
  out->params[1] = cfg.tiles;
  out->params[2] = cfg.unroll;
  out->params[3] = cfg.split;
  out->params[4] = cfg.stages;
  out->params[5] = cfg.x_ring;
  out->params[6] = cfg.trigger;
}

/* The unaligned-operand kernel `safe`, launched with cfg's split and
 * trigger (the choices that are not the kernel's shape). */
static inline config fallback_config(config safe, config cfg) {
  safe.split = cfg.split;
  safe.trigger = cfg.trigger;
  return safe;
}

/* `full` whole batches dealt to `workers` workers (see deal); false where
 * they do not fit an int (K beyond 2^36). */
static inline bool deal_batches(long long full, int workers, deal *out) {
  if (full < 0 || full > INT_MAX || workers < 1) return false;
  out->full = (int)full;
  out->per = (int)(full / workers);
  out->extra = (int)(full % workers);
  return true;
}

/* Do the offsets of x's rows fit the int offsets of an x ring's copy plan
 * (x_ring_copy::src: up to 15 rows of ldx elements)?  Kernels that copy x
 * through their ring need it; the element-load fallback does not. */
static inline bool x_offsets_fit(long long ldx) { return ldx >= 0 && ldx <= INT_MAX / 16; }

/* Do `rows` rows of `ld` bytes fit 32-bit byte offsets (the ring kernels'
 * weight rows)?  Where not, the element-load fallback runs. */
static inline bool rows_fit_u32(long long rows, long long ld) {
  return rows >= 0 && ld >= 0 && rows * ld <= (long long)UINT_MAX;
}

/* The configuration a kernel's params describe (see fill_kernel). */
static inline config config_of(const tgemm__kernel *kernel) {
  return config{kernel->params[0], kernel->params[1], kernel->params[2],
                kernel->params[4], kernel->params[3], kernel->params[5], kernel->params[6]};
}

/* Is cfg an instantiated kernel of `table` ({warps, tiles, unroll, stages,
 * x_ring} rows) with one of kSplits and a known trigger? */
template <size_t N>
static bool config_known(const int (&table)[N][5], config cfg) {
  bool kernel = false, split = false;
  for (const auto &kc : table)
    kernel |= kc[0] == cfg.warps && kc[1] == cfg.tiles && kc[2] == cfg.unroll &&
              kc[3] == cfg.stages && kc[4] == cfg.x_ring;
  for (int sp : kSplits) split |= sp == cfg.split;
  return kernel && split && (cfg.trigger == kTriggerAtStart || cfg.trigger == kTriggerAfterLoop);
}

/* The candidates of a shape: `best` first, then every row of `table` with
 * every split that useful(cfg) accepts, each with both triggers.  Returns
 * how many were written. */
template <size_t N, typename Useful>
static int list_candidates(const int (&table)[N][5], config best, tgemm_route route,
                           const char *prefix, Useful useful, tgemm__kernel *out, int cap) {
  int count = 0;
  fill_kernel(&out[count++], route, prefix, best);
  for (const auto &kc : table)
    for (int sp : kSplits)
      for (int trigger : {kTriggerAtStart, kTriggerAfterLoop}) {
        if (count >= cap) return count;
        const config cfg = {kc[0], kc[1], kc[2], kc[3], sp, kc[4], trigger};
        if (!memcmp(&cfg, &best, sizeof cfg) || !useful(cfg)) continue;
        fill_kernel(&out[count++], route, prefix, cfg);
      }
  return count;
}

/* The epilogue of a call. */
static inline epilogue epilogue_of(const tgemm__cuda_gemm_args *args) {
  epilogue ep;
  ep.bias = args->bias;
  ep.bias_dtype = args->bias_dtype;
  ep.y = args->y;
  ep.ldy = args->ldy;
  ep.y_f32 = args->y_dtype == TGEMM_F32;
  ep.m = (int)args->m;
  ep.n = (int)args->n;
  ep.exchange_at = 0;
  return ep;
}

/* Bias absent or of a dtype the epilogue reads. */
static inline bool bias_ok(const tgemm__cuda_gemm_args *args) {
  return !args->bias || args->bias_dtype == TGEMM_BF16 || args->bias_dtype == TGEMM_F32 ||
         args->bias_dtype == TGEMM_F16;
}

/* A shape the decode kernels take: 1 <= M <= max_m, bf16 x, bf16 or f32
 * y, rows that fit an int inside the kernel. */
static inline bool shape_ok(const tgemm__shape *s, int max_m) {
  if (!s || s->m < 1 || s->m > max_m || s->n < 1 || s->k < 1) return false;
  if (s->n > INT_MAX / 2) return false;
  if (s->dtype != TGEMM_BF16) return false;
  return s->out_dtype == TGEMM_BF16 || s->out_dtype == TGEMM_F32;
}

/* The shape of a call, as the candidate lists see it. */
static inline tgemm__shape shape_of(const tgemm__cuda_gemm_args *args) {
  return tgemm__shape{args->m, args->n, args->k, args->x_dtype, args->y_dtype, args->bias != NULL};
}

/* The operands of an MXFP4-weight decode call (W4A16): all present, leading
 * dimensions that hold a row, a bias the epilogue reads. */
static inline bool mxfp4_operands_ok(const tgemm__cuda_gemm_args *args) {
  const long long k_blocks = (args->k + 31) / 32;
  return args->x && args->w_packed && args->w_scales && args->y && args->ldx >= args->k &&
         args->ldw_packed >= k_blocks * 16 && args->ldw_scales >= k_blocks &&
         args->ldy >= args->n && bias_ok(args);
}

/* Programmatic dependent launch is on unless TGEMM_PDL=0 (read once): the
 * switch exists to measure what it gains, and to rule it out. */
static inline bool pdl_enabled() {
  static const bool on = [] {
    const char *v = getenv("TGEMM_PDL");
    return !(v && strcmp(v, "0") == 0);
  }();
  return on;
}

/* Launches fn over `groups` row groups, each a cluster of `split` blocks of
 * `warps` warps with `smem` bytes of dynamic shared memory (the limit is
 * raised first where needed; cudaErrorInvalidValue above kMaxSmem, e.g. an
 * x ring too large for this M), as a programmatic dependent launch (see
 * wait_for_previous): the launch latency and the first weight loads then
 * overlap the end of the kernel before. */
template <typename Args>
static cudaError_t launch(void (*fn)(Args), const Args &a, long long groups, int split, int warps,
                          size_t smem, cudaStream_t stream) {
  if (smem > kMaxSmem) return cudaErrorInvalidValue;
  cudaError_t err = tgemm__ensure_smem_limit(reinterpret_cast<const void *>(fn), smem);
  if (err != cudaSuccess) return err;
  cudaLaunchConfig_t lc = {};
  lc.gridDim = dim3((unsigned)(groups * split));
  lc.blockDim = dim3(32u * warps);
  lc.dynamicSmemBytes = smem;
  lc.stream = stream;
  cudaLaunchAttribute attr[2];
  unsigned n_attrs = 0;
  if (split > 1) {
    attr[n_attrs].id = cudaLaunchAttributeClusterDimension;
    attr[n_attrs].val.clusterDim.x = (unsigned)split;
    attr[n_attrs].val.clusterDim.y = 1;
    attr[n_attrs].val.clusterDim.z = 1;
    n_attrs++;
  }
  if (pdl_enabled()) {
    attr[n_attrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[n_attrs].val.programmaticStreamSerializationAllowed = 1;
    n_attrs++;
  }
  lc.attrs = n_attrs ? attr : NULL;
  lc.numAttrs = n_attrs;
  return cudaLaunchKernelEx(&lc, fn, a);
}

}  // namespace tgemm_decode

#endif

/* Skinny BF16 decode GEMM (see skinny_bf16.cuh).
 *
 * Work split.  A warp owns T tiles of 16 weight rows.  Lane (g, c) = (lane/4,
 * lane%4) loads 16 bytes (8 k) of rows g and g+8 of each tile, at k offset
 * 8c inside each 32-wide step, so a quad reads 64 contiguous bytes of a row
 * per step and U steps per batch.  Those 8 values are the A fragments of two
 * m16n8k16 MMAs: the order of k inside a reduction is free, so logical
 * k (2c, 2c+1) and (2c+8, 2c+9) stand for actual k (8c+0, 8c+1) and
 * (8c+2, 8c+3) in the first MMA and (8c+4..8c+7) in the second.  The B
 * fragment of lane (g, c) is then exactly the 16 bytes of x row g at the
 * same k: one plain 16-byte load, cached in L1 (x is small and shared).
 * The warps of a block, and the blocks of a cluster (split > 1), take
 * interleaved batches of K; their partial sums meet in shared memory.
 * Weights reach registers either through a register double buffer or a
 * per-warp cp.async ring in shared memory (more bytes in flight); ring
 * kernels may carry x in the same ring ("_xr"). */
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda/decode_common.cuh"
#include "cuda/skinny_bf16.cuh"

namespace {

using tgemm_decode::epilogue;
using tgemm_decode::load8_scalar;

struct skinny_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  const unsigned short *w;
  long long ldw;
  long long k;
  tgemm_decode::deal batches; /* whole batches of KU k, dealt to the workers */
  int split;
  int trigger; /* tgemm_decode::trigger: where the next kernel may launch */
  epilogue ep;
};

/* MT: 8-token groups (1 for M <= 8, 2 for M <= 16); WARPS per block; T row
 * tiles per warp; U 32-wide k steps per batch; ST: 0 = the next batch is
 * prefetched into registers (double buffer), >= 2 = each warp streams its
 * batches through a private ST-deep ring in shared memory with cp.async,
 * so that ST-1 batches stay in flight without holding registers; VEC:
 * 16-byte loads (aligned data) or element loads (any alignment, ST = 0).
 * XR: the ring also carries the batch's x (see tgemm_decode::x_ring_copy),
 * instead of each lane reading it from L2 (via L1) while the batch waits. */
template <int MT, int WARPS, int T, int U, int ST, bool VEC, bool XR>
__global__ void __launch_bounds__(WARPS * 32)
    skinny_bf16_kernel(const __grid_constant__ skinny_args a) {
  static_assert(ST == 0 || (VEC && ST >= 2), "the ring needs aligned 16-byte copies");
  static_assert(!XR || (ST > 0 && U <= 8), "x in the ring: ring kernels, U <= 8");
  constexpr int KU = 32 * U;       /* k per batch */
  constexpr int R = T * MT * 4;    /* f32 accumulators per lane */
  constexpr int SLOTS = T * U * 2; /* 16-byte loads per lane per batch */
  constexpr int XCH = 4 * U;       /* 16-byte x pieces per token per batch */
  constexpr int XSTAGE = XR ? MT * 8 * XCH : 0; /* x pieces per warp per ring stage */
  extern __shared__ uint4 smem[];  /* rings (ST > 0), then the reduction */
  if (a.trigger == tgemm_decode::kTriggerAtStart) tgemm_decode::allow_next_launch();
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int split = a.split;
  int group, rank;
  tgemm_decode::block_place(split, &group, &rank);
  tgemm_decode::begin_split<T, MT>(smem, split, a.ep);
  const int row0 = group * 16 * T;
  const int workers = split * WARPS;
  const int worker = rank * WARPS + warp;
  const int n = a.ep.n, m = a.ep.m;
  const long long k = a.k;

  /* Rows past n and tokens past m read a valid row; their sums are dropped. */
  const unsigned short *wp[T][2];
#pragma unroll
  for (int t = 0; t < T; t++)
#pragma unroll
    for (int h = 0; h < 2; h++)
      wp[t][h] = a.w + (long long)min(row0 + 16 * t + g + 8 * h, n - 1) * a.ldw + 8 * c;
  const unsigned short *xp[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) xp[mt] = a.x + (long long)min(8 * mt + g, m - 1) * a.ldx + 8 * c;

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.0f;
  const unsigned long long policy = tgemm_decode::evict_first_policy();

  auto mma_step = [&](const uint4(&v)[T][U][2], int j, const uint4(&xv)[MT]) {
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        float(&d)[4] = *reinterpret_cast<float(*)[4]>(&acc[(t * MT + mt) * 4]);
        tgemm_decode::mma_bf16(d, v[t][j][0].x, v[t][j][1].x, v[t][j][0].y, v[t][j][1].y,
                               xv[mt].x, xv[mt].y);
        tgemm_decode::mma_bf16(d, v[t][j][0].z, v[t][j][1].z, v[t][j][0].w, v[t][j][1].w,
                               xv[mt].z, xv[mt].w);
      }
  };
  auto load_x = [&](uint4(&xv)[U][MT], long long batch) {
#pragma unroll
    for (int j = 0; j < U; j++)
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        const unsigned short *p = xp[mt] + batch * KU + 32 * j;
        xv[j][mt] = VEC ? __ldg(reinterpret_cast<const uint4 *>(p)) : load8_scalar(p, 8);
      }
  };

  const long long full = a.batches.full; /* batches entirely inside K */
  /* The partial last batch, read with bounds checks by the worker whose
   * turn it is, before its main loop, so that its loads overlap the first
   * batch's.  (Copying it through the ring instead was faster on such K
   * but slowed the loop of every other shape: BENCHMARKS.md.) */
  auto tail = [&]() {
    if (full * KU >= k || worker != a.batches.extra) return;
    uint4 v[T][U][2];
#pragma unroll
    for (int j = 0; j < U; j++) {
      const long long kk = full * KU + 32 * j;
      const long long avail = k - kk - 8 * c;
      const bool whole = VEC && avail >= 8;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          v[t][j][h] = whole ? tgemm_decode::load_stream16(wp[t][h] + kk, policy)
                             : load8_scalar(wp[t][h] + kk, avail);
      uint4 xv[MT];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        xv[mt] = whole ? __ldg(reinterpret_cast<const uint4 *>(xp[mt] + kk))
                       : load8_scalar(xp[mt] + kk, avail);
      mma_step(v, j, xv);
    }
  };
  if constexpr (ST > 0) {
    uint4 *ring = smem + (size_t)warp * ST * SLOTS * 32 + lane;
    const long long mine = a.batches.count(worker);
    /* XR: the warp's x ring after the weight rings.  Lane (g, c) reads
     * piece 4j + c of token g; from U = 2 a token's pieces span 128 bytes
     * or more, so odd tokens store piece p at p ^ 4 and the quarter warp's
     * two tokens fall in different banks. */
    uint4 *xring = smem + (size_t)WARPS * ST * SLOTS * 32 + (size_t)warp * ST * XSTAGE;
    constexpr int XSW = U >= 2 ? 4 : 0;
    tgemm_decode::x_ring_copy<MT, XR ? XCH : 4> xcopy;
    if constexpr (XR) xcopy.init(lane, m, a.ldx, [](int r, int p) { return p ^ ((r & 1) * XSW); });
    const unsigned short *xin = a.x + 8 * (lane % XCH);
    const int xrd = g * XCH + c, xsw = (g & 1) * XSW;
    /* Copies batch i's weights, then its x (XR), into its ring stage. */
    auto issue_w = [&](long long i) {
      const long long batch = worker + i * workers;
      uint4 *slot = ring + (int)(i % ST) * SLOTS * 32;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++)
            tgemm_decode::cp_async16_stream(slot + ((t * U + j) * 2 + h) * 32,
                                            wp[t][h] + batch * KU + 32 * j, policy);
    };
    auto issue_x = [&](long long i) {
      const long long batch = worker + i * workers;
      if constexpr (XR) xcopy.issue(xring + (int)(i % ST) * XSTAGE, xin + batch * KU);
    };
    /* The first stages' weights are requested before x may be read (the
     * kernel before may still be writing it); the first copy group holds
     * all of them. */
#pragma unroll
    for (int s = 0; s < ST - 1; s++)
      if (s < mine) issue_w(s);
    tgemm_decode::wait_for_previous();
#pragma unroll
    for (int s = 0; s < ST - 1; s++) {
      if (s < mine) issue_x(s);
      tgemm_decode::cp_async_commit();
    }
    tail();
    for (long long i = 0; i < mine; i++) {
      if (i + ST - 1 < mine) issue_w(i + ST - 1), issue_x(i + ST - 1);
      tgemm_decode::cp_async_commit();
      uint4 xv[U][MT];
      if constexpr (!XR) load_x(xv, worker + i * workers); /* in flight while we wait */
      tgemm_decode::cp_async_wait<ST - 1>(); /* batch i has landed */
      const uint4 *slot = ring + (int)(i % ST) * SLOTS * 32;
      if constexpr (XR) {
        __syncwarp(); /* x was copied by other lanes */
        const uint4 *xs = xring + (int)(i % ST) * XSTAGE + xrd;
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int mt = 0; mt < MT; mt++) xv[j][mt] = xs[mt * 8 * XCH + ((4 * j) ^ xsw)];
      }
      uint4 v[T][U][2];
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++) v[t][j][h] = slot[((t * U + j) * 2 + h) * 32];
      if constexpr (XR) __syncwarp(); /* every lane has read x before the stage is refilled */
#pragma unroll
      for (int j = 0; j < U; j++) mma_step(v, j, xv[j]);
    }
    tgemm_decode::cp_async_wait<0>();
  } else {
    /* Register double buffer: the next batch's weights are in flight while
     * this one is multiplied. */
    auto load_w = [&](uint4(&v)[T][U][2], long long batch) {
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int j = 0; j < U; j++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            const unsigned short *p = wp[t][h] + batch * KU + 32 * j;
            v[t][j][h] = VEC ? tgemm_decode::load_stream16(p, policy) : load8_scalar(p, 8);
          }
    };
    auto compute = [&](const uint4(&v)[T][U][2], long long batch) {
      uint4 xv[U][MT];
      load_x(xv, batch);
#pragma unroll
      for (int j = 0; j < U; j++) mma_step(v, j, xv[j]);
    };
    long long batch = worker;
    uint4 va[T][U][2], vb[T][U][2];
    if (batch < full) load_w(va, batch);
    tgemm_decode::wait_for_previous(); /* before x is read */
    tail();
    while (batch < full) {
      if (batch + workers < full) load_w(vb, batch + workers);
      compute(va, batch);
      batch += workers;
      if (batch >= full) break;
      if (batch + workers < full) load_w(va, batch + workers);
      compute(vb, batch);
      batch += workers;
    }
  }
  if (a.trigger == tgemm_decode::kTriggerAfterLoop) tgemm_decode::allow_next_launch();
  if constexpr (ST > 0) __syncthreads(); /* the rings become the reduction buffer */
  tgemm_decode::reduce_and_store<WARPS, R, MT>(acc, smem, split, rank, row0, a.ep);
}

typedef void (*kernel_fn)(skinny_args);

using tgemm_decode::config;

/* The instantiated kernels {warps, tiles, unroll, stages, x in the ring};
 * candidates() offers each with every useful split that fits in shared
 * memory.  Register double buffers (stages 0) keep tiles x unroll <= 8: at
 * 16 they spill (ptxas -v).  Deeper cp.async rings (8 stages) and most
 * 4-warp blocks never won on the H100 (bench run of 2026-11-23) and were
 * dropped. */
#define TGEMM_SKINNY_CONFIGS(X)                                                            \
  X(8, 1, 2, 0, 0) X(8, 1, 4, 0, 0) X(8, 1, 8, 0, 0) X(8, 2, 2, 0, 0) X(8, 2, 4, 0, 0)      \
  X(8, 4, 2, 0, 0) X(4, 1, 2, 0, 0) X(4, 1, 4, 0, 0) X(4, 2, 4, 0, 0) X(16, 1, 2, 0, 0)     \
  X(16, 1, 4, 0, 0) X(16, 2, 2, 0, 0) X(8, 1, 2, 4, 0) X(8, 2, 1, 4, 0) X(8, 1, 2, 4, 1)    \
  X(8, 2, 1, 4, 1) X(8, 1, 2, 2, 1) X(16, 1, 2, 2, 1) X(4, 1, 2, 4, 1) X(8, 1, 4, 2, 1)     \
  X(4, 2, 2, 2, 1) X(16, 1, 1, 4, 1) X(4, 2, 2, 3, 1) X(16, 1, 2, 3, 1)

#define TGEMM_SKINNY_ROW(W, T, U, ST, XR) {W, T, U, ST, XR},
const int kConfigs[][5] = {TGEMM_SKINNY_CONFIGS(TGEMM_SKINNY_ROW)};
#undef TGEMM_SKINNY_ROW

kernel_fn find_vec_kernel(int mt, config cfg) {
#define TGEMM_SKINNY_FIND(W, T, U, ST, XR)                                       \
  if (cfg.warps == W && cfg.tiles == T && cfg.unroll == U && cfg.stages == ST && \
      cfg.x_ring == XR)                                                          \
    return mt == 1 ? skinny_bf16_kernel<1, W, T, U, ST, true, XR>                \
                   : skinny_bf16_kernel<2, W, T, U, ST, true, XR>;
  TGEMM_SKINNY_CONFIGS(TGEMM_SKINNY_FIND)
#undef TGEMM_SKINNY_FIND
  return NULL;
}

/* The element-load fallback for unaligned operands: one configuration. */
const config kSafe = {4, 1, 2, 0, 1, 0};
kernel_fn find_safe_kernel(int mt) {
  return mt == 1 ? skinny_bf16_kernel<1, 4, 1, 2, 0, false, false>
                 : skinny_bf16_kernel<2, 4, 1, 2, 0, false, false>;
}

/* Bytes of the weight (and x) rings. */
size_t ring_bytes(config cfg, int mt) {
  size_t ring = (size_t)cfg.warps * cfg.stages * cfg.tiles * cfg.unroll * 2 * 32 * 16;
  if (cfg.x_ring) ring += (size_t)cfg.warps * cfg.stages * mt * 8 * 4 * cfg.unroll * 16;
  return ring;
}

/* Dynamic shared memory: the rings or the reduction buffer, then the
 * cluster's exchange area (tgemm_decode::decode_smem_bytes). */
size_t smem_bytes(config cfg, int mt) {
  return tgemm_decode::decode_smem_bytes(ring_bytes(cfg, mt), cfg.warps, cfg.tiles, mt, cfg.split);
}

/* Each worker (warp of the cluster) must get at least one k batch, and the
 * rings must fit. */
bool config_useful(const tgemm__shape *s, config cfg) {
  long long batches = (s->k + 32LL * cfg.unroll - 1) / (32LL * cfg.unroll);
  if (smem_bytes(cfg, s->m > 8 ? 2 : 1) > tgemm_decode::kMaxSmem) return false;
  return cfg.split == 1 || batches >= (long long)cfg.split * cfg.warps;
}

/* The built-in choice (candidates[0]).  A rule read off the graph-timed
 * tuner runs of 2026-11-24 on the H100, with the kernels launched as
 * dependent launches (bench/device/suite.sh graphtune: every candidate
 * timed on the nine DeepSeek-V3 projections x M = 1..16, cold weights,
 * calls back to back); it is within 5% of the fastest candidate at each
 * of the 45 points, and within 1% at 42.  The next kernel may launch at
 * the start everywhere; x goes through the ring ("_xr") except on long
 * rows and on the small short-row weight up to M = 8:
 * - fewer 16-row tiles than half the SMs (N = 576): 8 warps of two k
 *   steps on a 4-deep ring, split 4 (since the cluster exchange of
 *   2026-11-25: 4.42-4.59 us at M <= 8 against 5.13-5.21 for 16 warps
 *   unsplit); from M = 9 on a 2-deep ring, split 8;
 * - at most one tile per SM (N <= 2112): 16 warps of two steps on a
 *   3-deep ring; from M = 9, 8 warps on a 4-deep ring;
 * - long rows (K >= 8192): register double buffers, 8 warps of 4 steps,
 *   two tiles from M = 9;
 * - short rows (K <= 1024): very tall weights (>= 1024 tiles) 4 warps of
 *   two tiles, 2 steps on a 2-deep ring; else 8 warps of four tiles with
 *   register double buffers (8 warps of one tile on a 2-deep ring from
 *   M = 9);
 * - otherwise (K = 1536..2048 here) up to two tiles per SM: 8 warps of 2
 *   steps on a 4-deep ring (4 warps from M = 9); from 1024 tiles 2 steps
 *   on a 2-deep ring, 16 warps (8 from M = 9); between: 8 warps of two
 *   tiles, one step on a 4-deep ring. */
config default_config(const tgemm__shape *s, int sm_count) {
  const long long tiles16 = (s->n + 15) / 16;
  const bool wide_m = s->m > 8;
  config cfg;
  if (2 * tiles16 < sm_count) {
    cfg = wide_m ? config{8, 1, 2, 2, 8, 1} : config{8, 1, 2, 4, 4, 1};
    while (cfg.split > 1 && !config_useful(s, cfg)) cfg.split /= 2;
  } else if (tiles16 <= sm_count) {
    cfg = wide_m ? config{8, 1, 2, 4, 1, 1} : config{16, 1, 2, 3, 1, 1};
  } else if (s->k >= 8192) {
    cfg = config{8, wide_m ? 2 : 1, 4, 0, 1, 0};
  } else if (s->k <= 1024) {
    if (tiles16 >= 1024)
      cfg = config{4, 2, 2, 2, 1, 1};
    else
      cfg = wide_m ? config{8, 1, 2, 2, 1, 1} : config{8, 4, 2, 0, 1, 0};
  } else if (tiles16 <= 2LL * sm_count) {
    cfg = wide_m ? config{4, 1, 2, 4, 1, 1} : config{8, 1, 2, 4, 1, 1};
  } else if (tiles16 >= 1024) {
    cfg = wide_m ? config{8, 1, 2, 2, 1, 1} : config{16, 1, 2, 2, 1, 1};
  } else {
    cfg = config{8, 2, 1, 4, 1, 1};
  }
  if (!config_useful(s, cfg)) cfg = config{8, 1, 2, 0, 1, 0}; /* rings too large */
  return cfg;
}

}  // namespace

extern "C" int tgemm__skinny_bf16_candidates(const tgemm__shape *shape, int sm_count,
                                             tgemm__kernel *out, int cap) {
  if (!tgemm_decode::shape_ok(shape, TGEMM__SKINNY_MAX_M) || !out || cap <= 0) return 0;
  if (sm_count <= 0) sm_count = 132;
  const config best = default_config(shape, sm_count);
  return tgemm_decode::list_candidates(
      kConfigs, best, TGEMM_ROUTE_SKINNY, "skinny_bf16",
      [shape](config cfg) { return config_useful(shape, cfg); }, out, cap);
}

extern "C" cudaError_t tgemm__skinny_bf16_run(const tgemm__kernel *kernel,
                                              const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_SKINNY) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "skinny_bf16_", 12) != 0) return cudaErrorInvalidValue;
  config cfg = tgemm_decode::config_of(kernel);
  if (!tgemm_decode::config_known(kConfigs, cfg)) return cudaErrorInvalidValue;
  const tgemm__shape shape = tgemm_decode::shape_of(args);
  if (!tgemm_decode::shape_ok(&shape, TGEMM__SKINNY_MAX_M) || args->w_dtype != TGEMM_BF16 ||
      !args->x || !args->w || !args->y)
    return cudaErrorInvalidValue;
  if (args->ldx < args->k || args->ldw < args->k || args->ldy < args->n)
    return cudaErrorInvalidValue;
  if (!tgemm_decode::bias_ok(args)) return cudaErrorInvalidValue;

  const int mt = args->m > 8 ? 2 : 1;
  /* The ring kernels copy 16-byte pieces and keep x's offsets in 32 bits;
   * the element-load fallback takes every other call. */
  const bool ring_ok = ((uintptr_t)args->x % 16 == 0) && ((uintptr_t)args->w % 16 == 0) &&
                       args->ldx % 8 == 0 && args->ldw % 8 == 0 &&
                       tgemm_decode::x_offsets_fit(args->ldx);
  kernel_fn fn;
  if (ring_ok) {
    fn = find_vec_kernel(mt, cfg);
  } else {
    cfg = tgemm_decode::fallback_config(kSafe, cfg);
    fn = find_safe_kernel(mt);
  }
  if (!fn) return cudaErrorInvalidValue;
  const size_t smem = smem_bytes(cfg, mt);

  skinny_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.w = static_cast<const unsigned short *>(args->w);
  a.ldw = args->ldw;
  a.k = args->k;
  if (!tgemm_decode::deal_batches(args->k / (32LL * cfg.unroll), cfg.split * cfg.warps,
                                  &a.batches))
    return cudaErrorInvalidValue;
  a.split = cfg.split;
  a.trigger = cfg.trigger;
  a.ep = tgemm_decode::epilogue_of(args);
  a.ep.exchange_at =
      (int)tgemm_decode::exchange_offset(ring_bytes(cfg, mt), cfg.warps, cfg.tiles, mt, cfg.split);
  const long long groups = (args->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  return tgemm_decode::launch(fn, a, groups, cfg.split, cfg.warps, smem, args->stream);
}

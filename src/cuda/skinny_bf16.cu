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
 * interleaved batches of K; their partial sums meet in shared memory. */
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda/skinny_bf16.cuh"

namespace {

using tgemm_decode::epilogue;

struct skinny_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  const unsigned short *w;
  long long ldw;
  long long k;
  int split;
  epilogue ep;
};

/* 8 consecutive bf16 (as raw bits) of which the first `avail` are read and
 * the rest are zero: for the K tail and for unaligned rows. */
__device__ __forceinline__ uint4 load8_scalar(const unsigned short *p, long long avail) {
  unsigned h[8];
#pragma unroll
  for (int i = 0; i < 8; i++) h[i] = i < avail ? (unsigned)__ldg(p + i) : 0u;
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

/* MT: 8-token groups (1 for M <= 8, 2 for M <= 16); WARPS per block; T row
 * tiles per warp; U 32-wide k steps per load batch; VEC: 16-byte loads
 * (aligned data) or element loads (any alignment). */
template <int MT, int WARPS, int T, int U, bool VEC>
__global__ void __launch_bounds__(WARPS * 32)
    skinny_bf16_kernel(const __grid_constant__ skinny_args a) {
  constexpr int KU = 32 * U; /* k per batch */
  constexpr int R = T * MT * 4; /* f32 accumulators per lane */
  __shared__ float red[WARPS * R * 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  const int split = a.split;
  const int rank = (int)(blockIdx.x % (unsigned)split);
  const int row0 = (int)(blockIdx.x / (unsigned)split) * 16 * T;
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
  auto compute = [&](const uint4(&v)[T][U][2], long long batch) {
#pragma unroll
    for (int j = 0; j < U; j++) {
      uint4 xv[MT];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) {
        const unsigned short *p = xp[mt] + batch * KU + 32 * j;
        xv[mt] = VEC ? __ldg(reinterpret_cast<const uint4 *>(p)) : load8_scalar(p, 8);
      }
      mma_step(v, j, xv);
    }
  };

  /* Full batches, double-buffered: the next batch's weights are in flight
   * while this one is multiplied. */
  const long long full = k / KU;
  long long batch = worker;
  uint4 va[T][U][2], vb[T][U][2];
  if (batch < full) load_w(va, batch);
  while (batch < full) {
    if (batch + workers < full) load_w(vb, batch + workers);
    compute(va, batch);
    batch += workers;
    if (batch >= full) break;
    if (batch + workers < full) load_w(va, batch + workers);
    compute(vb, batch);
    batch += workers;
  }
  /* The partial last batch, read with bounds checks by the worker whose
   * turn it is. */
  if (full * KU < k && worker == (int)(full % workers)) {
#pragma unroll
    for (int j = 0; j < U; j++) {
      const long long kk = full * KU + 32 * j;
      const long long avail = k - kk - 8 * c;
      const bool whole = VEC && avail >= 8;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++)
          va[t][j][h] = whole ? tgemm_decode::load_stream16(wp[t][h] + kk, policy)
                              : load8_scalar(wp[t][h] + kk, avail);
      uint4 xv[MT];
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
        xv[mt] = whole ? __ldg(reinterpret_cast<const uint4 *>(xp[mt] + kk))
                       : load8_scalar(xp[mt] + kk, avail);
      mma_step(va, j, xv);
    }
  }
  tgemm_decode::reduce_and_store<WARPS, R, MT>(acc, red, split, row0, a.ep);
}

typedef void (*kernel_fn)(skinny_args);

/* The instantiated parameter grid; candidates() offers exactly these.
 * tiles x unroll stays <= 8: at 16 the double buffer spills (ptxas -v). */
const int kWarps[] = {4, 8};
const int kTileUnroll[][2] = {{1, 2}, {1, 4}, {2, 2}, {2, 4}, {4, 2}};
const int kSplit[] = {1, 2, 4, 8};

kernel_fn find_vec_kernel(int mt, int warps, int tiles, int unroll) {
#define TGEMM_SKINNY_K(MT, W, T, U) \
  if (mt == MT && warps == W && tiles == T && unroll == U) return skinny_bf16_kernel<MT, W, T, U, true>;
#define TGEMM_SKINNY_T(MT, W)                                                 \
  TGEMM_SKINNY_K(MT, W, 1, 2) TGEMM_SKINNY_K(MT, W, 1, 4) TGEMM_SKINNY_K(MT, W, 2, 2) \
  TGEMM_SKINNY_K(MT, W, 2, 4) TGEMM_SKINNY_K(MT, W, 4, 2)
#define TGEMM_SKINNY_W(MT) TGEMM_SKINNY_T(MT, 4) TGEMM_SKINNY_T(MT, 8)
  TGEMM_SKINNY_W(1)
  TGEMM_SKINNY_W(2)
#undef TGEMM_SKINNY_W
#undef TGEMM_SKINNY_T
#undef TGEMM_SKINNY_K
  return NULL;
}

/* The element-load fallback for unaligned operands: one configuration. */
const int kSafeWarps = 4, kSafeTiles = 1, kSafeUnroll = 2;
kernel_fn find_safe_kernel(int mt) {
  return mt == 1 ? skinny_bf16_kernel<1, kSafeWarps, kSafeTiles, kSafeUnroll, false>
                 : skinny_bf16_kernel<2, kSafeWarps, kSafeTiles, kSafeUnroll, false>;
}

struct skinny_config {
  int warps, tiles, unroll, split;
};

bool config_known(skinny_config cfg) {
  bool warps = false, tile_unroll = false, split = false;
  for (int w : kWarps) warps |= w == cfg.warps;
  for (const auto &tu : kTileUnroll) tile_unroll |= tu[0] == cfg.tiles && tu[1] == cfg.unroll;
  for (int sp : kSplit) split |= sp == cfg.split;
  return warps && tile_unroll && split;
}

/* Each worker (warp of the cluster) must get at least one k batch. */
bool config_useful(const tgemm__shape *s, skinny_config cfg) {
  long long batches = (s->k + 32LL * cfg.unroll - 1) / (32LL * cfg.unroll);
  if (cfg.split > 1 && batches < (long long)cfg.split * cfg.warps) return false;
  return true;
}

/* The built-in choice.  Rule of thumb until the device measurements below
 * replace it: one 16-row tile per warp, 8 warps, 4 steps in flight, and
 * split K across a cluster until there are about two blocks per SM. */
skinny_config default_config(const tgemm__shape *s, int sm_count) {
  skinny_config cfg = {8, 1, 4, 1};
  long long groups = (s->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  while (cfg.split < 8 && groups * cfg.split < 2LL * sm_count) {
    skinny_config next = cfg;
    next.split *= 2;
    if (!config_useful(s, next)) break;
    cfg = next;
  }
  return cfg;
}

void fill_kernel(tgemm__kernel *out, skinny_config cfg) {
  memset(out, 0, sizeof *out);
  out->route = TGEMM_ROUTE_SKINNY;
  snprintf(out->name, sizeof out->name, "skinny_bf16_w%d_t%d_u%d_s%d", cfg.warps, cfg.tiles,
           cfg.unroll, cfg.split);
  out->params[0] = cfg.warps;
  out->params[1] = cfg.tiles;
  out->params[2] = cfg.unroll;
  out->params[3] = cfg.split;
}

bool shape_ok(const tgemm__shape *s) {
  if (!s || s->m < 1 || s->m > TGEMM__SKINNY_MAX_M || s->n < 1 || s->k < 1) return false;
  if (s->n > INT_MAX / 2) return false; /* rows are int inside the kernel */
  if (s->dtype != TGEMM_BF16) return false;
  return s->out_dtype == TGEMM_BF16 || s->out_dtype == TGEMM_F32;
}

}  // namespace

extern "C" int tgemm__skinny_bf16_candidates(const tgemm__shape *shape, int sm_count,
                                             tgemm__kernel *out, int cap) {
  if (!shape_ok(shape) || !out || cap <= 0) return 0;
  if (sm_count <= 0) sm_count = 132;
  skinny_config best = default_config(shape, sm_count);
  int count = 0;
  fill_kernel(&out[count++], best);
  for (int w : kWarps)
    for (const auto &tu : kTileUnroll)
      for (int sp : kSplit) {
        if (count >= cap) return count;
        skinny_config cfg = {w, tu[0], tu[1], sp};
        if (!memcmp(&cfg, &best, sizeof cfg) || !config_useful(shape, cfg)) continue;
        fill_kernel(&out[count++], cfg);
      }
  return count;
}

extern "C" cudaError_t tgemm__skinny_bf16_run(const tgemm__kernel *kernel,
                                              const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_SKINNY) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "skinny_bf16_", 12) != 0) return cudaErrorInvalidValue;
  skinny_config cfg = {kernel->params[0], kernel->params[1], kernel->params[2],
                       kernel->params[3]};
  if (!config_known(cfg)) return cudaErrorInvalidValue;
  tgemm__shape shape = {args->m, args->n, args->k, args->x_dtype, args->y_dtype,
                        args->bias != NULL};
  if (!shape_ok(&shape) || args->w_dtype != TGEMM_BF16 || !args->x || !args->w || !args->y)
    return cudaErrorInvalidValue;
  if (args->ldx < args->k || args->ldw < args->k || args->ldy < args->n)
    return cudaErrorInvalidValue;
  if (args->bias && args->bias_dtype != TGEMM_BF16 && args->bias_dtype != TGEMM_F32 &&
      args->bias_dtype != TGEMM_F16)
    return cudaErrorInvalidValue;
  if (args->m <= 0 || args->n <= 0) return cudaSuccess;

  const int mt = args->m > 8 ? 2 : 1;
  const bool aligned = ((uintptr_t)args->x % 16 == 0) && ((uintptr_t)args->w % 16 == 0) &&
                       args->ldx % 8 == 0 && args->ldw % 8 == 0;
  kernel_fn fn;
  if (aligned) {
    fn = find_vec_kernel(mt, cfg.warps, cfg.tiles, cfg.unroll);
  } else {
    cfg.warps = kSafeWarps;
    cfg.tiles = kSafeTiles;
    cfg.unroll = kSafeUnroll;
    fn = find_safe_kernel(mt);
  }
  if (!fn) return cudaErrorInvalidValue;

  skinny_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.w = static_cast<const unsigned short *>(args->w);
  a.ldw = args->ldw;
  a.k = args->k;
  a.split = cfg.split;
  a.ep.bias = args->bias;
  a.ep.bias_dtype = args->bias_dtype;
  a.ep.y = args->y;
  a.ep.ldy = args->ldy;
  a.ep.y_f32 = args->y_dtype == TGEMM_F32;
  a.ep.m = (int)args->m;
  a.ep.n = (int)args->n;

  const long long groups = (args->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  cudaLaunchConfig_t launch = {};
  launch.gridDim = dim3((unsigned)(groups * cfg.split));
  launch.blockDim = dim3(32u * cfg.warps);
  launch.stream = args->stream;
  cudaLaunchAttribute attr[1];
  if (cfg.split > 1) {
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = (unsigned)cfg.split;
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    launch.attrs = attr;
    launch.numAttrs = 1;
  }
  return cudaLaunchKernelEx(&launch, fn, a);
}

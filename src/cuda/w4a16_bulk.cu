/* Bulk-copy W4A16 decode GEMM (see w4a16_bulk.cuh).
 *
 * Shared memory of a block: x, then each warp's ring of ST stages, then
 * each warp's ST barriers.
 * - x: block b (32 k) of token r is 4 uint4 of regroup_x words at
 *   (b * 8 MT + r) * 5: the fifth uint4 of padding puts the 8 tokens a
 *   quarter warp reads in 8 different bank groups.  Zero past m and k.
 * - a stage: 16T weight rows of `wrow` uint4 (odd, for the same reason),
 *   then 16T scale rows of `srow` bytes.
 * Lane (g, c) takes block 4j + c of rows g and g+8 of each tile at step j,
 * as in the streaming kernel. */
#include <cuda_runtime.h>
#include <string.h>

#include "cuda/bulk_copy.cuh"
#include "cuda/w4a16_bulk.cuh"
#include "cuda/w4a16_decode.cuh"
#include "cuda/w4a16_stream.cuh"

namespace {

using tgemm_decode::config;
using tgemm_decode::epilogue;

constexpr int kXPad = 5; /* uint4 per token and block in shared memory */

struct bulk_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  int x_vec; /* 16-byte loads of x allowed */
  const unsigned char *wq;
  long long ldq;
  const unsigned char *ws;
  long long lds;
  long long k;
  int kb;          /* ceil(k / 32), a multiple of 16 */
  int kc;          /* blocks per stage (the last chunk of a row may be shorter), multiple of 16 */
  int chunks;      /* ceil(kb / kc) stages per tile */
  int wrow;        /* weight row stride in a stage, uint4: kc + 1 */
  int srow;        /* scale row stride in a stage, bytes */
  int stage_bytes; /* one stage */
  int x_blocks;    /* blocks of x staged (kb) */
  int units;       /* 16T-row tiles of the output */
  epilogue ep;
};

template <int MT, int WARPS, int T, int ST>
__global__ void __launch_bounds__(WARPS * 32) w4a16_bulk_kernel(const __grid_constant__ bulk_args a) {
  constexpr int R = T * MT * 4;
  constexpr int ROWS = 16 * T;
  constexpr int XB = 8 * MT * kXPad; /* uint4 per block of x */
  extern __shared__ uint4 smem[];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, c = lane & 3;
  uint4 *xs = smem;
  unsigned char *rings = reinterpret_cast<unsigned char *>(smem + (size_t)a.x_blocks * XB);
  unsigned char *ring = rings + (size_t)warp * ST * a.stage_bytes;
  unsigned long long *bars =
      reinterpret_cast<unsigned long long *>(rings + (size_t)WARPS * ST * a.stage_bytes) + warp * ST;
  const int gw = (int)blockIdx.x * WARPS + warp, nw = (int)gridDim.x * WARPS;
  const int mine = gw < a.units ? (a.units - 1 - gw) / nw + 1 : 0; /* tiles gw, gw + nw, ... */
  const int total = mine * a.chunks;                               /* stages this warp consumes */
  const unsigned long long policy = tgemm_decode::evict_first_policy();

  if (lane == 0) {
#pragma unroll
    for (int s = 0; s < ST; s++) tgemm_bulk::barrier_init(&bars[s]);
  }
  tgemm_bulk::barrier_init_fence();
  __syncwarp();

  /* The next chunk (tile gw + in_tile * nw, blocks in_chunk * kc ...) into
   * stage s: lane 0 arms the barrier, then one copy per weight row and per
   * scale row.  Rows past n repeat row n-1 (never stored). */
  int in_tile = 0, in_chunk = 0;
  auto issue = [&](int s) {
    unsigned char *stage = ring + (size_t)s * a.stage_bytes;
    const int b0 = in_chunk * a.kc, len = min(a.kc, a.kb - b0);
    if (lane == 0) tgemm_bulk::barrier_expect(&bars[s], ROWS * 17u * (unsigned)len);
    __syncwarp();
    tgemm_bulk::async_proxy_fence();
    const long long row0 = (long long)(gw + in_tile * nw) * ROWS;
#pragma unroll
    for (int i0 = 0; i0 < 2 * ROWS; i0 += 32) {
      const int i = i0 + lane, r = i % ROWS;
      if (i >= 2 * ROWS) break;
      const long long row = min(row0 + r, (long long)a.ep.n - 1);
      if (i < ROWS)
        tgemm_bulk::copy(stage + (size_t)r * a.wrow * 16, a.wq + row * a.ldq + b0 * 16, len * 16,
                         &bars[s], policy);
      else
        tgemm_bulk::copy(stage + (size_t)ROWS * a.wrow * 16 + r * a.srow, a.ws + row * a.lds + b0,
                         len, &bars[s], policy);
    }
    if (++in_chunk == a.chunks) in_chunk = 0, in_tile++;
  };
#pragma unroll
  for (int s = 0; s < ST; s++)
    if (s < total) issue(s);

  /* x into shared memory while the first chunks arrive. */
  for (int i = threadIdx.x; i < a.x_blocks * 8 * MT; i += WARPS * 32) {
    const int r = i / a.x_blocks, b = i - r * a.x_blocks;
    const long long k0 = (long long)b * 32;
    const long long avail = r < a.ep.m ? a.k - k0 : 0;
    const unsigned short *p = a.x + (long long)min(r, a.ep.m - 1) * a.ldx + k0;
    uint4 *dst = xs + (size_t)b * XB + r * kXPad;
#pragma unroll
    for (int w = 0; w < 4; w++) {
      const uint4 raw = (a.x_vec && avail >= 32)
                            ? __ldg(reinterpret_cast<const uint4 *>(p + 8 * w))
                            : tgemm_decode::load8_scalar(p + 8 * w, avail - 8 * w);
      unsigned q[4];
      tgemm_w4::regroup_x(raw, q);
      dst[w] = make_uint4(q[0], q[1], q[2], q[3]);
    }
  }
  __syncthreads();

  float acc[R], acc_odd[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = acc_odd[r] = 0.0f;
  int tile = 0, chunk = 0;
  for (int q = 0; q < total; q++) {
    const int s = q % ST;
    tgemm_bulk::barrier_wait(&bars[s], (unsigned)(q / ST) & 1u);
    const unsigned char *stage = ring + (size_t)s * a.stage_bytes;
    const uint4 *wl = reinterpret_cast<const uint4 *>(stage) + g * a.wrow + c;
    const unsigned char *sl = stage + (size_t)ROWS * a.wrow * 16 + g * a.srow + c;
    const uint4 *xl = xs + (size_t)(chunk * a.kc + c) * XB + g * kXPad;
    const int steps = min(a.kc, a.kb - chunk * a.kc) / 4;
    /* Step j: blocks 4j..4j+3 of the chunk (all real: kc and kb are
     * multiples of 16). */
    auto step = [&](int j) {
      uint4 v[T][2], xv[MT][4];
      unsigned sc[T][2];
      bool big = false;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          v[t][h] = wl[(16 * t + 8 * h) * a.wrow + 4 * j];
          sc[t][h] = sl[(16 * t + 8 * h) * a.srow + 4 * j];
          big |= tgemm_w4::scale_is_big(sc[t][h]);
        }
#pragma unroll
      for (int mt = 0; mt < MT; mt++)
#pragma unroll
        for (int w = 0; w < 4; w++) xv[mt][w] = xl[(size_t)j * 4 * XB + mt * 8 * kXPad + w];
      /* Scales above 2^1 are rare in real weights: one vote keeps their
       * second multiply off the common path. */
      if (__any_sync(0xffffffffu, big))
        tgemm_w4::block_step<MT, T, R, true>(acc, acc_odd, v, sc, xv, true);
      else
        tgemm_w4::block_step<MT, T, R, true>(acc, acc_odd, v, sc, xv, false);
    };
#pragma unroll 2
    for (int j = 0; j < steps; j++) step(j);
    __syncwarp(); /* every lane has read the stage before it is refilled */
    if (q + ST < total) issue(s);
    if (++chunk == a.chunks) {
      const int row0 = (gw + tile * nw) * ROWS;
#pragma unroll
      for (int r = 0; r < R; r++) {
        tgemm_decode::store_one<MT>(a.ep, row0, r * 32 + lane, acc[r] + acc_odd[r]);
        acc[r] = acc_odd[r] = 0.0f;
      }
      chunk = 0, tile++;
    }
  }
}

typedef void (*kernel_fn)(bulk_args);

/* The instantiated kernels {warps, tiles, chunk, stages, 1}: a stage holds
 * 16·tiles rows of 512·chunk k. */
#define TGEMM_W4B_CONFIGS(X)                                                              \
  X(4, 1, 1, 4) X(8, 1, 1, 3) X(8, 1, 1, 4) X(12, 1, 1, 2) X(12, 1, 1, 3) X(16, 1, 1, 2)   \
  X(16, 1, 1, 3) X(8, 2, 1, 2) X(8, 2, 1, 3) X(8, 1, 2, 2) X(12, 1, 2, 2)

#define TGEMM_W4B_ROW(W, T, U, ST) {W, T, U, ST, 1},
const int kConfigs[][5] = {TGEMM_W4B_CONFIGS(TGEMM_W4B_ROW)};
#undef TGEMM_W4B_ROW

kernel_fn find_kernel(int mt, config cfg) {
#define TGEMM_W4B_FIND(W, T, U, ST)                                                 \
  if (cfg.warps == W && cfg.tiles == T && cfg.unroll == U && cfg.stages == ST)     \
    return mt == 1 ? w4a16_bulk_kernel<1, W, T, ST> : w4a16_bulk_kernel<2, W, T, ST>;
  TGEMM_W4B_CONFIGS(TGEMM_W4B_FIND)
#undef TGEMM_W4B_FIND
  return NULL;
}

/* The shared-memory geometry of a shape and kernel. */
struct geometry {
  int kb, kc, chunks, wrow, srow, stage_bytes;
  size_t x_bytes;
};

geometry geometry_of(long long k, int mt, config cfg) {
  geometry gm;
  gm.kb = (int)((k + 31) / 32);
  gm.kc = gm.kb < 16 * cfg.unroll ? gm.kb : 16 * cfg.unroll;
  gm.chunks = (gm.kb + gm.kc - 1) / gm.kc;
  /* Odd numbers of 16-byte units: rows g = 0..7 read 8 different banks. */
  gm.wrow = gm.kc + 1;
  gm.srow = gm.kc / 16 % 2 ? gm.kc : gm.kc + 16;
  gm.stage_bytes = 16 * cfg.tiles * (gm.wrow * 16 + gm.srow);
  gm.x_bytes = (size_t)gm.kb * 8 * mt * kXPad * 16;
  return gm;
}

size_t smem_bytes(const geometry &gm, config cfg) {
  return gm.x_bytes + (size_t)cfg.warps * cfg.stages * (gm.stage_bytes + 8);
}

/* Listed where the library's own weights take the bulk path (16-byte
 * scale rows: ceil(K/32) a multiple of 16) and everything fits. */
bool config_useful(const tgemm__shape *s, config cfg) {
  if (cfg.split != 1 || s->k > INT_MAX / 2) return false;
  if (cfg.unroll < 1) return false;
  const geometry gm = geometry_of(s->k, s->m > 8 ? 2 : 1, cfg);
  return gm.kb % 16 == 0 && smem_bytes(gm, cfg) <= tgemm_decode::kMaxSmem;
}

/* The streaming kernels' default, for operands the bulk copies cannot take. */
cudaError_t run_stream_default(const tgemm__cuda_gemm_args *args) {
  const tgemm__shape shape = tgemm_decode::shape_of(args);
  tgemm__kernel fallback;
  if (tgemm__w4a16_stream_candidates(&shape, args->sm_count, &fallback, 1) < 1)
    return cudaErrorInvalidValue;
  return tgemm__w4a16_stream_run(&fallback, args);
}

}  // namespace

extern "C" int tgemm__w4a16_bulk_candidates(const tgemm__shape *shape, tgemm__kernel *out,
                                            int cap) {
  if (!tgemm_decode::shape_ok(shape, TGEMM__W4A16_STREAM_MAX_M) || !out || cap <= 0) return 0;
  const auto useful = [shape](config cfg) { return config_useful(shape, cfg); };
  /* list_candidates puts its `best` first: the first useful row. */
  for (const auto &kc : kConfigs) {
    const config first = {kc[0], kc[1], kc[2], kc[3], 1, kc[4]};
    if (useful(first))
      return tgemm_decode::list_candidates(kConfigs, first, TGEMM_ROUTE_W4A16, "w4a16_bulk", useful,
                                           out, cap);
  }
  return 0;
}

extern "C" cudaError_t tgemm__w4a16_bulk_run(const tgemm__kernel *kernel,
                                             const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_W4A16) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "w4a16_bulk_", 11) != 0) return cudaErrorInvalidValue;
  const config cfg = tgemm_decode::config_of(kernel);
  if (!tgemm_decode::config_known(kConfigs, cfg)) return cudaErrorInvalidValue;
  const tgemm__shape shape = tgemm_decode::shape_of(args);
  if (!tgemm_decode::shape_ok(&shape, TGEMM__W4A16_STREAM_MAX_M) ||
      !tgemm_decode::mxfp4_operands_ok(args) || !config_useful(&shape, cfg))
    return cudaErrorInvalidValue;
  const bool bulk_ok = (uintptr_t)args->w_packed % 16 == 0 && args->ldw_packed % 16 == 0 &&
                       (uintptr_t)args->w_scales % 16 == 0 && args->ldw_scales % 16 == 0;
  if (!bulk_ok) return run_stream_default(args);

  const int mt = args->m > 8 ? 2 : 1;
  kernel_fn fn = find_kernel(mt, cfg);
  if (!fn) return cudaErrorInvalidValue;
  const geometry gm = geometry_of(args->k, mt, cfg);
  const size_t smem = smem_bytes(gm, cfg);

  bulk_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.x_vec = (uintptr_t)args->x % 16 == 0 && args->ldx % 8 == 0;
  a.wq = args->w_packed;
  a.ldq = args->ldw_packed;
  a.ws = args->w_scales;
  a.lds = args->ldw_scales;
  a.k = args->k;
  a.kb = gm.kb;
  a.kc = gm.kc;
  a.chunks = gm.chunks;
  a.wrow = gm.wrow;
  a.srow = gm.srow;
  a.stage_bytes = gm.stage_bytes;
  a.x_blocks = gm.kb;
  a.units = (int)((args->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles));
  a.ep = tgemm_decode::epilogue_of(args);

  /* As many blocks as stay resident, fewer when the tiles run out. */
  cudaError_t err = tgemm__ensure_smem_limit(reinterpret_cast<const void *>(fn), smem);
  if (err != cudaSuccess) return err;
  int per_sm = 0;
  err = tgemm__resident_blocks(reinterpret_cast<const void *>(fn), 32 * cfg.warps, smem, &per_sm);
  if (err != cudaSuccess) return err;
  if (per_sm < 1) return cudaErrorInvalidConfiguration;
  const int sm_count = args->sm_count > 0 ? args->sm_count : 132;
  const long long blocks = (a.units + cfg.warps - 1) / cfg.warps;
  const long long grid = blocks < (long long)per_sm * sm_count ? blocks : (long long)per_sm * sm_count;
  return tgemm_decode::launch(fn, a, grid, 1, cfg.warps, smem, args->stream);
}

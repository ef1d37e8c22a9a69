/* Streaming W4A16 decode GEMM (see w4a16_stream.cuh).
 *
 * Same work split as skinny_bf16.cu, with one MXFP4 block (16 bytes, 32 k,
 * one scale) per lane and load: lane (g, c) reads block 4j + c of a batch
 * for rows g and g+8 of each tile.  A 32-bit word of the block holds k
 * 8w..8w+7, element 2i in the low nibble of byte i.  Nibbles j and j+4 sit
 * 16 bits apart, so one shift-and-mask puts both into a bf16 pair at once:
 * magnitude bits (e1 e0 m) land on bf16 bits 8..6, which is the E2M1 value
 * times 2^-126 (code 1, 0.5, becomes the bf16 subnormal 2^-127), and the
 * sign bit lands on bit 15.  Multiplying by 2^(s-1) (exact: both factors are
 * powers of two times at most 2 significant bits) gives value · 2^(s-127);
 * scales above 128 need 2^(s-1) > bf16 max and take a second multiply.  The
 * reduction sees k in the order (8w+j, 8w+j+4), so x's 16-byte loads are
 * regrouped with byte permutes to match. */
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cuda/skinny_bf16.cuh" /* tgemm_decode:: device helpers */
#include "cuda/w4a16_stream.cuh"

namespace {

using tgemm_decode::epilogue;

struct w4_args {
  const unsigned short *x; /* bf16 bits */
  long long ldx;
  const unsigned char *wq; /* packed E2M1 pairs */
  long long ldq;
  const unsigned char *ws; /* E8M0 scales */
  long long lds;
  long long k;
  long long k_blocks; /* ceil(k / 32) */
  int split;
  epilogue ep;
};

__device__ __forceinline__ uint4 load8_scalar(const unsigned short *p, long long avail) {
  unsigned h[8];
#pragma unroll
  for (int i = 0; i < 8; i++) h[i] = i < avail ? (unsigned)__ldg(p + i) : 0u;
  return make_uint4(h[0] | h[1] << 16, h[2] | h[3] << 16, h[4] | h[5] << 16, h[6] | h[7] << 16);
}

__device__ __forceinline__ uint4 load16_bytes(const unsigned char *p) {
  unsigned w[4];
#pragma unroll
  for (int i = 0; i < 4; i++)
    w[i] = (unsigned)__ldg(p + 4 * i) | (unsigned)__ldg(p + 4 * i + 1) << 8 |
           (unsigned)__ldg(p + 4 * i + 2) << 16 | (unsigned)__ldg(p + 4 * i + 3) << 24;
  return make_uint4(w[0], w[1], w[2], w[3]);
}

/* Nibbles j and j+4 of q as a bf16 pair, each E2M1 value times 2^-126. */
template <int J>
__device__ __forceinline__ unsigned e2m1_pair(unsigned q) {
  const unsigned t = q >> (4 * J);
  return ((t << 6) & 0x01C001C0u) | ((t << 12) & 0x80008000u);
}

__device__ __forceinline__ unsigned mul_bf16x2(unsigned a, unsigned b) {
  unsigned d;
  asm("mul.rn.bf16x2 %0, %1, %2;" : "=r"(d) : "r"(a), "r"(b));
  return d;
}

/* First multiplier, 2^(min(s,128)-1) as a bf16 pair; NaN for s = 0xFF. */
__device__ __forceinline__ unsigned scale_mult1(unsigned s) {
  if (s == 255u) return 0x7FC07FC0u;
  const unsigned bits = (min(s, 128u) + 126u) << 7;
  return bits | bits << 16;
}

/* Second multiplier for 128 < s < 255: 2^(s-128); else 1. */
__device__ __forceinline__ unsigned scale_mult2(unsigned s) {
  if (s <= 128u || s == 255u) return 0x3F803F80u;
  const unsigned bits = (s - 1u) << 7;
  return bits | bits << 16;
}

/* (x[j], x[j+4]) pairs of 8 bf16, to match e2m1_pair<j>. */
__device__ __forceinline__ void regroup_x(uint4 v, unsigned (&p)[4]) {
  p[0] = __byte_perm(v.x, v.z, 0x5410);
  p[1] = __byte_perm(v.x, v.z, 0x7632);
  p[2] = __byte_perm(v.y, v.w, 0x5410);
  p[3] = __byte_perm(v.y, v.w, 0x7632);
}

template <int MT, int WARPS, int T, int U, bool VEC>
__global__ void __launch_bounds__(WARPS * 32)
    w4a16_stream_kernel(const __grid_constant__ w4_args a) {
  constexpr int BU = 4 * U; /* blocks per row per batch */
  constexpr int R = T * MT * 4;
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

  const unsigned char *qp[T][2], *sp[T][2];
#pragma unroll
  for (int t = 0; t < T; t++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const long long row = min(row0 + 16 * t + g + 8 * h, n - 1);
      qp[t][h] = a.wq + row * a.ldq + 16 * c;
      sp[t][h] = a.ws + row * a.lds + c;
    }
  const unsigned short *xp[MT];
#pragma unroll
  for (int mt = 0; mt < MT; mt++) xp[mt] = a.x + (long long)min(8 * mt + g, m - 1) * a.ldx + 32 * c;

  float acc[R];
#pragma unroll
  for (int r = 0; r < R; r++) acc[r] = 0.0f;
  const unsigned long long policy = tgemm_decode::evict_first_policy();

  /* The multiply of one step j: x for the lane's block (32 k, zero past
   * `avail` elements when partial), then 8 MMAs per tile and token group. */
  auto step = [&](const uint4(&v)[T][U][2], const unsigned(&s)[T][U][2], int j,
                  long long blk, long long avail, bool big) {
    uint4 xv[MT][4];
#pragma unroll
    for (int mt = 0; mt < MT; mt++)
#pragma unroll
      for (int w = 0; w < 4; w++) {
        const unsigned short *p = xp[mt] + (blk - c) * 32 + 8 * w;
        xv[mt][w] = (VEC && avail >= 32) ? __ldg(reinterpret_cast<const uint4 *>(p))
                                         : load8_scalar(p, avail - 8 * w);
      }
    unsigned m1[T][2], m2[T][2];
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        m1[t][h] = scale_mult1(s[t][j][h]);
        m2[t][h] = scale_mult2(s[t][j][h]);
      }
#pragma unroll
    for (int w = 0; w < 4; w++) {
      unsigned px[MT][4];
#pragma unroll
      for (int mt = 0; mt < MT; mt++) regroup_x(xv[mt][w], px[mt]);
#pragma unroll
      for (int t = 0; t < T; t++) {
        const unsigned q0 = (&v[t][j][0].x)[w], q1 = (&v[t][j][1].x)[w];
        unsigned r[4][2];
        r[0][0] = e2m1_pair<0>(q0), r[0][1] = e2m1_pair<0>(q1);
        r[1][0] = e2m1_pair<1>(q0), r[1][1] = e2m1_pair<1>(q1);
        r[2][0] = e2m1_pair<2>(q0), r[2][1] = e2m1_pair<2>(q1);
        r[3][0] = e2m1_pair<3>(q0), r[3][1] = e2m1_pair<3>(q1);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int h = 0; h < 2; h++) {
            r[i][h] = mul_bf16x2(r[i][h], m1[t][h]);
            if (big) r[i][h] = mul_bf16x2(r[i][h], m2[t][h]);
          }
#pragma unroll
        for (int mt = 0; mt < MT; mt++) {
          float(&d)[4] = *reinterpret_cast<float(*)[4]>(&acc[(t * MT + mt) * 4]);
          tgemm_decode::mma_bf16(d, r[0][0], r[0][1], r[1][0], r[1][1], px[mt][0], px[mt][1]);
          tgemm_decode::mma_bf16(d, r[2][0], r[2][1], r[3][0], r[3][1], px[mt][2], px[mt][3]);
        }
      }
    }
  };

  auto load_w = [&](uint4(&v)[T][U][2], unsigned(&s)[T][U][2], long long batch) {
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int j = 0; j < U; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const long long blk = batch * BU + 4 * j; /* + c, folded into qp/sp */
          v[t][j][h] = VEC ? tgemm_decode::load_stream16(qp[t][h] + blk * 16, policy)
                           : load16_bytes(qp[t][h] + blk * 16);
          s[t][j][h] = __ldg(sp[t][h] + blk);
        }
  };
  auto compute = [&](const uint4(&v)[T][U][2], const unsigned(&s)[T][U][2], long long batch) {
    bool big = false;
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int j = 0; j < U; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) big |= s[t][j][h] > 128u && s[t][j][h] != 255u;
    /* Scales above 2^1 are rare in real weights: one vote per batch keeps
     * their second multiply off the common path. */
    if (__any_sync(0xffffffffu, big)) {
#pragma unroll
      for (int j = 0; j < U; j++) step(v, s, j, batch * BU + 4 * j + c, 32, true);
    } else {
#pragma unroll
      for (int j = 0; j < U; j++) step(v, s, j, batch * BU + 4 * j + c, 32, false);
    }
  };

  /* Batches whose blocks all lie inside K, double-buffered. */
  const long long full = (k / 32) / BU;
  long long batch = worker;
  uint4 va[T][U][2], vb[T][U][2];
  unsigned sa[T][U][2], sb[T][U][2];
  if (batch < full) load_w(va, sa, batch);
  while (batch < full) {
    if (batch + workers < full) load_w(vb, sb, batch + workers);
    compute(va, sa, batch);
    batch += workers;
    if (batch >= full) break;
    if (batch + workers < full) load_w(va, sa, batch + workers);
    compute(vb, sb, batch);
    batch += workers;
  }
  /* The last, partial batch: blocks past ceil(k/32) are skipped (zero), the
   * block that straddles k reads x with bounds checks (its W padding is
   * zero by the format, and x past k must not be read). */
  if (full * BU < a.k_blocks && worker == (int)(full % workers)) {
#pragma unroll
    for (int j = 0; j < U; j++) {
      const long long blk = full * BU + 4 * j + c;
      const bool valid = blk < a.k_blocks;
#pragma unroll
      for (int t = 0; t < T; t++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
          const long long rel = full * BU + 4 * j;
          va[t][j][h] = !valid ? make_uint4(0, 0, 0, 0)
                        : VEC  ? tgemm_decode::load_stream16(qp[t][h] + rel * 16, policy)
                               : load16_bytes(qp[t][h] + rel * 16);
          sa[t][j][h] = valid ? (unsigned)__ldg(sp[t][h] + rel) : 127u;
        }
    }
    bool big = false;
#pragma unroll
    for (int t = 0; t < T; t++)
#pragma unroll
      for (int j = 0; j < U; j++)
#pragma unroll
        for (int h = 0; h < 2; h++) big |= sa[t][j][h] > 128u && sa[t][j][h] != 255u;
#pragma unroll
    for (int j = 0; j < U; j++) {
      const long long blk = full * BU + 4 * j + c;
      const long long avail = blk < a.k_blocks ? k - blk * 32 : 0;
      step(va, sa, j, blk, avail, big);
    }
  }
  tgemm_decode::reduce_and_store<WARPS, R, MT>(acc, red, split, row0, a.ep);
}

typedef void (*kernel_fn)(w4_args);

/* The instantiated grid; tiles x unroll <= 4 keeps the double buffer,
 * x and the decode in registers (ptxas -v: no spills). */
const int kWarps[] = {4, 8};
const int kTileUnroll[][2] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {4, 1}};
const int kSplit[] = {1, 2, 4, 8};

kernel_fn find_vec_kernel(int mt, int warps, int tiles, int unroll) {
#define TGEMM_W4S_K(MT, W, T, U) \
  if (mt == MT && warps == W && tiles == T && unroll == U) return w4a16_stream_kernel<MT, W, T, U, true>;
#define TGEMM_W4S_T(MT, W)                                                              \
  TGEMM_W4S_K(MT, W, 1, 1) TGEMM_W4S_K(MT, W, 1, 2) TGEMM_W4S_K(MT, W, 2, 1) \
  TGEMM_W4S_K(MT, W, 2, 2) TGEMM_W4S_K(MT, W, 4, 1)
#define TGEMM_W4S_W(MT) TGEMM_W4S_T(MT, 4) TGEMM_W4S_T(MT, 8)
  TGEMM_W4S_W(1)
  TGEMM_W4S_W(2)
#undef TGEMM_W4S_W
#undef TGEMM_W4S_T
#undef TGEMM_W4S_K
  return NULL;
}

const int kSafeWarps = 4, kSafeTiles = 1, kSafeUnroll = 1;
kernel_fn find_safe_kernel(int mt) {
  return mt == 1 ? w4a16_stream_kernel<1, kSafeWarps, kSafeTiles, kSafeUnroll, false>
                 : w4a16_stream_kernel<2, kSafeWarps, kSafeTiles, kSafeUnroll, false>;
}

struct w4_config {
  int warps, tiles, unroll, split;
};

bool config_known(w4_config cfg) {
  bool warps = false, tile_unroll = false, split = false;
  for (int w : kWarps) warps |= w == cfg.warps;
  for (const auto &tu : kTileUnroll) tile_unroll |= tu[0] == cfg.tiles && tu[1] == cfg.unroll;
  for (int sp : kSplit) split |= sp == cfg.split;
  return warps && tile_unroll && split;
}

/* Each worker (warp of the cluster) must get at least one batch. */
bool config_useful(const tgemm__shape *s, w4_config cfg) {
  long long blocks = (s->k + 31) / 32;
  long long batches = (blocks + 4LL * cfg.unroll - 1) / (4LL * cfg.unroll);
  if (cfg.split > 1 && batches < (long long)cfg.split * cfg.warps) return false;
  return true;
}

/* The built-in choice; see the measurements cited in the comment. */
w4_config default_config(const tgemm__shape *s, int sm_count) {
  w4_config cfg = {8, 1, 1, 1};
  long long groups = (s->n + 16LL * cfg.tiles - 1) / (16LL * cfg.tiles);
  while (cfg.split < 8 && groups * cfg.split < 2LL * sm_count) {
    w4_config next = cfg;
    next.split *= 2;
    if (!config_useful(s, next)) break;
    cfg = next;
  }
  return cfg;
}

void fill_kernel(tgemm__kernel *out, w4_config cfg) {
  memset(out, 0, sizeof *out);
  out->route = TGEMM_ROUTE_W4A16;
  snprintf(out->name, sizeof out->name, "w4a16_stream_w%d_t%d_u%d_s%d", cfg.warps, cfg.tiles,
           cfg.unroll, cfg.split);
  out->params[0] = cfg.warps;
  out->params[1] = cfg.tiles;
  out->params[2] = cfg.unroll;
  out->params[3] = cfg.split;
}

bool shape_ok(const tgemm__shape *s) {
  if (!s || s->m < 1 || s->m > TGEMM__W4A16_STREAM_MAX_M || s->n < 1 || s->k < 1) return false;
  if (s->n > INT_MAX / 2) return false;
  if (s->dtype != TGEMM_BF16) return false;
  return s->out_dtype == TGEMM_BF16 || s->out_dtype == TGEMM_F32;
}

}  // namespace

extern "C" int tgemm__w4a16_stream_candidates(const tgemm__shape *shape, int sm_count,
                                              tgemm__kernel *out, int cap) {
  if (!shape_ok(shape) || !out || cap <= 0) return 0;
  if (sm_count <= 0) sm_count = 132;
  w4_config best = default_config(shape, sm_count);
  int count = 0;
  fill_kernel(&out[count++], best);
  for (int w : kWarps)
    for (const auto &tu : kTileUnroll)
      for (int sp : kSplit) {
        if (count >= cap) return count;
        w4_config cfg = {w, tu[0], tu[1], sp};
        if (!memcmp(&cfg, &best, sizeof cfg) || !config_useful(shape, cfg)) continue;
        fill_kernel(&out[count++], cfg);
      }
  return count;
}

extern "C" cudaError_t tgemm__w4a16_stream_run(const tgemm__kernel *kernel,
                                               const tgemm__cuda_gemm_args *args) {
  if (!kernel || !args || kernel->route != TGEMM_ROUTE_W4A16) return cudaErrorInvalidValue;
  if (strncmp(kernel->name, "w4a16_stream_", 13) != 0) return cudaErrorInvalidValue;
  w4_config cfg = {kernel->params[0], kernel->params[1], kernel->params[2], kernel->params[3]};
  if (!config_known(cfg)) return cudaErrorInvalidValue;
  tgemm__shape shape = {args->m, args->n, args->k, args->x_dtype, args->y_dtype,
                        args->bias != NULL};
  if (!shape_ok(&shape) || !args->x || !args->w_packed || !args->w_scales || !args->y)
    return cudaErrorInvalidValue;
  const long long k_blocks = (args->k + 31) / 32;
  if (args->ldx < args->k || args->ldw_packed < k_blocks * 16 ||
      args->ldw_scales < k_blocks || args->ldy < args->n)
    return cudaErrorInvalidValue;
  if (args->bias && args->bias_dtype != TGEMM_BF16 && args->bias_dtype != TGEMM_F32 &&
      args->bias_dtype != TGEMM_F16)
    return cudaErrorInvalidValue;

  const int mt = args->m > 8 ? 2 : 1;
  const bool aligned = ((uintptr_t)args->x % 16 == 0) && ((uintptr_t)args->w_packed % 16 == 0) &&
                       args->ldx % 8 == 0 && args->ldw_packed % 16 == 0;
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

  w4_args a;
  a.x = static_cast<const unsigned short *>(args->x);
  a.ldx = args->ldx;
  a.wq = args->w_packed;
  a.ldq = args->ldw_packed;
  a.ws = args->w_scales;
  a.lds = args->ldw_scales;
  a.k = args->k;
  a.k_blocks = k_blocks;
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
